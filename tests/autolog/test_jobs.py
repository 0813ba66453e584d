"""Background jobs (mltrail.autolog.jobs): who waits for them, how they fail, and owned runs' ends."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import pytest
import toyfw

import mltrail
from harness import non_strict
from mltrail.autolog import AutologWarning, enable, jobs
from mltrail.autolog.call import current_call
from mltrail.core.writer import get_writer


def _gate() -> tuple[threading.Event, Any]:
    """A job step that waits until the test opens the gate: the call returns before it runs."""
    gate = threading.Event()

    def step(run_id: str) -> None:
        assert gate.wait(30)
        mltrail.Client().log_text(run_id, "later", "later.txt")

    return gate, step


def test_an_owned_run_ends_after_its_jobs_and_the_caller_does_not_wait(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    gate, step = _gate()
    toy.LATER.append(step)
    toyfw.Estimator(scale=2.0).fit([1.0, 2.0])
    # The call has returned: for this process the run is over, in the store it is still running
    # (read from the store itself: reads through the API wait for the jobs, see below).
    assert mltrail.active_run() is None
    get_writer().flush()  # the writer's part only: the run is in the store, as data is
    (first,) = mltrail.Client().store.search_runs(["0"], "", 1, 10, None, None).items
    run_id = first.info.run_id
    assert jobs.pending(run_id)
    assert first.info.status == "RUNNING"
    toyfw.Estimator(scale=3.0).fit([1.0])  # the next call starts a run of its own
    gate.set()
    assert mltrail.last_active_run().info.run_id != run_id
    mltrail.flush()  # waits for the jobs (a flush hook), then drains the writer
    run = mltrail.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    assert run.data.metrics == {"coef": 6.0}
    assert "later.txt" in [f.path for f in mltrail.Client().list_artifacts(run_id)]
    assert not jobs.pending()


def test_reading_the_run_right_after_the_call_sees_what_its_jobs_logged(toy: Any, sqlite_uri: str) -> None:
    """The MLflow idiom ``fit(); mltrail.last_active_run()`` shows the finished run, whole."""
    enable("toy")
    toy.LATER.append(lambda run_id: mltrail.Client().log_text(run_id, "later", "later.txt"))
    toyfw.Estimator(scale=2.0).fit([1.0, 2.0])
    run = mltrail.last_active_run()
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"coef": 6.0}
    assert "later.txt" in [f.path for f in mltrail.Client().list_artifacts(run.info.run_id)]


def test_a_users_run_ends_after_the_jobs_queued_for_it(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    toy.LATER.append(lambda run_id: mltrail.Client().log_text(run_id, "later", "later.txt"))
    with mltrail.start_run() as run:
        toyfw.Estimator(scale=2.0).fit([1.0])
    # The job had run when the run ended: its artifact is there, and nothing was written after.
    assert "later.txt" in [f.path for f in mltrail.Client().list_artifacts(run.info.run_id)]
    assert not jobs.pending(run.info.run_id)


def test_a_call_that_raises_waits_for_its_jobs_and_ends_failed_at_once(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    done: list[str] = []
    toy.LATER.append(done.append)

    class Boom(Exception):
        pass

    def hook() -> None:
        # Queue a job for this run from inside the call, as a pre step would, then fail.
        run_id = mltrail.active_run().info.run_id
        jobs.submit("toy", "later", run_id, lambda: done.append(run_id))
        raise Boom

    with pytest.raises(Boom):
        toyfw.Estimator(hook=hook).fit([1.0])
    run = mltrail.last_active_run()
    assert run.info.status == "FAILED"
    assert done == [run.info.run_id]


def test_jobs_for_a_run_that_has_ended_still_land(toy: Any, sqlite_uri: str) -> None:
    """E.g. a metric computed after the fit on the model of a finished run (post-training)."""
    enable("toy")
    with mltrail.start_run() as run:
        toyfw.Estimator().fit([1.0])
    run_id = run.info.run_id
    jobs.submit("toy", "late", run_id, lambda: jobs.log_metrics(mltrail.Client(), run_id, {"late": 1.5}))
    mltrail.flush()
    got = mltrail.get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.metrics["late"] == 1.5


def test_patched_calls_inside_a_job_are_not_logged(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    inside: list[Any] = []

    def step(run_id: str) -> None:
        inside.append(current_call())
        toyfw.Estimator().fit([5.0])  # e.g. predicting with a copy of the model

    toy.LATER.append(step)
    toyfw.Estimator().fit([1.0])
    mltrail.flush()
    assert inside[0] is not None
    assert len(mltrail.search_runs(output_format="list")) == 1


def test_a_failing_job_warns_once_at_the_users_line(toy: Any, sqlite_uri: str) -> None:
    enable("toy")

    def step(run_id: str) -> None:
        raise ValueError("no disk")

    toy.LATER.append(step)
    with non_strict(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        toyfw.Estimator().fit([1.0]); line = _line()  # noqa: E702 - the line the warning names
        toyfw.Estimator().fit([1.0])
        mltrail.flush()
    ours = [w for w in caught if issubclass(w.category, AutologWarning)]
    assert len(ours) == 1
    assert "toy: later failed" in str(ours[0].message) and "no disk" in str(ours[0].message)
    assert (ours[0].filename, ours[0].lineno) == (__file__, line)
    # The runs still ended, FINISHED: a failed step does not stop the steps after it.
    assert {r.info.status for r in mltrail.search_runs(output_format="list")} == {"FINISHED"}


def test_strict_mode_raises_a_jobs_failure_at_the_next_flush(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    error = ValueError("no disk")

    def step(run_id: str) -> None:
        raise error

    toy.LATER.append(step)
    toyfw.Estimator().fit([1.0])
    with pytest.raises(ValueError) as info:
        mltrail.flush()
    assert info.value is error
    mltrail.flush()  # raised once


def test_flush_with_a_timeout_and_per_run(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    gate, step = _gate()
    toy.LATER.append(step)
    toyfw.Estimator().fit([1.0])
    get_writer().flush()  # the run is in the store; its jobs are not waited for
    (run,) = mltrail.Client().store.search_runs(["0"], "", 1, 10, None, None).items
    run_id = run.info.run_id
    assert jobs.flush(timeout=0.05) is False
    assert jobs.flush(timeout=0.05, run_id="no-such-run") is True
    gate.set()
    assert jobs.flush(timeout=30, run_id=run_id) is True


def _line() -> int:
    import sys

    return sys._getframe(1).f_lineno
