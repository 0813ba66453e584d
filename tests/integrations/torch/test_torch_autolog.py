"""Autolog for plain PyTorch loops: what is recorded, and the seven behaviours of every integration."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import mltrail  # noqa: E402
from harness import check_fault_tolerance, check_user_exception  # noqa: E402
from mltrail.autolog._wrapping import PatchWrapper  # noqa: E402
from mltrail.integrations import torch as mltrail_torch  # noqa: E402

SLOTS = [
    (torch.autograd, "backward"),
    (torch.nn.utils, "clip_grad_norm_"),
    (torch.nn.utils.clip_grad, "clip_grad_norm_"),
    (torch, "save"),
    (torch.serialization, "save"),
]


def _model() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _data() -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 4, generator=g)
    return x, x.sum(dim=1, keepdim=True)


def train(steps: int = 6, *, clip: float | None = 1.0, accumulate: int = 1) -> dict[str, list[float]]:
    """A user's plain loop; returns what it saw (losses, norms, lrs) for comparison."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = _data()
    seen: dict[str, list[float]] = {"loss": [], "grad_norm": [], "lr": []}
    for _ in range(steps):
        opt.zero_grad()
        total = 0.0
        for chunk in range(accumulate):
            part = slice(chunk * 32 // accumulate, (chunk + 1) * 32 // accumulate)
            loss = torch.nn.functional.mse_loss(model(x[part]), y[part])
            loss.backward()
            total += loss.item()
        seen["loss"].append(total / accumulate)
        if clip is not None:
            seen["grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
        seen["lr"].append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    seen["weights"] = [round(float(p.detach().sum()), 6) for p in model.parameters()]
    return seen


def _history(run_id: str, key: str) -> list[tuple[int, float]]:
    hist = mltrail.Client().get_metric_history(run_id, key)
    return [(int(s), float(v)) for s, v in zip(hist.steps, hist.values, strict=True)]


def _only_run() -> Any:
    runs = mltrail.search_runs(output_format="list")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


# ---------------------------------------------------------------------- pure helpers
def test_optimizer_params_and_lr_metrics_are_plain_dicts() -> None:
    model = _model()
    opt = torch.optim.Adam(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.5}], lr=0.01
    )
    params = mltrail_torch.optimizer_params(opt)
    assert params["optimizer/name"] == "Adam"
    assert params["optimizer/lr"] == 0.01
    assert params["optimizer/betas"] == (0.9, 0.999)
    assert params["optimizer/param_groups"] == 2
    assert params["optimizer/num_params"] == 4 * 8 + 8 + 8 + 1
    assert not any(k.endswith(("/foreach", "/fused", "/capturable", "/differentiable")) for k in params)
    assert mltrail_torch.optimizer_params(opt, 1)["optimizer_1/name"] == "Adam"
    assert mltrail_torch.lr_metrics(opt) == {"lr": 0.01, "lr/group_1": 0.5}
    assert mltrail_torch.lr_metrics(opt, 2) == {"optimizer_2/lr": 0.01, "optimizer_2/lr/group_1": 0.5}


def test_param_counts_and_summary() -> None:
    model = _model()
    model[0].weight.requires_grad_(False)
    assert mltrail_torch.param_counts(model) == {"total_params": 49, "trainable_params": 17}
    text = mltrail_torch.model_summary_text(model)
    assert "Linear" in text and "ReLU" in text
    assert "Total params: 49" in text and "Trainable params: 17" in text


def test_dataset_fingerprint_of_tensor_and_generic_datasets() -> None:
    x, y = _data()
    ds = torch.utils.data.TensorDataset(x, y)
    fp = mltrail_torch.dataset_fingerprint(ds, name="train")
    assert fp.name == "train" and fp.source_type == "torch"
    assert json.loads(fp.profile)["num_rows"] == 32
    assert mltrail_torch.dataset_fingerprint(torch.utils.data.TensorDataset(x, y)).digest == fp.digest
    assert mltrail_torch.dataset_fingerprint(torch.utils.data.TensorDataset(x + 1, y)).digest != fp.digest
    sub = mltrail_torch.dataset_fingerprint(torch.utils.data.Subset(ds, [0, 1, 2]))
    assert json.loads(sub.source)["base_digest"] == fp.digest


# ---------------------------------------------------------------------- what is logged
def test_plain_loop_records_params_lr_loss_and_grad_norm(sqlite_uri: str) -> None:
    mltrail_torch.autolog(log_every_n_steps=2)
    seen = train(steps=6)
    run = _only_run()
    assert run.data.tags["mltrail.autolog"] == "torch"
    params = run.data.params
    assert params["optimizer/name"] == "SGD"
    assert params["optimizer/lr"] == "0.05"
    assert params["optimizer/momentum"] == "0.9"
    assert params["optimizer/num_params"] == "49"
    rid = run.info.run_id
    # logged at optimizer steps 2, 4, 6: the values of the 2nd, 4th and 6th iterations
    assert _history(rid, "loss") == [(s, pytest.approx(seen["loss"][s - 1])) for s in (2, 4, 6)]
    assert _history(rid, "grad_norm") == [(s, pytest.approx(seen["grad_norm"][s - 1])) for s in (2, 4, 6)]
    # lr is read after the step, before the scheduler's step: the lr the next step starts from
    assert [v for _, v in _history(rid, "lr")] == pytest.approx([0.05, 0.025, 0.0125])


def test_loss_is_the_mean_of_the_backward_calls_feeding_a_step(sqlite_uri: str) -> None:
    mltrail_torch.autolog(log_every_n_steps=1)
    seen = train(steps=3, clip=None, accumulate=2)
    rid = _only_run().info.run_id
    assert [v for _, v in _history(rid, "loss")] == pytest.approx(seen["loss"])
    assert _history(rid, "grad_norm") == []


def test_non_scalar_backward_and_second_optimizer(sqlite_uri: str) -> None:
    mltrail_torch.autolog(log_every_n_steps=1)
    gen, disc = _model(), _model()
    opt_g = torch.optim.SGD(gen.parameters(), lr=0.1)
    opt_d = torch.optim.Adam(disc.parameters(), lr=0.2)
    x, _ = _data()
    for _ in range(2):
        d_loss = disc(x).mean()
        d_loss.backward()
        opt_d.step()
        out = gen(x)
        out.backward(torch.ones_like(out))  # not a scalar loss: not logged
        opt_g.step()
    run = _only_run()
    assert run.data.params["optimizer/name"] == "Adam"  # the first to step is optimizer 0
    assert run.data.params["optimizer_1/name"] == "SGD"
    rid = run.info.run_id
    assert len(_history(rid, "loss")) == 2
    assert _history(rid, "optimizer_1/loss") == []
    assert [v for _, v in _history(rid, "optimizer_1/lr")] == [0.1, 0.1]


def test_logs_into_the_users_active_run(sqlite_uri: str) -> None:
    mltrail_torch.autolog(log_every_n_steps=3)
    with mltrail.start_run() as run:
        train(steps=3)
    assert _only_run().info.run_id == run.info.run_id
    assert len(_history(run.info.run_id, "loss")) == 1
    assert mltrail.get_run(run.info.run_id).info.status == "FINISHED"


def test_exclusive_leaves_the_users_run_alone(sqlite_uri: str) -> None:
    mltrail_torch.autolog(log_every_n_steps=1, exclusive=True)
    with mltrail.start_run() as run:
        train(steps=2)
    assert mltrail.get_run(run.info.run_id).data.metrics == {}


def test_torch_save_checkpoints_are_logged_when_asked(sqlite_uri: str, tmp_path: Any) -> None:
    mltrail_torch.autolog(log_checkpoints=True, reference_checkpoints_over=10_000)
    model = _model()
    train(steps=1)
    small = tmp_path / "epoch=3-val_loss=0.21.pt"
    torch.save(model.state_dict(), small)
    big = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(5_000)}, str(big))
    torch.save(model.state_dict(), tmp_path / "copy.bin", _use_new_zipfile_serialization=True)
    import io

    torch.save(model.state_dict(), io.BytesIO())  # not a file: nothing to log
    mltrail_torch.wait_io()
    rid = _only_run().info.run_id
    client = mltrail.Client()
    names = sorted(f.path for f in client.list_artifacts(rid, "checkpoints"))
    assert names == ["checkpoints/big.pt.ref.json", "checkpoints/copy.bin", "checkpoints/epoch=3-val_loss=0.21.pt"]
    local = client.download_artifacts(rid, "checkpoints/epoch=3-val_loss=0.21.pt", str(tmp_path / "dl"))
    with open(local, "rb") as fh:
        assert fh.read() == small.read_bytes()
    ref_path = client.download_artifacts(rid, "checkpoints/big.pt.ref.json", str(tmp_path / "dl"))
    with open(ref_path) as fh:
        ref = json.load(fh)
    assert ref["path"] == str(big) and ref["size"] == big.stat().st_size
    assert ref["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()


def test_torch_save_is_not_logged_by_default(sqlite_uri: str, tmp_path: Any) -> None:
    mltrail_torch.autolog()
    train(steps=1)
    torch.save(_model().state_dict(), tmp_path / "m.pt")
    mltrail_torch.wait_io()
    assert mltrail.Client().list_artifacts(_only_run().info.run_id, "checkpoints") == []


# ---------------------------------------------------------------------- the seven behaviours
def test_injected_failures_do_not_stop_training_and_warn_once(sqlite_uri: str, tmp_path: Any) -> None:
    mltrail_torch.autolog(log_every_n_steps=1, log_checkpoints=True)

    def run() -> list[float]:
        seen = train(steps=3)
        torch.save({"w": torch.ones(2)}, tmp_path / "ckpt.pt")
        return seen["weights"] + seen["loss"]

    points = check_fault_tolerance(run, integration="torch")
    assert {"pre", "post", "optimizer_step"} <= set(points)


def test_user_exceptions_propagate_unchanged(sqlite_uri: str, tmp_path: Any) -> None:
    mltrail_torch.autolog(log_every_n_steps=1, log_checkpoints=True)
    model = _model()
    x, _ = _data()

    def in_backward(boom: Any) -> None:
        out = model(x).mean()
        out.register_hook(lambda grad: boom())
        out.backward()

    def in_clip(boom: Any) -> None:
        def params() -> Any:
            boom()
            yield from model.parameters()

        torch.nn.utils.clip_grad_norm_(params(), 1.0)

    class Unpicklable:
        def __init__(self, boom: Any) -> None:
            self.boom = boom

        def __reduce__(self) -> Any:
            self.boom()

    def in_save(boom: Any) -> None:
        torch.save({"x": Unpicklable(boom)}, tmp_path / "x.pt")

    for call in (in_backward, in_clip, in_save):
        check_user_exception(call)


def test_unhandled_exception_ends_the_loops_run_failed_and_exit_finished(tmp_path: Any) -> None:
    script = textwrap.dedent(
        f"""
        import sys, torch, mltrail
        mltrail.set_tracking_uri({str(tmp_path / "store")!r})
        mltrail.autolog()
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(10):
            opt.zero_grad()
            model(torch.ones(4, 3)).pow(2).mean().backward()
            opt.step()
        if sys.argv[1] == "fail":
            raise RuntimeError("the user's loop crashed")
        """
    )
    script_ok, script_fail = (tmp_path / "ok", tmp_path / "fail")
    procs = {}
    for mode, folder in (("ok", script_ok), ("fail", script_fail)):
        folder.mkdir()
        (folder / "loop.py").write_text(script.replace(repr(str(tmp_path / "store")), repr(str(folder / "store"))))
        procs[mode] = subprocess.Popen(  # both at once: each spends most of its time importing torch
            [sys.executable, str(folder / "loop.py"), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
    statuses = {}
    for mode, proc in procs.items():
        _, err = proc.communicate(timeout=180)
        assert (proc.returncode == 0) == (mode == "ok"), err
        mltrail.set_tracking_uri(str(tmp_path / mode / "store"))
        [run] = mltrail.search_runs(output_format="list")
        statuses[mode] = run.info.status
        assert len(_history(run.info.run_id, "loss")) == 1  # default: every 10 steps
    assert statuses == {"ok": "FINISHED", "fail": "FAILED"}


def test_disable_restores_the_originals_and_removes_the_step_hook(sqlite_uri: str) -> None:
    from torch.optim import optimizer as optim_mod

    originals = {(owner, attr): vars(owner)[attr] for owner, attr in SLOTS}
    mltrail_torch.autolog(log_every_n_steps=1)
    for owner, attr in SLOTS:
        assert isinstance(vars(owner)[attr], PatchWrapper), (owner, attr)
    train(steps=1)
    assert mltrail_torch._on_optimizer_step in optim_mod._global_optimizer_post_hooks.values()
    mltrail_torch.autolog(disable=True)
    for owner, attr in SLOTS:
        assert vars(owner)[attr] is originals[(owner, attr)], (owner, attr)
    assert mltrail_torch._on_optimizer_step not in optim_mod._global_optimizer_post_hooks.values()
    # turned off through the package-wide switch: the hook leaves at the next step
    mltrail.autolog()
    train(steps=1)
    mltrail.autolog(disable=True)
    train(steps=1)
    assert mltrail_torch._on_optimizer_step not in optim_mod._global_optimizer_post_hooks.values()
    for owner, attr in SLOTS:
        assert vars(owner)[attr] is originals[(owner, attr)], (owner, attr)


def test_autolog_twice_leaves_one_wrapper_and_one_hook(sqlite_uri: str) -> None:
    from torch.optim import optimizer as optim_mod

    mltrail_torch.autolog(log_every_n_steps=1)
    mltrail_torch.autolog(log_every_n_steps=1)
    mltrail.autolog(log_every_n_steps=1)
    for owner, attr in SLOTS:
        slot = vars(owner)[attr]
        assert isinstance(slot, PatchWrapper) and not isinstance(slot.__wrapped__, PatchWrapper)
    train(steps=2)
    hooks = [h for h in optim_mod._global_optimizer_post_hooks.values() if h is mltrail_torch._on_optimizer_step]
    assert len(hooks) == 1
    assert len(_history(_only_run().info.run_id, "loss")) == 2


@pytest.mark.parametrize("order", ["autolog_first", "torch_first"])
def test_both_import_orders(tmp_path: Any, order: str) -> None:
    first, second = ("import mltrail; mltrail.autolog()", "import torch") if order == "autolog_first" else (
        "import torch", "import mltrail; mltrail.autolog()"
    )
    script = textwrap.dedent(
        f"""
        {first}
        {second}
        import mltrail
        mltrail.set_tracking_uri({str(tmp_path / "store")!r})
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        for step in range(20):
            opt.zero_grad()
            model(torch.ones(4, 3)).pow(2).mean().backward()
            opt.step()
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    mltrail.set_tracking_uri(str(tmp_path / "store"))
    run = _only_run()
    assert run.data.params["optimizer/name"] == "Adam"
    assert [s for s, _ in _history(run.info.run_id, "loss")] == [10, 20]


def test_nothing_is_logged_twice_inside_another_integrations_call(sqlite_uri: str) -> None:
    """A patched call of another integration owns the loop: the torch hooks stand aside."""
    from mltrail.autolog.call import CURRENT

    mltrail_torch.autolog(log_every_n_steps=1)
    token = CURRENT.set(object())  # as inside Lightning's patched Trainer.fit
    try:
        train(steps=2)
    finally:
        CURRENT.reset(token)
    assert mltrail.search_runs(output_format="list") == []
    mltrail_torch.suspend()
    try:
        train(steps=2)
    finally:
        mltrail_torch.resume()
    assert mltrail.search_runs(output_format="list") == []



# ---------------------------------------------------------------------- device scalars
class _FakeEvent:
    def __init__(self) -> None:
        self.done = False
        self.synchronized = False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.synchronized = self.done = True


def test_device_values_are_logged_once_their_copy_completes(
    sqlite_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CUDA path without a GPU: a value waits for its copy, never blocks the step."""
    events: list[_FakeEvent] = []

    def fake_copy(tensors: list[Any]) -> tuple[Any, Any]:
        events.append(_FakeEvent())
        return torch.stack([t.reshape(()) for t in tensors]), events[-1]

    deferred = mltrail_torch._Deferred()
    monkeypatch.setattr(deferred, "waits", lambda value: hasattr(value, "device"))
    monkeypatch.setattr(deferred, "copy", fake_copy)
    with mltrail.start_run() as run:
        buffer = run._buffer
        deferred.add(buffer, 1, {"loss": torch.tensor(0.5), "lr": 0.1})
        deferred.add(buffer, 2, {"loss": torch.tensor(0.25), "lr": 0.1})
        assert len(deferred.items) == 2  # neither copy has completed
        events[0].done = True
        deferred.add(buffer, 3, {"loss": torch.tensor(0.125), "lr": 0.1})
        assert len(deferred.items) == 2  # step 1 read; steps 2 and 3 wait
        deferred.poll(block=True)
        assert not deferred.items and events[2].synchronized
    assert _history(run.info.run_id, "loss") == [(1, 0.5), (2, 0.25), (3, 0.125)]
    assert [s for s, _ in _history(run.info.run_id, "lr")] == [1, 2, 3]


@pytest.mark.gpu
def test_cuda_loop_logs_without_synchronising(sqlite_uri: str) -> None:
    """On a GPU: with sync debug mode "error", any device synchronisation of ours would raise."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run on the device machine)")
    mltrail_torch.autolog(log_every_n_steps=1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(64, 32, device="cuda")
    y = x.sum(1, keepdim=True)
    losses = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(20):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.detach())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    mltrail_torch._deferred.poll(block=True)
    rid = _only_run().info.run_id
    assert [v for _, v in _history(rid, "loss")] == pytest.approx([float(v) for v in losses])
    assert len(_history(rid, "grad_norm")) == 20
