"""``mltrail.torch.watch``: per-parameter norms as metrics, histograms as JSON artifacts."""

from __future__ import annotations

import json
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import mltrail  # noqa: E402
from mltrail.core.errors import InvalidValueError  # noqa: E402
from mltrail.integrations import torch as mltrail_torch  # noqa: E402


def _setup() -> tuple[Any, Any, Any, Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 3)
    return model, opt, x, x.sum(1, keepdim=True)


def _step(model: Any, opt: Any, x: Any, y: Any) -> None:
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def test_watch_logs_norms_and_histograms_every_log_freq_steps(sqlite_uri: str, tmp_path: Any) -> None:
    model, opt, x, y = _setup()
    handle = mltrail.torch.watch(model, log="all", log_freq=2, bins=8)
    expected: dict[int, dict[str, float]] = {}
    for step in range(1, 5):
        _step(model, opt, x, y)
        if step % 2 == 0:
            expected[step] = {
                **{f"gradients/{n}/norm": float(p.grad.norm()) for n, p in model.named_parameters()},
                **{f"parameters/{n}/norm": float(p.detach().norm()) for n, p in model.named_parameters()},
            }
    handle.remove()
    _step(model, opt, x, y)
    _step(model, opt, x, y)  # step 6: not watched any more
    mltrail_torch.wait_io()
    run = mltrail.active_run()
    assert run is not None
    rid = run.info.run_id
    client = mltrail.Client()
    for key in expected[2]:
        hist = client.get_metric_history(rid, key)
        assert list(hist.steps) == [2, 4]
        assert list(hist.values) == pytest.approx([expected[2][key], expected[4][key]], rel=1e-5)
    params = mltrail.get_run(rid).data.params
    assert params["model/total_params"] == "21" and params["model/trainable_params"] == "21"
    files = sorted(f.path for f in client.list_artifacts(rid, "watch"))
    assert files == ["watch/step_2.json", "watch/step_4.json"]
    with open(client.download_artifacts(rid, "watch/step_4.json", str(tmp_path))) as fh:
        doc = json.load(fh)
    assert doc["step"] == 4 and doc["bins"] == 8
    weight = model[0].weight.detach()
    entry = doc["parameters"]["0.weight"]
    assert sum(entry["counts"]) == weight.numel() and len(entry["counts"]) == 8
    assert entry["nonfinite"] == 0
    assert set(doc["gradients"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_watch_counts_non_finite_values_and_only_watched_models(sqlite_uri: str) -> None:
    model, *_ = _setup()
    other = torch.nn.Linear(2, 2)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1)
    handle = mltrail.torch.watch(model, log="parameters", log_freq=1)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    other(torch.ones(1, 2)).sum().backward()
    other_opt.step()  # another model's optimizer: not counted
    assert handle.steps == 0
    stats = mltrail_torch.tensor_stats(model, ["parameters"], bins=4)
    assert stats["parameters"]["0.weight"]["nonfinite"] == 1
    assert sum(stats["parameters"]["0.weight"]["counts"]) == 12
    handle.remove()


def test_watch_rejects_bad_arguments() -> None:
    model, *_ = _setup()
    with pytest.raises(InvalidValueError, match="log"):
        mltrail.torch.watch(model, log="weights")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="log_freq"):
        mltrail.torch.watch(model, log_freq=0)
    with pytest.raises(InvalidValueError, match="Module"):
        mltrail.torch.watch(object())
