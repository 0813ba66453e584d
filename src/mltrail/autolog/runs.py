"""Run ownership for patched calls, and params held for the next run.

A patched call with ``run="own"`` and no active run starts a run and ends it when the call
returns (FINISHED) or raises (FAILED; KILLED on Ctrl-C); inside an active run it logs there (or
into a child run, see ``Patch.child``). Whatever a call logs goes through its
:class:`RunHandle`, which goes inert when the call is over or the run is ended by anyone, so no
callback or leftover hook of ours ever logs into a run the user has closed.

Threads: a framework that runs work on worker threads (a thread sees the main thread's active
run) would otherwise make every worker's patched call log into the run the outer call is
filling. A run an outermost patched call is using is *busy*; a patched call on another thread
that would log into a busy run counts as nested and is not logged.

Params held for later (:func:`hold_params`) are logged into the next run that starts, by a
start-run hook this module registers with the fluent API.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from mltrail.autolog import _safety, jobs
from mltrail.autolog import call as _call
from mltrail.autolog.call import CURRENT, Call, ChildMode, RunMode

if TYPE_CHECKING:
    from mltrail.autolog.config import AutologConfig
    from mltrail.core.fluent import ActiveRun

AUTOLOG_TAG = "mltrail.autolog"  # set on every run autolog starts: the integration's name


class RunHandle:
    """Where one patched call logs: a run it started (``owned``) or the user's run it borrowed.

    Every method is a no-op once the handle is closed (the call is over) or its run was ended,
    so a callback left behind can never write into a finished run. A handle is falsy then.
    """

    __slots__ = ("__weakref__", "_active", "_closed", "integration", "owned", "run_id")

    def __init__(self, active: ActiveRun, integration: str, *, owned: bool) -> None:
        self._active = active
        self._closed = False
        self.integration = integration
        self.owned = owned
        self.run_id: str | None = active.info.run_id

    @property
    def live(self) -> bool:
        """Whether logging through this handle still reaches its run."""
        return not self._closed and not self._active._ended

    def __bool__(self) -> bool:
        return self.live

    def close(self) -> None:
        """Stop logging through this handle (the engine calls it when the call is over)."""
        self._closed = True

    def __repr__(self) -> str:
        state = "live" if self.live else "closed"
        return f"<RunHandle {self.integration} run={self.run_id} owned={self.owned} {state}>"

    # -- logging: the same meanings as the fluent functions, addressed to this handle's run
    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.live and params:
            self._active._buffer.log_params(params)

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.live and metrics:
            self._active._buffer.log_metrics(metrics, step)

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        if self.live:
            self._active._buffer.log_metric(key, value, step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.live and tags:
            self._active._buffer.set_tags(tags)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        if self.live:
            self._active._client.log_artifact(self._active.info.run_id, local_path, artifact_path)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        if self.live:
            self._active._client.log_artifacts(self._active.info.run_id, local_dir, artifact_path)

    def log_dict(self, dictionary: Any, artifact_file: str) -> None:
        if self.live:
            self._active._client.log_dict(self._active.info.run_id, dictionary, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.live:
            self._active._client.log_text(self._active.info.run_id, text, artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        if self.live:
            self._active._client.log_bytes(self._active.info.run_id, data, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        if self.live:
            self._active._client.log_figure(self._active.info.run_id, figure, artifact_file)

    def log_input(self, dataset: Any, context: str | None = None) -> None:
        if self.live:
            self._active._client.log_inputs(self._active.info.run_id, [dataset], context)


class _NoRun(RunHandle):
    """The handle of a call with no run to log into: falsy, and every method does nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        self._closed = True
        self.integration = ""
        self.owned = False
        self.run_id = None

    @property
    def live(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<RunHandle: no run>"


NO_RUN: RunHandle = _NoRun()
_call._NO_RUN = NO_RUN

# Sentinel: the call would log into a run another thread's patched call is filling.
SKIP = object()

_lock = threading.Lock()
_busy: dict[str, int] = {}  # run_id -> outermost patched calls (any thread) using it
_used: weakref.WeakSet[Any] = weakref.WeakSet()  # ActiveRuns a patched call has logged into
_owned_ids: set[str] = set()  # runs autolog started that are still open
_opening_owned: ContextVar[str | None] = ContextVar("mltrail_autolog_opening", default=None)
_fluent: Any = None  # mltrail.core.fluent, imported on first use (an import statement is slow)


def _load_fluent() -> Any:
    global _fluent
    from mltrail.core import fluent

    _fluent = fluent
    return fluent


def _global_rank() -> int:
    """This process's rank under distributed training (0 when not distributed)."""
    for var in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        value = os.environ.get(var)
        if value:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class _Session:
    """The run a call logs into: opened before ``pre``, closed after the call."""

    __slots__ = ("busy_id", "handle", "owned_run")

    def __init__(self) -> None:
        self.busy_id: str | None = None
        self.handle: RunHandle = NO_RUN
        self.owned_run: ActiveRun | None = None


def open_run(
    integration: str,
    config: AutologConfig,
    mode: RunMode,
    child: ChildMode,
    run_name: str | None,
    tags: Mapping[str, Any] | None,
) -> Any:
    """Find or start the run for an outermost patched call.

    Returns a :class:`_Session` to pass to :func:`close_run` when the call is over; None when
    there is no run to log into (nothing to close); :data:`SKIP` when the run it would log
    into is busy with another thread's patched call.
    """
    active = (_fluent or _load_fluent()).active_run()
    if active is None and mode != "own":
        return None
    if _global_rank() != 0:
        return None  # rank-zero discipline: other ranks of a distributed job log nothing
    if active is not None:
        run_id = active.info.run_id
        if _busy.get(run_id):
            return SKIP
        session = _Session()
        if config.exclusive and run_id not in _owned_ids:
            _mark_busy(session, run_id)  # the user's run: not ours to log into
            return session
        wants_child = mode == "own" and (
            child == "always" or (child == "if_used" and active in _used)
        )
        if not wants_child:
            if mode == "own":
                _used.add(active)
            _mark_busy(session, run_id)
            session.handle = RunHandle(active, integration, owned=False)
            return session
    run = _start_owned(integration, config, nested=active is not None, run_name=run_name, tags=tags)
    session = _Session()
    session.owned_run = run
    try:
        _mark_busy(session, run.info.run_id)
        session.handle = RunHandle(run, integration, owned=True)
    except BaseException:
        close_run(integration, session, None)  # never leave a run of ours open
        raise
    return session


def _mark_busy(session: _Session, run_id: str) -> None:
    with _lock:
        _busy[run_id] = _busy.get(run_id, 0) + 1
    session.busy_id = run_id


def _start_owned(
    integration: str,
    config: AutologConfig,
    *,
    nested: bool,
    run_name: str | None,
    tags: Mapping[str, Any] | None,
) -> ActiveRun:
    fluent = _fluent or _load_fluent()
    all_tags = {AUTOLOG_TAG: integration, **config.extra_tags, **(tags or {})}
    token = _opening_owned.set(integration)
    try:
        run: ActiveRun = fluent.start_run(nested=nested, run_name=run_name, tags=all_tags)
    finally:
        _opening_owned.reset(token)
    _owned_ids.add(run.info.run_id)
    return run


def close_run(
    integration: str, session: _Session, exc: BaseException | None, *, where: tuple[str, int] | None = None
) -> None:
    """End what :func:`open_run` opened: close the handle, end an owned run with its status.

    The bookkeeping cannot fail; ending the run runs under the safety net (step ``run_end``),
    and if it fails the run is still taken off the active-run stack, so that nothing logs into
    it any more (its heartbeat stops, and the store reports it crashed). ``where`` is the user's
    line that made the call, where a failure of the run's deferred end is reported.
    """
    session.handle.close()
    if session.busy_id is not None:
        with _lock:
            left = _busy.get(session.busy_id, 1) - 1
            if left > 0:
                _busy[session.busy_id] = left
            else:
                _busy.pop(session.busy_id, None)
        session.busy_id = None
    run = session.owned_run
    if run is None:
        return
    session.owned_run = None
    _owned_ids.discard(run.info.run_id)
    if run._ended:  # the user (or a callback) ended it already
        return
    if exc is None:
        status = "FINISHED"
    elif isinstance(exc, KeyboardInterrupt):
        status = "KILLED"
    else:
        status = "FAILED"
    run_id = run.info.run_id
    if jobs.pending(run_id):
        if status == "FINISHED":
            # The call's background jobs still write to the run: end it after them, on the
            # worker, and give the caller back a process where the run is already over.
            if _safety.safely(integration, "run_end", _end_after_jobs, integration, run, status,
                              where) is _safety.FAILED:
                _forget(run)
            return
        jobs.flush(run_id=run_id)  # a failed call: its run is ended, complete, before it raises
    if _safety.safely(integration, "run_end", _end_owned, run, status) is _safety.FAILED:
        _forget(run)


def _end_owned(run: ActiveRun, status: str) -> None:
    fluent = _fluent or _load_fluent()

    if fluent.active_run() is run:
        fluent.end_run(status)
    else:
        # The user's code left a run of its own on top of ours: end ours, not theirs.
        fluent._end(run, status)


def _end_after_jobs(integration: str, run: ActiveRun, status: str, where: tuple[str, int] | None = None) -> None:
    """End an owned run after the jobs queued for it; for this process it ends now.

    Now: the run leaves the active-run stack (a following call starts a run of its own) and
    becomes ``last_active_run()``. After its jobs, on the worker: its system-metrics sampler
    stops and its status and end time are written, as ``end_run`` would have.
    """
    fluent = _fluent or _load_fluent()
    if fluent._detach(run):
        jobs.submit(integration, "run_end", run.info.run_id, lambda: fluent._finish(run, status), where=where)


def _forget(run: ActiveRun) -> None:
    """After a failed end: nothing logs into ``run`` any more (the store reports it crashed)."""
    (_fluent or _load_fluent())._detach(run)


@contextmanager
def owned_run(
    integration: str,
    *,
    mode: RunMode = "own",
    child: ChildMode = "never",
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[RunHandle]:
    """Own a run around a block, as a patched call does, for integrations that need it by hand.

    With no active run a run is started (tagged ``mltrail.autolog=<integration>``, plus the
    config's ``extra_tags``) and ended FINISHED, or FAILED if the block raises; inside an active
    run the handle logs there. Patched calls inside the block are nested and are not logged.
    The block's exception propagates unchanged; failures of ours are warned, never raised
    (except in strict mode).

    Example:
        >>> with owned_run("torch") as run:
        ...     run.log_params({"lr": 0.1})
        ...     train()
    """
    from mltrail.autolog.call import Patch
    from mltrail.autolog.engine import get_config

    config = get_config(integration)
    call = Call(integration, Patch("", "", run=mode, child=child), config, None, (), {})
    outer = CURRENT.get()
    if outer is not None:  # nested inside another patched call: not ours to log
        yield NO_RUN
        return
    token = CURRENT.set(call)
    try:
        session = _safety.safely(
            integration, "run_start", open_run, integration, config, mode, child, run_name, tags
        )
        if session is SKIP or not session:
            yield NO_RUN
            return
        call.run = session.handle
        try:
            yield session.handle
        except BaseException as exc:
            close_run(integration, session, exc)
            raise
        close_run(integration, session, None)
    finally:
        CURRENT.reset(token)


# ---------------------------------------------------------------------- params held for later
_pending: dict[str, dict[str, str]] = {}  # integration -> params, in the order first seen
_pending_lock = threading.Lock()


def hold_params(integration: str, params: Mapping[str, str]) -> None:
    """Keep ``params`` to log into the next run that starts (there is no run now)."""
    with _pending_lock:
        _pending.setdefault(integration, {}).update(params)


def held_params(integration: str) -> dict[str, str]:
    """The params held for ``integration`` (a copy)."""
    with _pending_lock:
        return dict(_pending.get(integration, {}))


def drop_held(integration: str) -> None:
    """Forget the params held for ``integration`` (when it is disabled)."""
    with _pending_lock:
        _pending.pop(integration, None)


def drain_into(active: ActiveRun) -> None:
    """Log every held param into ``active``, a run that has just started.

    Registered in ``mltrail.core.fluent._start_run_hooks``; an integration enabled with
    ``exclusive=True`` keeps its params for the next run autolog starts itself.
    """
    if not _pending:
        return
    from mltrail.autolog.engine import get_config

    owned = _opening_owned.get() is not None
    with _pending_lock:
        ready = {
            name: params
            for name, params in _pending.items()
            if owned or not get_config(name).exclusive
        }
        for name in ready:
            del _pending[name]
    for name, params in ready.items():
        _safety.safely(name, "held_params", active._buffer.log_params, params)


def install_start_hook() -> None:
    """Register :func:`drain_into` with the fluent API (once)."""
    hooks = (_fluent or _load_fluent())._start_run_hooks
    if drain_into not in hooks:
        hooks.append(drain_into)


def _reset_for_tests() -> None:
    with _lock:
        _busy.clear()
    _owned_ids.clear()
    with _pending_lock:
        _pending.clear()
