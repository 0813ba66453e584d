"""A background thread for what a ``fit`` need not wait for: files, plots, store writes.

The fit's post step does the cheap, snapshot-sensitive work on the caller's thread (predictions,
metrics, pickling the model, fingerprinting the data) and hands the rest here as closures:
writing the model file, drawing and saving the plots, recording dataset inputs, creating the
child runs of a search. The thread is not a daemon, so the interpreter waits for it at exit (it
stops by itself when idle); :func:`flush` waits for it too.

A job that fails is reported once per kind as an :class:`~mltrail.autolog.AutologWarning`
(and logged at DEBUG); in strict mode (``MLTRAIL_AUTOLOG_STRICT=1``) the first failure is
raised again by the next :func:`flush`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable

from mltrail.autolog import _safety

_log = logging.getLogger("mltrail.integrations.sklearn")
_IDLE_SECONDS = 0.5

_lock = threading.Condition()
_jobs: deque[tuple[str, str, Callable[[], None]]] = deque()  # (point, run_id, job)
_pending_runs: dict[str, int] = {}
_thread: threading.Thread | None = None
_thread_pid = 0
_running = 0
_failure: BaseException | None = None


def submit(point: str, run_id: str, job: Callable[[], None]) -> None:
    """Run ``job`` on the background thread; ``point`` names it in warnings."""
    global _thread, _thread_pid
    with _lock:
        _jobs.append((point, run_id, job))
        _pending_runs[run_id] = _pending_runs.get(run_id, 0) + 1
        alive = _thread is not None and _thread.is_alive() and _thread_pid == os.getpid()
        if not alive:
            _thread = threading.Thread(target=_loop, name="mltrail-sklearn", daemon=False)
            _thread_pid = os.getpid()
            _thread.start()
        _lock.notify_all()


def _loop() -> None:
    global _running, _thread
    while True:
        with _lock:
            idle = 0.0
            # Wait in short slices: at interpreter exit (main thread gone) leave at once.
            while not _jobs and idle < _IDLE_SECONDS and threading.main_thread().is_alive():
                _lock.wait(0.05)
                idle += 0.05
            if not _jobs:
                if _thread is threading.current_thread():
                    _thread = None
                _lock.notify_all()
                return
            point, run_id, job = _jobs.popleft()
            _running += 1
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - a failed job must not stop the others
            _record_failure(point, exc)
        finally:
            with _lock:
                _running -= 1
                left = _pending_runs.get(run_id, 1) - 1
                if left > 0:
                    _pending_runs[run_id] = left
                else:
                    _pending_runs.pop(run_id, None)
                _lock.notify_all()


def _record_failure(point: str, exc: BaseException) -> None:
    global _failure
    if _safety.strict():
        with _lock:
            if _failure is None:
                _failure = exc
        _log.debug("sklearn background job %s failed", point, exc_info=exc)
        return
    _safety.report("sklearn", point, exc)


def flush(timeout: float | None = None, run_id: str | None = None) -> bool:
    """Wait until the queued background work (for ``run_id``, or all) is done.

    Returns False if ``timeout`` (seconds) ran out first. In strict mode a job's failure is
    raised here.
    """
    global _failure
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    with _lock:
        while (_pending_runs.get(run_id, 0) if run_id is not None else (_jobs or _running)):
            if _thread is None or not _thread.is_alive() or _thread_pid != os.getpid():
                break  # nothing will ever run them (a forked child): do not hang
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            _lock.wait(remaining if remaining is not None else 1.0)
        failure, _failure = _failure, None
    if failure is not None and _safety.strict():
        raise failure
    return True


def _reset_after_fork() -> None:
    global _thread, _running, _lock
    _lock = threading.Condition()
    _jobs.clear()
    _pending_runs.clear()
    _thread = None
    _running = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
