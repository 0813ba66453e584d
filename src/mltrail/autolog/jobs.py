"""Background jobs: what a patched call hands off so that the user's call returns sooner.

A patched call's own thread does only what must see the objects as they are when the call
returns (a model's pickle or text, predictions, the caller's variable names) and queues the
rest here: metrics computed from those snapshots, plots, fingerprints, artifact files, store
writes, and — for a run autolog started — the end of the run, after its other jobs. One
worker thread per process runs the jobs in the order they were queued.

Who waits for them:

* ``mltrail.flush()`` (the engine registers :func:`flush` with
  :func:`mltrail.core.writer.register_flush_hook` on the first job);
* a run autolog owns: it is taken off the active-run stack when the call returns, and ended
  (FINISHED, with its end time) by a job queued after its other jobs; a call that raised
  waits for its jobs, then ends its run FAILED at once;
* the interpreter at exit: the worker is not a daemon thread, so the jobs queued before exit
  still run; it stops by itself after two seconds with nothing to do.

A job that fails is reported once per (integration, point) as an
:class:`~mltrail.autolog.AutologWarning` pointing at the user's line that queued it; in strict
mode (``MLTRAIL_AUTOLOG_STRICT=1``) the first failure is raised by the next :func:`flush`.
Patched calls made inside a job (a prediction on a model copy) are plain calls: the worker
counts as being inside a patched call already.

Example (an integration's post step)::

    data = pickle.dumps(model)                   # the snapshot, on the caller's thread
    jobs.submit("sklearn", "model", run_id, lambda: client.log_bytes(run_id, data, "model.pkl"))
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from mltrail.autolog import _safety
from mltrail.autolog.call import CURRENT, Call, Patch
from mltrail.autolog.config import AutologConfig

_log = logging.getLogger("mltrail.autolog")
_IDLE_SECONDS = 2.0

Location = tuple[str, int]


Step = tuple[str, Callable[[], object]]  # (point, function)


class _Job:
    __slots__ = ("integration", "run_id", "steps", "where")

    def __init__(self, integration: str, run_id: str | None, steps: list[Step], where: Location | None) -> None:
        self.integration = integration
        self.run_id = run_id
        self.steps = steps
        self.where = where


_lock = threading.Condition()
_jobs: deque[_Job] = deque()
_pending: dict[str | None, int] = {}  # run id -> jobs queued or running for it
_thread: threading.Thread | None = None
_thread_pid = 0
_running = 0
_failure: BaseException | None = None
_hook_registered = False
_asleep = False  # jobs were queued and the worker not woken for them yet (see wake())
# What CURRENT holds on the worker: patched calls inside jobs count as nested, not logged.
_INSIDE = Call("autolog-jobs", Patch(owner="", path="", run="none"), AutologConfig(), None, (), {})


def submit(
    integration: str,
    point: str,
    run_id: str | None,
    fn: Callable[[], object],
    *,
    where: Location | None = None,
) -> None:
    """Run ``fn()`` on the worker thread, after the jobs queued before it.

    Args:
        integration: whose job it is (for warnings and fault injection).
        point: the step's name in warnings (``"training_metrics"``, ``"model"``).
        run_id: the run the job writes to: :func:`flush` with ``run_id`` waits for it, and an
            owned run's end waits for it. None for a job tied to no run.
        fn: the job; it must not touch objects the user may change after the call returned.
        where: ``(filename, lineno)`` a failure is reported at (default: found now, the
            user's line that led here; see :func:`user_location`).
    """
    submit_steps(integration, run_id, [(point, fn)], where=where)


def submit_steps(
    integration: str, run_id: str | None, steps: list[Step], *, where: Location | None = None
) -> None:
    """Queue several steps as one job: they run in order, each failing on its own.

    One job per patched call wakes the worker once; each step is still reported (and
    fault-injected) under its own point.
    """
    if not steps:
        return
    if not _hook_registered:
        _register_flush_hook()
    global _asleep
    job = _Job(integration, run_id, steps, where if where is not None else user_location())
    with _lock:
        _jobs.append(job)
        _pending[run_id] = _pending.get(run_id, 0) + 1
        _asleep = True
    if CURRENT.get() is None:
        wake()
    # Inside a patched call the engine wakes the worker when the outermost call returns: a
    # worker that starts at once would take the GIL from the rest of the user's call.


def wake() -> None:
    """Have the worker run the queued jobs now (start it if it is not running)."""
    global _thread, _thread_pid, _asleep
    with _lock:
        _asleep = False
        if not _jobs:
            return
        if _thread is None or _thread_pid != os.getpid() or not _thread.is_alive():
            _register_shutdown_wake()
            _thread = threading.Thread(target=_loop, name="mltrail-autolog-jobs", daemon=False)
            _thread_pid = os.getpid()
            _thread.start()
        else:
            _lock.notify_all()


def pending(run_id: str | None = None) -> bool:
    """Whether jobs for ``run_id`` (or any job, for None) are queued or running."""
    if run_id is None:
        return bool(_jobs) or _running > 0
    return _pending.get(run_id, 0) > 0


def flush(timeout: float | None = None, run_id: str | None = None) -> bool:
    """Wait until the jobs queued so far (for ``run_id``, or all of them) have run.

    Returns False if ``timeout`` seconds ran out first. In strict mode the first failure of
    a job since the last flush is raised here. Called from a job it returns at once (a job
    cannot wait for itself).
    """
    global _failure
    if threading.current_thread() is _thread:
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    if _asleep:
        wake()
    with _lock:
        while _pending.get(run_id, 0) if run_id is not None else (_jobs or _running):
            if _thread is None or _thread_pid != os.getpid() or not _thread.is_alive():
                break  # nothing will run them (a forked child): never hang
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            _lock.wait(min(remaining, 1.0) if remaining is not None else 1.0)
        failure, _failure = _failure, None
    # The worker that woke us still has to take the GIL to go back to sleep: let it now, not
    # in the middle of whatever the caller runs next (a fit whose BLAS threads it would stall).
    time.sleep(0)
    if failure is not None and _safety.strict():
        raise failure
    return True


_shutdown_wake_registered = False


def _register_shutdown_wake() -> None:
    global _shutdown_wake_registered
    if not _shutdown_wake_registered:
        _shutdown_wake_registered = True
        # The hook concurrent.futures uses for its own workers: called before non-daemon
        # threads are joined at exit (atexit handlers run only after that join).
        try:
            threading._register_atexit(_wake_at_shutdown)  # type: ignore[attr-defined]
        except RuntimeError:  # the interpreter is shutting down already
            _wake_at_shutdown()


def _flush_hook() -> None:
    flush()


def _register_flush_hook() -> None:
    global _hook_registered
    from mltrail.core import writer

    writer.register_flush_hook(_flush_hook)
    _hook_registered = True


def _loop() -> None:
    global _thread, _running
    CURRENT.set(_INSIDE)
    job: _Job | None = None
    while True:
        with _lock:
            if job is not None:
                _done(job)
            # Done and waiting in one hold of the lock: a flush() that the last job's end wakes
            # returns once this thread is asleep, not while it still needs the GIL and a core.
            # One wait, not a poll: a thread of ours waking every few milliseconds slows a
            # short fit down. Interpreter shutdown wakes it (see _wake_at_shutdown).
            if not _jobs and not _shutting_down:
                _lock.wait(_IDLE_SECONDS)
            if not _jobs:
                if _thread is threading.current_thread():
                    _thread = None
                _lock.notify_all()
                return
            job = _jobs.popleft()
            _running += 1
        try:
            _run(job)
        except BaseException:
            with _lock:
                _done(job)
            raise


def _done(job: _Job) -> None:
    """Count ``job`` finished (``_lock`` held) and wake whoever waits for it."""
    global _running
    _running -= 1
    left = _pending.get(job.run_id, 1) - 1
    if left > 0:
        _pending[job.run_id] = left
    else:
        _pending.pop(job.run_id, None)
    _lock.notify_all()


_shutting_down = False


def _wake_at_shutdown() -> None:
    # Runs when the main thread has finished, before the interpreter joins this (non-daemon)
    # worker: it then leaves as soon as the queue is empty instead of idling on.
    global _shutting_down
    with _lock:
        _shutting_down = True
        _lock.notify_all()


def _run(job: _Job) -> None:
    global _failure
    for point, fn in job.steps:
        try:
            if _safety._faults_on:
                _safety._fault_check(job.integration, point)
            fn()
        except Exception as exc:  # noqa: BLE001 - a failed step must not stop the others
            if _safety.strict():
                _log.debug("autolog %s: background %s failed", job.integration, point, exc_info=exc)
                with _lock:
                    if _failure is None:
                        _failure = exc
                continue
            _safety.report(job.integration, point, exc, where=job.where)


def log_metrics(client: Any, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log ``metrics`` to ``run_id`` from a job, even if the run has ended meanwhile.

    A job can run after the user ended the run a patched call logged into (``with
    start_run(): model.fit(...)``): what the call produced still belongs to that run, so the
    points then go straight to the store instead of through the (closed) run's buffer.
    """
    from mltrail.core.entities import Metric
    from mltrail.core.errors import RunStateError

    if not metrics:
        return
    now = int(time.time() * 1000)
    try:
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
        return
    except RunStateError:
        pass
    write_to_ended_run(client, run_id, metrics, step, now)


def write_to_ended_run(client: Any, run_id: str, metrics: Mapping[str, float], step: int, timestamp: int) -> None:
    """Write one point per metric straight to the store, for a run whose buffer is closed."""
    import numpy as np

    from mltrail.core.store.base import MetricChunk, WriteBatch
    from mltrail.core.validation import validate_key

    chunks = [
        MetricChunk(run_id, validate_key(k, "metric"), np.array([step], dtype=np.int64),
                    np.array([timestamp], dtype=np.int64), np.array([float(v)], dtype=np.float64))
        for k, v in metrics.items()
    ]
    client.store_for(run_id).write_batch(WriteBatch(metrics=chunks))


def user_location() -> Location | None:
    """``(filename, lineno)`` of the user's line on the current stack (see ``_safety``)."""
    call = CURRENT.get()
    if call is not None and call.where is not None:  # noted by the wrapper: no stack walk
        return call.where
    level = _safety._user_stacklevel()
    try:
        frame = sys._getframe(level - 1)
    except ValueError:
        return None
    return frame.f_code.co_filename, frame.f_lineno


def _reset_after_fork() -> None:
    global _lock, _thread, _running, _failure, _asleep
    _lock = threading.Condition()
    _jobs.clear()
    _pending.clear()
    _thread = None
    _running = 0
    _failure = None
    _asleep = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
