"""Never wait, never lose: what a real process records when it exits, fails, is terminated or
is killed, and when it comes back after preemption (DESIGN invariant 4).

Every test runs ``procs/log_points.py`` (or another script) as a real subprocess against a
store in a temporary directory, signals it for real and then reads the store.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from durability_fixtures import (
    child_env,
    finish,
    forget_store,
    history,
    read_status,
    run,
    run_info,
    start,
    wait_for,
)

from mltrail.core import writer as writer_module


@pytest.fixture
def store_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    uri = str(tmp_path / "store")
    yield uri
    forget_store(uri)


def assert_points(uri: str, run_id: str, key: str, steps: np.ndarray) -> None:
    hist = history(uri, run_id, key)
    np.testing.assert_array_equal(hist.steps, steps)
    np.testing.assert_array_equal(hist.values, steps.astype(np.float64))


# ---------------------------------------------------------------------- exit and failure
def test_interpreter_exit_drains_the_queue_and_finishes_the_run(store_dir: str, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    rc, _out, err = run(
        "log_points.py",
        str(status),
        "--count",
        "30000",
        "--then",
        "exit",
        env=child_env(store_dir),
        cwd=tmp_path,
    )
    assert rc == 0, err
    run_id = read_status(status)["run_id"]
    assert_points(store_dir, run_id, "x", np.arange(30000))
    info = run_info(store_dir, run_id)
    assert info.status == "FINISHED"
    assert info.end_time is not None


def test_client_only_script_is_drained_at_exit(store_dir: str, tmp_path: Path) -> None:
    """A script that never calls start_run (Client API only) still writes everything it logged."""
    script = tmp_path / "client_only.py"
    script.write_text(
        "import mltrail\n"
        "c = mltrail.Client()\n"
        "run = c.create_run('0')\n"
        "print(run.info.run_id)\n"
        "for i in range(20000):\n"
        "    c.log_metric(run.info.run_id, 'x', float(i), step=i)\n"
        "c.log_param(run.info.run_id, 'lr', 0.1)\n"
        "c.set_tag(run.info.run_id, 'phase', 'done')\n"
    )
    proc = start(str(script), env=child_env(store_dir), cwd=tmp_path)
    rc, out, err = finish(proc)
    assert rc == 0, err
    run_id = out.strip()
    assert_points(store_dir, run_id, "x", np.arange(20000))
    from mltrail import Client

    data = Client(store_dir).get_run(run_id).data
    assert data.params["lr"] == "0.1"
    assert data.tags["phase"] == "done"


def test_unhandled_exception_ends_the_run_failed_after_draining(store_dir: str, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    rc, _out, err = run(
        "log_points.py",
        str(status),
        "--count",
        "25000",
        "--then",
        "raise",
        env=child_env(store_dir),
        cwd=tmp_path,
    )
    assert rc == 1
    assert "RuntimeError: training blew up" in err
    run_id = read_status(status)["run_id"]
    assert_points(store_dir, run_id, "x", np.arange(25000))
    assert run_info(store_dir, run_id).status == "FAILED"


def test_unhandled_keyboard_interrupt_ends_the_run_killed(store_dir: str, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    rc, _out, err = run(
        "log_points.py",
        str(status),
        "--count",
        "5000",
        "--then",
        "interrupt",
        env=child_env(store_dir),
        cwd=tmp_path,
    )
    assert rc != 0
    assert "KeyboardInterrupt" in err
    run_id = read_status(status)["run_id"]
    assert_points(store_dir, run_id, "x", np.arange(5000))
    assert run_info(store_dir, run_id).status == "KILLED"


# ---------------------------------------------------------------------- SIGTERM
def test_sigterm_drains_ends_killed_and_terminates_by_default(store_dir: str, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    proc = start(
        "log_points.py",
        str(status),
        "--count",
        "25000",
        "--then",
        "wait",
        env=child_env(store_dir),
        cwd=tmp_path,
    )
    wait_for(lambda: read_status(status).get("phase") == "logged", "the child to log", proc=proc)
    proc.send_signal(signal.SIGTERM)
    rc, _out, err = finish(proc)
    assert rc == -signal.SIGTERM, err  # terminated the way it would have been without us
    run_id = read_status(status)["run_id"]
    assert_points(store_dir, run_id, "x", np.arange(25000))
    info = run_info(store_dir, run_id)
    assert info.status == "KILLED"
    assert info.end_time is not None


def test_sigterm_chains_to_the_handler_that_was_there_before(store_dir: str, tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    marker = tmp_path / "handler-called"
    proc = start(
        "log_points.py",
        str(status),
        "--count",
        "25000",
        "--then",
        "wait",
        "--own-sigterm",
        "7",
        str(marker),
        env=child_env(store_dir),
        cwd=tmp_path,
    )
    wait_for(lambda: read_status(status).get("phase") == "logged", "the child to log", proc=proc)
    proc.send_signal(signal.SIGTERM)
    rc, _out, err = finish(proc)
    assert rc == 7, err  # the user's handler ran and chose the exit code
    assert marker.read_text() == "called"
    run_id = read_status(status)["run_id"]
    assert_points(store_dir, run_id, "x", np.arange(25000))
    assert run_info(store_dir, run_id).status == "KILLED"


def test_sigterm_during_a_flush_lets_the_flush_finish(store_dir: str, tmp_path: Path) -> None:
    """The signal lands while the main thread's flush waits inside a write (we hold the SQLite
    write lock meanwhile): the flush completes, then the run ends KILLED and the process dies."""
    status = tmp_path / "status.json"
    gate = tmp_path / "gate"
    # A writer thread that never wakes: the main thread's flush is the one inside the write.
    # (Fewer points than make the writer drain early: see writer._DRAIN_AT.)
    env = child_env(
        store_dir,
        MLTRAIL_FLUSH_INTERVAL="60",
        MLTRAIL_HEARTBEAT_INTERVAL="60",
        MLTRAIL_HEARTBEAT_TIMEOUT="600",
    )
    assert 5000 < writer_module._DRAIN_AT
    proc = start(
        "log_points.py",
        str(status),
        "--count",
        "5000",
        "--then",
        "flush-then-wait",
        "--gate",
        str(gate),
        env=env,
        cwd=tmp_path,
    )
    wait_for(lambda: read_status(status).get("phase") == "logged", "the child to log", proc=proc)
    lock = sqlite3.connect(Path(store_dir) / "mltrail.db", isolation_level=None, timeout=60)
    try:
        lock.execute("BEGIN IMMEDIATE")  # the child's flush now waits for this lock
        gate.touch()
        wait_for(lambda: read_status(status).get("phase") == "flushing", "the flush", proc=proc)
        time.sleep(0.3)  # let the flush reach the lock (if it has not, the test still holds)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
    except BaseException:
        proc.kill()  # never leave the child behind for the next test to trip over
        proc.communicate()
        raise
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    rc, _out, err = finish(proc)
    assert rc == -signal.SIGTERM, err
    run_id = read_status(status)["run_id"]
    assert_points(store_dir, run_id, "x", np.arange(5000))
    assert run_info(store_dir, run_id).status == "KILLED"


# ---------------------------------------------------------------------- SIGKILL
def test_sigkill_loses_only_the_unflushed_tail_and_the_run_reads_crashed(
    store_dir: str, tmp_path: Path
) -> None:
    """Points reach the store in the background, without flush, while training goes on; after
    SIGKILL what is stored is an unbroken prefix and the stale heartbeat reads as CRASHED."""
    status = tmp_path / "status.json"
    proc = start(
        "log_points.py",
        str(status),
        "--count",
        "20000",
        "--keep-logging",
        env=child_env(store_dir),
        cwd=tmp_path,
    )
    wait_for(lambda: read_status(status).get("phase") == "logged", "the child to log", proc=proc)
    run_id = read_status(status)["run_id"]
    # No flush is ever called: the background writer alone makes the first 20,000 durable.
    wait_for(
        lambda: len(history(store_dir, run_id, "x")) >= 20000,
        "the background writer to store the first 20,000 points",
        proc=proc,
    )
    proc.kill()
    finish(proc)
    hist = history(store_dir, run_id, "x")
    n = len(hist)
    assert n >= 20000
    np.testing.assert_array_equal(hist.steps, np.arange(n))  # in order, no gap, no duplicate
    np.testing.assert_array_equal(hist.values, np.arange(n, dtype=np.float64))
    # MLTRAIL_HEARTBEAT_TIMEOUT=1 in the child: the run soon reads as crashed, never RUNNING.
    wait_for(lambda: run_info(store_dir, run_id).status == "CRASHED", "the run to read CRASHED")
    assert run_info(store_dir, run_id).end_time is None


# ---------------------------------------------------------------------- resume after preemption
def test_requeued_job_continues_the_same_run(store_dir: str, tmp_path: Path) -> None:
    """resume_key="auto" under SLURM: the job is preempted twice (SIGKILL, then SIGTERM) and its
    requeued process continues the run; an array task gets a run of its own."""
    slurm = {"SLURM_JOB_ID": "4242"}

    # Attempt 1: killed outright.
    status = tmp_path / "attempt1.json"
    proc = start(
        "log_points.py",
        str(status),
        "--resume-key",
        "auto",
        "--count",
        "1000",
        "--then",
        "wait",
        env=child_env(store_dir, **slurm),
        cwd=tmp_path,
    )
    wait_for(lambda: read_status(status).get("phase") == "logged", "attempt 1", proc=proc)
    run_id = read_status(status)["run_id"]
    wait_for(lambda: len(history(store_dir, run_id, "x")) == 1000, "attempt 1's points", proc=proc)
    proc.kill()
    finish(proc)

    # Attempt 2: same job id, continues the run from step 1000, then is preempted by SIGTERM.
    status = tmp_path / "attempt2.json"
    proc = start(
        "log_points.py",
        str(status),
        "--resume-key",
        "auto",
        "--start",
        "1000",
        "--count",
        "1000",
        "--then",
        "wait",
        env=child_env(store_dir, **slurm),
        cwd=tmp_path,
    )
    wait_for(lambda: read_status(status).get("phase") == "logged", "attempt 2", proc=proc)
    assert read_status(status)["run_id"] == run_id
    proc.send_signal(signal.SIGTERM)
    rc, _out, err = finish(proc)
    assert rc == -signal.SIGTERM, err
    assert run_info(store_dir, run_id).status == "KILLED"

    # Attempt 3: finishes.
    status = tmp_path / "attempt3.json"
    rc, _out, err = run(
        "log_points.py",
        str(status),
        "--resume-key",
        "auto",
        "--start",
        "2000",
        "--count",
        "1000",
        env=child_env(store_dir, **slurm),
        cwd=tmp_path,
    )
    assert rc == 0, err
    assert read_status(status)["run_id"] == run_id
    assert_points(store_dir, run_id, "x", np.arange(3000))
    assert run_info(store_dir, run_id).status == "FINISHED"

    # An array task of another job: its own run, continued by its own requeue.
    array = {"SLURM_JOB_ID": "5000", "SLURM_ARRAY_JOB_ID": "4999", "SLURM_ARRAY_TASK_ID": "3"}
    for start_step in (0, 500):
        status = tmp_path / f"array{start_step}.json"
        rc, _out, err = run(
            "log_points.py",
            str(status),
            "--resume-key",
            "auto",
            "--start",
            str(start_step),
            "--count",
            "500",
            env=child_env(store_dir, **array),
            cwd=tmp_path,
        )
        assert rc == 0, err
    array_run = read_status(status)["run_id"]
    assert array_run != run_id
    assert_points(store_dir, array_run, "x", np.arange(1000))

    from mltrail import Client

    runs = Client(store_dir).search_runs(["0"])  # five processes, two runs
    assert sorted(r.info.run_id for r in runs) == sorted([run_id, array_run])


def test_resume_key_auto_reads_the_scheduler_job_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from mltrail.core.fluent import _resolve_resume_key

    for var in (
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "PBS_JOBID",
        "LSB_JOBID",
        "LSB_JOBINDEX",
        "JOB_ID",
        "SGE_TASK_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    assert _resolve_resume_key("auto") is None
    assert _resolve_resume_key("my-key") == "my-key"
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert _resolve_resume_key("auto") == "slurm:123"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert _resolve_resume_key("auto") == "slurm:100_7"
