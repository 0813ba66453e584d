"""``log_metrics`` with the same keys at every step is buffered as one row per call.

What a user checks is only what lands in the store: every key's history, in the order it was
logged, with its steps, values and timestamps, however ``log_metric`` and ``log_metrics`` calls
with overlapping keys are mixed, and whether or not the writer drains in between.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import mltrail
from mltrail import Client
from mltrail.core.errors import InvalidValueError


def history(run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in Client().get_metric_history(run_id, key)]


@pytest.fixture(params=["one drain", "drain between calls"])
def drain(request: pytest.FixtureRequest) -> bool:
    return request.param == "drain between calls"


def test_same_keys_every_step_record_every_point(sqlite_uri: str) -> None:
    before = time.time_ns() // 1_000_000
    with mltrail.start_run() as run:
        for step in range(1000):
            mltrail.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 1000}, step=step)
    after = time.time_ns() // 1_000_000
    loss = Client().get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in loss] == list(range(1000))
    assert [m.value for m in loss] == [1.0 / (s + 1) for s in range(1000)]
    assert all(before <= m.timestamp <= after for m in loss)
    assert history(run.info.run_id, "acc") == [(s, s / 1000) for s in range(1000)]
    data = mltrail.get_run(run.info.run_id).data
    assert data.metrics == {"loss": 1.0 / 1000, "acc": 0.999}


def test_mixing_log_metric_and_log_metrics_keeps_each_keys_order(sqlite_uri: str, drain: bool) -> None:
    expected: dict[str, list[tuple[int, float]]] = {"loss": [], "acc": [], "lr": []}

    def both(step: int) -> None:
        mltrail.log_metrics({"loss": float(step), "acc": step + 0.5}, step=step)
        expected["loss"].append((step, float(step)))
        expected["acc"].append((step, step + 0.5))

    with mltrail.start_run() as run:
        for step in range(0, 10):
            both(step)
        if drain:
            mltrail.flush()
        for step in range(10, 20):  # the same key alone: the rows' key set gives way
            mltrail.log_metric("loss", -float(step), step=step)
            expected["loss"].append((step, -float(step)))
        if drain:
            mltrail.flush()
        for step in range(20, 30):
            both(step)
            mltrail.log_metrics({"lr": 0.1 * step, "acc": -1.0}, step=step)  # overlapping keys
            expected["lr"].append((step, 0.1 * step))
            expected["acc"].append((step, -1.0))
    for key, points in expected.items():
        assert history(run.info.run_id, key) == points, key


def test_new_key_sets_after_an_old_one_gave_way_keep_order(sqlite_uri: str, drain: bool) -> None:
    with mltrail.start_run() as run:
        mltrail.log_metrics({"a": 1.0, "b": 1.0}, step=1)
        mltrail.log_metrics({"b": 2.0, "c": 2.0}, step=2)  # {a, b} gives way
        if drain:
            mltrail.flush()
        mltrail.log_metrics({"a": 3.0}, step=3)  # a key set of its own again
        mltrail.log_metrics({"a": 4.0}, step=4)
        mltrail.log_metrics({"a": 5.0, "b": 5.0}, step=5)
    assert history(run.info.run_id, "a") == [(1, 1.0), (3, 3.0), (4, 4.0), (5, 5.0)]
    assert history(run.info.run_id, "b") == [(1, 1.0), (2, 2.0), (5, 5.0)]
    assert history(run.info.run_id, "c") == [(2, 2.0)]


def test_values_of_other_numeric_types_are_converted(sqlite_uri: str) -> None:
    with mltrail.start_run() as run:
        for step in range(3):
            mltrail.log_metrics(
                {"f": 0.25, "i": step, "np32": np.float32(0.5), "np64": np.float64(step), "nan": float("nan")},
                step=step,
            )
    run_id = run.info.run_id
    assert history(run_id, "i") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert history(run_id, "np32") == [(0, 0.5), (1, 0.5), (2, 0.5)]
    assert history(run_id, "np64") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert all(np.isnan(v) for _, v in history(run_id, "nan"))


@pytest.mark.parametrize(
    "bad",
    [{"a": 2.0, "b": "high"}, {"a": 2.0, "b": None}, {"a": 2.0, "b": True}, {"a": 2.0, "b": [1.0]}],
    ids=["str", "None", "bool", "list"],
)
def test_a_bad_value_in_a_known_key_set_logs_nothing_of_that_call(sqlite_uri: str, bad: dict) -> None:
    with mltrail.start_run() as run:
        mltrail.log_metrics({"a": 1.0, "b": 1.0}, step=0)
        with pytest.raises(InvalidValueError, match="metric 'b'"):
            mltrail.log_metrics(bad, step=1)
        mltrail.log_metrics({"a": 3.0, "b": 3.0}, step=2)
    assert history(run.info.run_id, "a") == [(0, 1.0), (2, 3.0)]
    assert history(run.info.run_id, "b") == [(0, 1.0), (2, 3.0)]


@pytest.mark.parametrize("bad_step", [1.5, "3", 2**63, True], ids=["float", "str", "too-big", "bool"])
def test_a_bad_step_in_a_known_key_set_is_refused(sqlite_uri: str, bad_step: object) -> None:
    with mltrail.start_run() as run:
        mltrail.log_metrics({"a": 1.0}, step=0)
        with pytest.raises(InvalidValueError, match="step"):
            mltrail.log_metrics({"a": 2.0}, step=bad_step)  # type: ignore[arg-type]
    assert history(run.info.run_id, "a") == [(0, 1.0)]


def test_steps_and_timestamps_beyond_float_precision_are_exact(sqlite_uri: str) -> None:
    big = 2**53 + 1
    with mltrail.start_run() as run:
        mltrail.log_metrics({"a": 1.0, "b": 1.0}, step=big, timestamp=big + 2)
        mltrail.log_metrics({"a": 2.0, "b": 2.0}, step=5, timestamp=7)
        mltrail.log_metric("c", 3.0, step=-big, timestamp=big)
        mltrail.log_metric("c", 4.0, step=6)
    a = Client().get_metric_history(run.info.run_id, "a")
    assert [(m.step, m.timestamp) for m in a] == [(big, big + 2), (5, 7)]
    c = Client().get_metric_history(run.info.run_id, "c")
    assert (c[0].step, c[0].timestamp, c[0].value) == (-big, big, 3.0)
    assert c[1].step == 6 and c[1].value == 4.0


def test_many_rows_drained_in_slices_arrive_whole(sqlite_uri: str) -> None:
    keys = [f"m{j:03d}" for j in range(100)]
    with mltrail.start_run() as run:
        for step in range(5000):  # 500,000 points: several slices per drain
            mltrail.log_metrics(dict.fromkeys(keys, step * 0.5), step=step)
    for key in (keys[0], keys[57], keys[-1]):
        hist = Client().get_metric_history(run.info.run_id, key)
        assert len(hist) == 5000
        assert np.array_equal(hist.steps, np.arange(5000))
        assert np.array_equal(hist.values, np.arange(5000) * 0.5)


def test_a_loop_faster_than_the_writer_is_slowed_not_dropped(
    sqlite_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the throttle mark the loop yields to the writer on every call; nothing is lost."""
    from mltrail.core import writer as writer_module

    monkeypatch.setattr(writer_module, "_THROTTLE_AT", 1000)
    monkeypatch.setattr(writer_module, "_DRAIN_AT", 500)
    with mltrail.start_run() as run:
        for step in range(100_000):
            mltrail.log_metric("loss", step * 0.5, step=step)
            mltrail.log_metrics({"a": 1.0, "b": float(step)}, step=step)
    hist = Client().get_metric_history(run.info.run_id, "loss")
    assert np.array_equal(hist.steps, np.arange(100_000))
    assert np.array_equal(hist.values, np.arange(100_000) * 0.5)
    assert len(Client().get_metric_history(run.info.run_id, "b")) == 100_000
    assert "mltrail.dropped_points" not in Client().get_run(run.info.run_id).data.tags
