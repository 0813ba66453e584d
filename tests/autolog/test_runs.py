"""Run ownership, the nesting guard (invariant 3) and what ends up in the store."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import toyfw

import mltrail
from mltrail.autolog import NO_RUN, AutologConfig, enable, owned_run
from mltrail.core.entities import Run


def _runs() -> list[Run]:
    mltrail.flush()
    runs = mltrail.search_runs(output_format="list")
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def test_a_call_with_no_active_run_starts_a_run_and_finishes_it(toy: Any, sqlite_uri: str) -> None:
    enable("toy", AutologConfig(extra_tags={"team": "ml"}))
    assert toyfw.train([1.0, 2.0], epochs=2) == 2.25
    assert mltrail.active_run() is None
    [run] = _runs()
    assert run.info.status == "FINISHED"
    assert run.data.params == {"epochs": "2"}
    assert run.data.metrics == {"loss": 0.75, "result": 2.25}
    assert run.data.tags["mltrail.autolog"] == "toy"
    assert run.data.tags["team"] == "ml"
    history = mltrail.Client().get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.5), (1, 0.75)]


def test_a_call_that_raises_ends_its_run_failed_and_the_exception_is_the_users(
    toy: Any, sqlite_uri: str
) -> None:
    enable("toy")
    error = RuntimeError("diverged")

    def hook() -> None:
        raise error

    with pytest.raises(RuntimeError) as info:
        toyfw.Estimator(hook=hook).fit([1])
    assert info.value is error
    assert mltrail.active_run() is None
    [run] = _runs()
    assert run.info.status == "FAILED"
    assert run.data.params == {"estimator": "Estimator", "scale": "1.0"}


def test_ctrl_c_ends_the_run_killed(toy: Any, sqlite_uri: str) -> None:
    enable("toy")

    def hook() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        toyfw.Estimator(hook=hook).fit([1])
    assert [r.info.status for r in _runs()] == ["KILLED"]


def test_inside_an_active_run_the_call_logs_there(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    with mltrail.start_run() as run:
        toyfw.Estimator(2.0).fit([1, 2])
        assert mltrail.active_run() is run
    [stored] = _runs()
    assert stored.info.run_id == run.info.run_id
    assert stored.data.params == {"estimator": "Estimator", "scale": "2.0"}
    assert "mltrail.autolog" not in stored.data.tags


def test_a_second_fit_in_one_user_run_goes_to_a_child_run(toy: Any, sqlite_uri: str) -> None:
    enable("toy")  # Estimator.fit has child="if_used"
    with mltrail.start_run() as parent:
        toyfw.Estimator(1.0).fit([1])
        toyfw.Estimator(2.0).fit([1])
    runs = {r.info.run_id: r for r in _runs()}
    assert runs[parent.info.run_id].data.params["scale"] == "1.0"
    [child] = [r for r in runs.values() if r.info.run_id != parent.info.run_id]
    assert child.data.params["scale"] == "2.0"
    assert child.data.tags["mltrail.parentRunId"] == parent.info.run_id
    assert child.info.status == "FINISHED"


def test_exclusive_never_logs_into_the_users_run(toy: Any, sqlite_uri: str) -> None:
    enable("toy", AutologConfig(exclusive=True))
    with mltrail.start_run() as run:
        toyfw.Estimator().fit([1])
    toyfw.Estimator().fit([1])  # no active run: autolog's own run
    user, own = _runs()
    assert user.info.run_id == run.info.run_id and user.data.params == {}
    assert own.data.params == {"estimator": "Estimator", "scale": "1.0"}


def test_nested_patched_calls_are_logged_once_by_the_outermost(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    ensemble = toyfw.Ensemble([toyfw.Linear(2.0), toyfw.Estimator(3.0)])
    ensemble.fit([1, 2])
    [run] = _runs()
    assert run.data.params == {"estimator": "Ensemble", "scale": "1.0"}
    assert run.data.metrics == {"coef": 21.0}
    assert toy.SEEN == [("fit", "Ensemble")]


def test_the_guard_spans_integrations(toy: Any, sqlite_uri: str) -> None:
    import argparse

    mltrail.autolog()
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)

    def hook() -> None:
        parser.parse_args([])  # argparse inside toy's fit: part of the fit, not logged

    enable("toy")
    toyfw.Estimator(hook=hook).fit([1])
    [run] = _runs()
    assert run.data.params == {"estimator": "Estimator", "scale": "1.0"}


def test_after_the_user_ends_the_run_nothing_logs_into_it(toy: Any, sqlite_uri: str) -> None:
    from mltrail.autolog import current_call

    enable("toy")
    handles = []

    class Spy:  # keeps the handle a callback of ours would hold
        def on_epoch(self, epoch: int, loss: float) -> None:
            handles.append(current_call().run)  # type: ignore[union-attr]

    with mltrail.start_run() as run:
        toyfw.train([1.0], epochs=1, callbacks=[Spy()])
    handle = handles[0]
    assert not handle and not handle.live
    handle.log_params({"late": 1})
    handle.log_metrics({"late": 1.0})
    toyfw.train([3.0], epochs=1)  # a new call: a new run, not the ended one
    user_run, new_run = _runs()
    assert user_run.info.run_id == run.info.run_id
    assert "late" not in user_run.data.params and "late" not in user_run.data.metrics
    assert user_run.data.metrics["result"] == 1.0
    assert new_run.data.metrics["result"] == 3.0 and new_run.info.status == "FINISHED"


def test_the_user_ending_the_run_mid_call_stops_our_logging(toy: Any, sqlite_uri: str) -> None:
    enable("toy")

    class Ender:
        def on_epoch(self, epoch: int, loss: float) -> None:
            if epoch == 0:
                mltrail.end_run()

    toyfw.train([1.0], epochs=3, callbacks=[Ender()])
    [run] = _runs()
    assert run.info.status == "FINISHED"
    history = mltrail.Client().get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == []  # Ender runs before our callback: nothing got in
    assert "result" not in run.data.metrics


def test_a_worker_thread_of_a_patched_call_is_part_of_it(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    results = []

    def fit_member() -> None:
        results.append(toyfw.Estimator(5.0).fit([1]).coef_)

    def hook() -> None:
        worker = threading.Thread(target=fit_member)
        worker.start()
        worker.join()

    toyfw.Estimator(hook=hook).fit([1])
    assert results == [5.0]
    [run] = _runs()
    assert run.data.params == {"estimator": "Estimator", "scale": "1.0"}


def test_independent_threads_each_own_a_run(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    barrier = threading.Barrier(2)

    def fit(scale: float) -> None:
        def hook() -> None:
            barrier.wait(timeout=5)

        toyfw.Estimator(scale, hook=hook).fit([1])

    threads = [threading.Thread(target=fit, args=(s,)) for s in (1.0, 2.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    scales = sorted(r.data.params["scale"] for r in _runs())
    assert scales == ["1.0", "2.0"]
    assert all(r.info.status == "FINISHED" for r in _runs())


def test_a_call_skipped_beside_a_busy_run_raises_the_users_exception(toy: Any, sqlite_uri: str) -> None:
    # A second thread's fit into a run that another fit is logging to is not logged (skipped);
    # when that fit raises, the user gets their exception, and no training call stays counted.
    from mltrail.core.writer import training_calls

    enable("toy")
    inside, release = threading.Event(), threading.Event()
    error = ValueError("bad data")

    def busy_hook() -> None:
        inside.set()
        release.wait(timeout=10)

    def failing_hook() -> None:
        raise error

    with mltrail.start_run() as run:
        worker = threading.Thread(target=lambda: toyfw.Estimator(1.0, hook=busy_hook).fit([1]))
        worker.start()
        assert inside.wait(timeout=10)
        try:
            with pytest.raises(ValueError) as info:
                toyfw.Estimator(2.0, hook=failing_hook).fit([1])
        finally:
            release.set()
            worker.join(timeout=10)
    assert info.value is error
    assert training_calls.running == 0
    [stored] = _runs()
    assert stored.info.run_id == run.info.run_id
    assert stored.data.params["scale"] == "1.0"


def test_a_fits_run_is_written_and_its_environment_captured_after_the_fit(
    toy: Any, sqlite_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing of ours wakes up inside a short fit: the run's row and its environment capture
    # wait for the fit to return (a long fit gets them after a second: run_overdue).
    from mltrail.core import fluent, writer

    enable("toy")
    seen: dict[str, Any] = {}
    store = mltrail.Client().store

    def hook() -> None:
        run_id = mltrail.active_run().info.run_id
        seen["inside"] = (store.search_runs(["0"], "", 1, 10, None, None).items, list(fluent._env_held))
        monkeypatch.setattr(writer, "_DEFER_LIMIT", 0.0)  # as if the fit had run for a while
        writer.training_calls.run_overdue()
        writer.get_writer().flush()
        seen["overdue"] = ([r.info.run_id for r in store.search_runs(["0"], "", 1, 10, None, None).items],
                           list(fluent._env_held), run_id)

    toyfw.Estimator(hook=hook).fit([1])
    rows, held = seen["inside"]
    assert rows == [] and len(held) == 1
    written, held_after, run_id = seen["overdue"]
    assert written == [run_id] and held_after == []
    mltrail.flush()
    fluent._join_environment_threads()
    run = mltrail.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.python_version"]  # the fast capture, at the start
    # the slow capture, after the fit (pytest's own script is the entry point here)
    assert "environment/entry_point" in [f.path for f in mltrail.Client().list_artifacts(run_id, "environment")]


def test_owned_run_helper(toy: Any, sqlite_uri: str) -> None:
    enable("toy", AutologConfig(extra_tags={"source": "helper"}))
    with owned_run("toy") as run:
        run.log_params({"a": 1})
        toyfw.Estimator().fit([1])  # nested: not logged separately
    with pytest.raises(ValueError), owned_run("toy") as failing:
        failing.log_metrics({"m": 1.0}, step=3)
        raise ValueError("inside")
    finished, failed = _runs()
    assert (finished.info.status, finished.data.params) == ("FINISHED", {"a": "1"})
    assert finished.data.tags["source"] == "helper"
    assert (failed.info.status, failed.data.metrics) == ("FAILED", {"m": 1.0})
    with mltrail.start_run() as user_run, owned_run("toy", mode="active") as handle:
        assert handle.run_id == user_run.info.run_id and not handle.owned
    with owned_run("toy", mode="active") as nothing:
        assert nothing is NO_RUN


def test_other_ranks_of_a_distributed_job_log_nothing(
    toy: Any, sqlite_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    enable("toy")
    monkeypatch.setenv("RANK", "1")
    assert toyfw.train([1.0], epochs=1) == 1.0
    with mltrail.start_run():
        toyfw.Estimator().fit([1])
    monkeypatch.setenv("RANK", "0")
    toyfw.train([2.0], epochs=1)
    runs = _runs()
    assert [r.data.params for r in runs] == [{}, {"epochs": "1"}]
