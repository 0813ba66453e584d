"""The fluent API: an active-run stack and ``log_*`` functions, as in MLflow Tracking.

Each thread has its own stack of active runs; a thread whose stack is empty sees the main
thread's active run, so a callback running on a framework's worker thread logs into the run
the training script started. A run started here is *owned* by this process: the writer keeps
its heartbeat, interpreter exit ends it (FINISHED, or FAILED after an unhandled exception) and
SIGTERM ends it KILLED before the process terminates as it would have. A forked child inherits
the stack and may log into the parent's run, but never ends it.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from mltrail.core.client import Client, _check_max, _now_ms
from mltrail.core.entities import (
    Experiment,
    Run,
    RunData,
    RunInfo,
    RunStatus,
    ViewType,
)
from mltrail.core.errors import (
    ExperimentNotFoundError,
    InvalidValueError,
    RunStateError,
)
from mltrail.core.store import resolve_tracking_uri
from mltrail.core.writer import RunBuffer, get_writer, run_flush_hooks, training_calls

_log = logging.getLogger("mltrail.fluent")
_time = time.time

_tracking_uri: str | None = None
_active_experiment_id: str | None = None
_tls = threading.local()
_main_stack: list[ActiveRun] = []
# Whether any thread but the main one has a run stack of its own; until then every thread
# logs to the main stack's run and log_metric skips the thread-local lookup.
_thread_stacks = False
_main_thread = threading.main_thread()
_last_active_run_id: str | None = None
_unhandled_exception = False
_hooks_installed = False
_start_run_hooks: list[Any] = []  # callables(run: ActiveRun) run after a run starts


class ActiveRun:
    """The run a ``with mltrail.start_run():`` block works in.

    ``info`` is the run's info; ``data`` reads the run's current params, metrics and tags.
    Leaving the block ends the run: FINISHED, FAILED on an exception, KILLED on Ctrl-C.
    """

    def __init__(self, info: RunInfo, buffer: RunBuffer, client: Client, *, owner_pid: int) -> None:
        self.info = info
        self._buffer = buffer
        self._client = client
        self._owner_pid = owner_pid
        self._system_monitor: Any = None
        self._ended = False

    @property
    def data(self) -> RunData:
        return self._client.get_run(self.info.run_id).data

    @property
    def run_id(self) -> str:
        return self.info.run_id

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            status = RunStatus.FINISHED.value
        elif issubclass(exc_type, KeyboardInterrupt):
            status = RunStatus.KILLED.value
        else:
            status = RunStatus.FAILED.value
        _end(self, status)

    def __repr__(self) -> str:
        return f"<ActiveRun: run_id={self.info.run_id!r}, name={self.info.run_name!r}>"


# ---------------------------------------------------------------------- tracking URI
def set_tracking_uri(uri: str | os.PathLike[str] | None) -> None:
    """Set where runs are recorded: a directory, ``sqlite:///file.db`` or ``postgresql://...``.

    Example:
        >>> mltrail.set_tracking_uri("postgresql://mltrail@db:5432/tracking")
    """
    global _tracking_uri, _active_experiment_id
    _tracking_uri = os.fspath(uri) if uri is not None else None
    _active_experiment_id = None


def get_tracking_uri() -> str:
    """Return the tracking URI in force (set_tracking_uri, MLTRAIL_TRACKING_URI, or the default)."""
    return resolve_tracking_uri(_tracking_uri)


def _client() -> Client:
    return Client(get_tracking_uri())


# ---------------------------------------------------------------------- experiments
def create_experiment(
    name: str, artifact_location: str | None = None, tags: Mapping[str, Any] | None = None
) -> str:
    """Create an experiment and return its id."""
    return _client().create_experiment(name, artifact_location, tags)


def set_experiment(experiment_name: str | None = None, experiment_id: str | None = None) -> Experiment:
    """Make an experiment the active one, creating it by name if it does not exist.

    Example:
        >>> mltrail.set_experiment("digits")
    """
    global _active_experiment_id
    if (experiment_name is None) == (experiment_id is None):
        msg = "set_experiment needs exactly one of experiment_name or experiment_id"
        raise InvalidValueError(msg)
    client = _client()
    if experiment_id is not None:
        exp = client.get_experiment(str(experiment_id))
    else:
        assert experiment_name is not None
        found = client.get_experiment_by_name(experiment_name)
        if found is None:
            from mltrail.core.errors import ExperimentExistsError

            try:
                client.create_experiment(experiment_name)
            except ExperimentExistsError:  # another process created it meanwhile
                pass
            found = client.get_experiment_by_name(experiment_name)
            assert found is not None
        exp = found
    if exp.lifecycle_stage != "active":
        msg = f"experiment {exp.name!r} is deleted; restore it with Client().restore_experiment({exp.experiment_id!r})"
        raise RunStateError(msg)
    _active_experiment_id = exp.experiment_id
    return exp


def get_experiment(experiment_id: str) -> Experiment:
    return _client().get_experiment(experiment_id)


def get_experiment_by_name(name: str) -> Experiment | None:
    return _client().get_experiment_by_name(name)


def delete_experiment(experiment_id: str) -> None:
    _client().delete_experiment(experiment_id)


def search_experiments(
    view_type: int = ViewType.ACTIVE_ONLY,
    max_results: int | None = None,
    filter_string: str | None = None,
    order_by: Sequence[str] | None = None,
) -> list[Experiment]:
    """Experiments matching ``filter_string`` (e.g. ``"name LIKE 'cv-%'"``), all pages."""
    client = _client()
    out: list[Experiment] = []
    token = None
    limit = max_results if max_results is not None else sys.maxsize
    while len(out) < limit:
        page = client.search_experiments(
            view_type, min(1000, limit - len(out)), filter_string, order_by, token
        )
        out.extend(page)
        token = page.token  # type: ignore[attr-defined]
        if not token:
            break
    return out


def _resolve_experiment_id(experiment_id: str | None) -> str:
    if experiment_id is not None:
        return str(experiment_id)
    if _active_experiment_id is not None:
        return _active_experiment_id
    env_id = os.environ.get("MLTRAIL_EXPERIMENT_ID")
    if env_id:
        return env_id
    env_name = os.environ.get("MLTRAIL_EXPERIMENT_NAME")
    if env_name:
        return set_experiment(env_name).experiment_id
    return "0"


# ---------------------------------------------------------------------- the run stack
def _stack() -> list[ActiveRun]:
    stack: list[ActiveRun] | None = getattr(_tls, "stack", None)
    if stack is None:
        global _thread_stacks
        if threading.current_thread() is _main_thread:
            stack = _main_stack
        else:
            stack = []
            _thread_stacks = True
        _tls.stack = stack
    return stack


def active_run() -> ActiveRun | None:
    """The run that ``log_*`` calls go to, or None."""
    stack = getattr(_tls, "stack", None) or _stack() or _main_stack
    return stack[-1] if stack else None


def last_active_run() -> Run | None:
    """The active run, else the run most recently ended in this process."""
    run = active_run()
    if run is not None:
        return get_run(run.info.run_id)
    return get_run(_last_active_run_id) if _last_active_run_id else None


def _current() -> ActiveRun:
    """The active run, starting one if there is none (as MLflow's fluent log_* do)."""
    stack = getattr(_tls, "stack", None) or _main_stack
    if stack:
        return stack[-1]
    return start_run()


def start_run(
    run_id: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    log_system_metrics: bool | None = None,
    *,
    resume_key: str | None = None,
    parent_run_id: str | None = None,
) -> ActiveRun:
    """Start a run (or resume one) and make it active.

    Args:
        run_id: resume this run instead of creating one.
        experiment_id: where the run goes (default: the active experiment, else "Default").
        run_name: a name; a readable one is generated when omitted.
        nested: start a child of the active run.
        tags: initial tags.
        description: a free-text note (tag ``mltrail.note.content``).
        log_system_metrics: sample CPU/GPU/memory under ``system/`` while the run is active.
        resume_key: continue the run that started with the same key (e.g. after preemption);
            ``"auto"`` uses the scheduler's job id (SLURM, PBS, LSF, SGE).
        parent_run_id: make the run a child of this run.

    Example:
        >>> with mltrail.start_run(run_name="baseline") as run:
        ...     mltrail.log_param("lr", 0.01)
        ...     mltrail.log_metric("loss", 0.42, step=1)
    """
    global _last_active_run_id
    stack = _stack()
    parent = stack[-1] if stack else None
    if parent is not None and not nested and run_id is None and parent_run_id is None:
        msg = (
            f"run {parent.info.run_id} is already active; end it with mltrail.end_run() first, or "
            "start a child run with start_run(nested=True)"
        )
        raise RunStateError(msg)
    client = _client()
    store = client.store
    writer = get_writer()
    if run_id is not None:
        info = _resume(client, run_id)
    else:
        exp_id = _resolve_experiment_id(experiment_id)
        key = _resolve_resume_key(resume_key)
        existing = store.find_run_by_resume_key(exp_id, key) if key else None
        if existing is not None:
            info = _resume(client, existing.run_id)
        else:
            all_tags = dict(tags or {})
            if description is not None:
                all_tags["mltrail.note.content"] = description
            all_tags.update(_fast_environment_tags())
            if parent_run_id is None and nested and parent is not None:
                parent_run_id = parent.info.run_id
            run = client.create_run(
                exp_id,
                tags=all_tags,
                run_name=run_name,
                parent_run_id=parent_run_id,
                resume_key=key,
                owned=True,
                background=key is None,  # a resume key must be unique now: written at once
            )
            info = run.info
            _capture_environment_later(client, info.run_id)
    buffer = writer.buffer(store, info.run_id, owned=True)
    active = ActiveRun(info, buffer, client, owner_pid=os.getpid())
    stack.append(active)
    _last_active_run_id = info.run_id
    _install_process_hooks()
    if _system_metrics_wanted(log_system_metrics):
        _start_system_metrics(active)
    for hook in list(_start_run_hooks):
        try:
            hook(active)
        except Exception:  # noqa: BLE001 - a hook must never stop a run from starting
            _log.debug("start_run hook %r failed", hook, exc_info=True)
    return active


def _resume(client: Client, run_id: str) -> RunInfo:
    store = client.store_for(run_id)
    info = store.get_run_info(run_id)
    if info.lifecycle_stage != "active":
        msg = f"run {run_id} is deleted; restore it with Client().restore_run({run_id!r}) to resume it"
        raise RunStateError(msg)
    for other in _stack():
        if other.info.run_id == run_id:
            msg = f"run {run_id} is already active in this thread"
            raise RunStateError(msg)
    deadline = _now_ms() + int(get_writer().config.heartbeat_timeout * 1000)
    store.update_run(
        run_id, status=RunStatus.RUNNING.value, clear_end_time=True, heartbeat_deadline=deadline
    )
    return store.get_run_info(run_id)


_SCHEDULER_JOB_VARS = (
    ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"),
    ("SLURM_JOB_ID", None),
    ("PBS_JOBID", None),
    ("LSB_JOBID", "LSB_JOBINDEX"),
    ("JOB_ID", "SGE_TASK_ID"),
)


def _resolve_resume_key(resume_key: str | None) -> str | None:
    if resume_key is None:
        return None
    if not isinstance(resume_key, str) or not resume_key:
        msg = f"resume_key must be a non-empty str, got {resume_key!r}"
        raise InvalidValueError(msg)
    if resume_key != "auto":
        return resume_key
    for job_var, index_var in _SCHEDULER_JOB_VARS:
        job = os.environ.get(job_var)
        if job:
            index = os.environ.get(index_var) if index_var else None
            if index and index != "undefined":
                return f"{job_var.split('_')[0].lower()}:{job}_{index}"
            return f"{job_var.split('_')[0].lower()}:{job}"
    return None


def end_run(status: str = "FINISHED") -> None:
    """End the active run: drain what was logged to it, then record its status."""
    stack = _stack()
    if not stack:
        return
    _end(stack[-1], status)


def _end(run: ActiveRun, status: str) -> None:
    if _detach(run):
        _finish(run, status)


def _detach(run: ActiveRun) -> bool:
    """End ``run`` for this process: off every run stack, and ``last_active_run()``.

    False if it had ended already. :func:`_finish` then records the end; autolog calls the two
    apart when a run's background jobs must land before its end is written.
    """
    global _last_active_run_id
    if run._ended:
        return False
    run._ended = True
    for stack in _all_stacks():
        if run in stack:
            stack.remove(run)
    _last_active_run_id = run.info.run_id
    return True


def _finish(run: ActiveRun, status: str) -> None:
    """Stop the run's system metrics and write its end, after its data."""
    if run._system_monitor is not None:
        try:
            run._system_monitor.stop()
        except Exception:  # noqa: BLE001 - never fail end_run on the sampler
            _log.debug("stopping system metrics failed", exc_info=True)
    if run._owner_pid != os.getpid():
        # A forked child never ends its parent's run; it only writes what it logged.
        get_writer().flush()
        return
    # What integrations still do in the background for this run (an autologged fit's metrics,
    # plots, model file) lands before the run's end.
    run_flush_hooks()
    run._client.set_terminated(run.info.run_id, status)


def _all_stacks() -> list[list[ActiveRun]]:
    stacks = [_main_stack]
    own = getattr(_tls, "stack", None)
    if own is not None and own is not _main_stack:
        stacks.append(own)
    return stacks


# ---------------------------------------------------------------------- logging
def log_metric(
    key: str,
    value: float,
    step: int | None = None,
    timestamp: int | None = None,
    *,
    run_id: str | None = None,
) -> None:
    """Log one metric point; returns at once (the writer stores it in the background).

    Example:
        >>> for step in range(100):
        ...     mltrail.log_metric("loss", 1 / (step + 1), step=step)
    """
    if run_id is None:
        stack = (getattr(_tls, "stack", None) or _main_stack) if _thread_stacks else _main_stack
        run = stack[-1] if stack else _current()
        # The common case inline, one Python frame less than RunBuffer.log_metric (which
        # handles everything else: new keys, conversions, explicit timestamps, refusal).
        buffer = run._buffer
        queue = buffer.series.get(key)
        if (
            queue is not None
            and type(value) is float
            and type(step) is int
            and timestamp is None
            and not buffer.refusing
            and -0x8000000000000000 <= step <= 0x7FFFFFFFFFFFFFFF
        ):
            queue.append((step, _time() * 1000.0, value))
        else:
            buffer.log_metric(key, value, step, timestamp)
    else:
        _client()._buffer(run_id).log_metric(key, value, step, timestamp)


def log_metrics(
    metrics: Mapping[str, float],
    step: int | None = None,
    timestamp: int | None = None,
    *,
    run_id: str | None = None,
) -> None:
    """Log several metrics at one step; nothing is logged if any key or value is invalid."""
    if not isinstance(metrics, Mapping):
        msg = f"log_metrics expects a dict of key -> number, got {type(metrics).__name__}"
        raise InvalidValueError(msg)
    buf = _current()._buffer if run_id is None else _client()._buffer(run_id)
    buf.log_metrics(metrics, step, timestamp)


def log_param(key: str, value: Any) -> Any:
    """Log a param (stored as a string). Logging it again with another value is an error."""
    _current()._buffer.log_params({key: value})
    return value


def log_params(params: Mapping[str, Any]) -> None:
    if not isinstance(params, Mapping):
        msg = f"log_params expects a dict, got {type(params).__name__}"
        raise InvalidValueError(msg)
    _current()._buffer.log_params(params)


def set_tag(key: str, value: Any) -> None:
    _current()._buffer.set_tags({key: value})


def set_tags(tags: Mapping[str, Any]) -> None:
    if not isinstance(tags, Mapping):
        msg = f"set_tags expects a dict, got {type(tags).__name__}"
        raise InvalidValueError(msg)
    _current()._buffer.set_tags(tags)


def delete_tag(key: str) -> None:
    _current()._buffer.delete_tag(key)


def log_artifact(local_path: str, artifact_path: str | None = None) -> None:
    """Copy a file into the active run's artifacts (under ``artifact_path``)."""
    run = _current()
    run._client.log_artifact(run.info.run_id, local_path, artifact_path)


def log_artifacts(local_dir: str, artifact_path: str | None = None) -> None:
    run = _current()
    run._client.log_artifacts(run.info.run_id, local_dir, artifact_path)


def log_dict(dictionary: Any, artifact_file: str) -> None:
    """Save a dict as JSON (or YAML for .yaml/.yml) in the active run's artifacts."""
    run = _current()
    run._client.log_dict(run.info.run_id, dictionary, artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    run = _current()
    run._client.log_text(run.info.run_id, text, artifact_file)


def log_figure(figure: Any, artifact_file: str) -> None:
    run = _current()
    run._client.log_figure(run.info.run_id, figure, artifact_file)


def log_image(image: Any, artifact_file: str) -> None:
    run = _current()
    run._client.log_image(run.info.run_id, image, artifact_file)


def log_input(dataset: Any, context: str | None = None, tags: Mapping[str, str] | None = None) -> None:
    """Record a dataset's fingerprint (see :mod:`mltrail.data`) as an input of the active run."""
    run = _current()
    run._client.log_inputs(run.info.run_id, [dataset], context)


def get_artifact_uri(artifact_path: str | None = None) -> str:
    run = _current()
    return run._client.get_artifact_uri(run.info.run_id, artifact_path)


def flush() -> None:
    """Block until everything logged so far in this process is durable in the store.

    Background work that integrations queued (model files, plots, metrics computed off the
    training thread) is finished first, through the hooks of :func:`register_flush_hook`.
    """
    run_flush_hooks()
    get_writer().flush()


def get_run(run_id: str) -> Run:
    return _client().get_run(run_id)


def search_runs(
    experiment_ids: Sequence[str] | None = None,
    filter_string: str = "",
    run_view_type: int = ViewType.ACTIVE_ONLY,
    max_results: int = 100_000,
    order_by: Sequence[str] | None = None,
    output_format: str = "pandas",
    search_all_experiments: bool = False,
    experiment_names: Sequence[str] | None = None,
) -> Any:
    """Runs matching ``filter_string``, as a pandas DataFrame (default) or a list of Runs.

    Example:
        >>> mltrail.search_runs(filter_string="metrics.acc > 0.9 AND params.model = 'rf'",
        ...                     order_by=["metrics.acc DESC"])
    """
    if output_format not in ("pandas", "list"):
        msg = f"output_format must be 'pandas' or 'list', got {output_format!r}"
        raise InvalidValueError(msg)
    client = _client()
    ids: list[str] = [str(e) for e in (experiment_ids or [])]
    for name in experiment_names or []:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            msg = f"no experiment named {name!r}"
            raise ExperimentNotFoundError(msg)
        ids.append(exp.experiment_id)
    if search_all_experiments and not ids:
        ids = [e.experiment_id for e in search_experiments(view_type=ViewType.ALL)]
    if not ids:
        ids = [_resolve_experiment_id(None)]
    _check_max(min(max_results, 50_000))
    runs: list[Run] = []
    token = None
    while len(runs) < max_results:
        page = client.search_runs(
            ids, filter_string, run_view_type, min(50_000, max_results - len(runs)), order_by, token
        )
        runs.extend(page)
        token = page.token  # type: ignore[attr-defined]
        if not token:
            break
    if output_format == "list":
        return runs
    from mltrail.core.frames import runs_to_pandas

    return runs_to_pandas(runs)


# ---------------------------------------------------------------------- system metrics
_system_metrics_default: bool | None = None


def enable_system_metrics_logging() -> None:
    """Sample system metrics in every run started from now on."""
    global _system_metrics_default
    _system_metrics_default = True


def disable_system_metrics_logging() -> None:
    global _system_metrics_default
    _system_metrics_default = False


def _system_metrics_wanted(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    if _system_metrics_default is not None:
        return _system_metrics_default
    if not os.environ.get("MLTRAIL_ENABLE_SYSTEM_METRICS_LOGGING"):
        return False
    from mltrail.core.system_metrics import system_metrics_enabled_by_env

    return system_metrics_enabled_by_env()


def _start_system_metrics(run: ActiveRun) -> None:
    from mltrail.core.system_metrics import SystemMetricsMonitor

    buffer = run._buffer

    def log(metrics: dict[str, float], step: int) -> None:
        buffer.log_metrics(metrics, step=step)

    monitor = SystemMetricsMonitor(log)
    monitor.start()
    run._system_monitor = monitor


# ---------------------------------------------------------------------- environment
def _fast_environment_tags() -> dict[str, str]:
    try:
        from mltrail.core import environment

        return dict(environment.capture_fast().tags)
    except Exception:  # noqa: BLE001 - capture must never stop a run from starting
        _log.debug("environment capture failed", exc_info=True)
        return {}


def _capture_environment_later(client: Client, run_id: str) -> None:
    """Record the costly part (git diff, packages, entry point) off the caller's thread."""

    def work() -> None:
        try:
            from mltrail.core import environment

            captured = environment.capture_slow_cached()
            for path, data in captured.artifacts.items():
                client.log_bytes(run_id, data, path)
            if captured.tags:
                # Straight to the store from this background thread: going through a buffer
                # could re-open one for a run that has ended meanwhile.
                from mltrail.core.store import WriteBatch

                client.store_for(run_id).write_batch(
                    WriteBatch(tags=[(run_id, k, v) for k, v in captured.tags.items()])
                )
        except Exception:  # noqa: BLE001 - capture is best effort, never an error in training
            _log.debug("background environment capture failed", exc_info=True)

    _submit_environment_job(work)


# One long-lived worker per process: starting a thread per run costs start_run milliseconds.
_env_jobs: queue.Queue[Any] | None = None
_env_pid = 0


_env_held: list[Any] = []  # submitted, handed to the worker when no training call runs


def _submit_environment_job(work: Any) -> None:
    global _env_jobs, _env_pid
    if _env_jobs is None or _env_pid != os.getpid():
        _env_jobs, _env_pid = queue.Queue(), os.getpid()
        _env_held.clear()  # a forked child does not capture for its parent's runs
        threading.Thread(
            target=_environment_worker, args=(_env_jobs,), name="mltrail-environment", daemon=True
        ).start()
    # A run started by an autologged fit: its capture starts when the fit returns, not in the
    # middle of it (see mltrail.core.writer.training_calls).
    _env_held.append(work)
    training_calls.defer(_release_environment_jobs)


def _release_environment_jobs() -> None:
    jobs = _env_jobs
    while jobs is not None and _env_held:
        try:
            work = _env_held.pop(0)
        except IndexError:  # another thread released it
            return
        jobs.put(work)


def _environment_worker(jobs: queue.Queue[Any]) -> None:
    while True:
        work = jobs.get()
        try:
            work()
        finally:
            jobs.task_done()


def _join_environment_threads(timeout: float = 10.0) -> None:
    """Wait (bounded) until every queued environment capture has been recorded."""
    jobs = _env_jobs
    if jobs is None or _env_pid != os.getpid():
        return
    _release_environment_jobs()
    deadline = time.monotonic() + timeout
    while jobs.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.01)


# ---------------------------------------------------------------------- process hooks
_previous_sigterm: Any = None
_sigterm_installed = False
_unhandled_exit_type: type[BaseException] | None = None
_terminating = False


def _install_process_hooks() -> None:
    """On start_run: atexit, an excepthook that notes a crash, and a chained SIGTERM handler.

    atexit and the excepthook are installed once per process. The SIGTERM handler is installed
    by the first start_run on the main thread (only it may set signal handlers); a process that
    ignores SIGTERM, or whose handler belongs to C code, is left alone.
    """
    global _hooks_installed, _previous_sigterm, _sigterm_installed
    if not _hooks_installed:
        _hooks_installed = True
        atexit.register(_at_exit)
        previous_hook = sys.excepthook

        def excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
            global _unhandled_exception, _unhandled_exit_type
            if not issubclass(exc_type, SystemExit):
                _unhandled_exception = True
                _unhandled_exit_type = exc_type
            previous_hook(exc_type, exc, tb)

        sys.excepthook = excepthook
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):
        return
    _sigterm_installed = True
    if previous is signal.SIG_IGN or previous is None or previous is _on_sigterm:
        return  # the process ignores SIGTERM (or a C library owns it): leave it alone
    _previous_sigterm = previous
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - not the main thread after all
        _sigterm_installed = False


def _on_sigterm(signum: int, frame: Any) -> None:
    """Drain, end this process's runs KILLED, then terminate as the process would have."""
    global _terminating
    writer = get_writer()
    if writer.io_owned_by_current_thread():
        # We interrupted this thread's own flush, which holds the writer's I/O lock and may be
        # inside a transaction: let it finish, then come back (Writer.flush runs ``deferred``).
        writer.deferred = lambda: _on_sigterm(signum, frame)
        return
    if not _terminating:  # a second SIGTERM while we drain terminates at once
        _terminating = True
        try:
            _drain_and_end(RunStatus.KILLED.value)
        except Exception:  # noqa: BLE001 - whatever happens, terminate as the process would have
            _log.debug("ending runs on SIGTERM failed", exc_info=True)
        _terminating = False
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _drain_and_end(status: str) -> None:
    """End the owned runs on a helper thread, waiting at most ``MLTRAIL_FLUSH_TIMEOUT``.

    The signal may have interrupted this thread anywhere: inside a transaction on its own
    connection, or holding a lock of ours or of a library's. A helper thread has its own
    connection and cannot re-enter any of that; at worst it is still blocked when the time is
    up, and the process terminates with its runs reported CRASHED (stale heartbeat) instead.
    """
    writer = get_writer()
    budget = writer.config.flush_timeout
    writer.limit_flushing(budget)
    helper = threading.Thread(
        target=_end_all_owned_and_stop, args=(status,), name="mltrail-sigterm", daemon=True
    )
    helper.start()
    helper.join(budget + 5.0)
    if not helper.is_alive():
        writer._deadline = None  # the process may live on (a chained handler that does not exit)


def _end_all_owned_and_stop(status: str) -> None:
    _end_all_owned(status)
    get_writer().shutdown()


def _end_all_owned(status: str) -> None:
    """End every run this process started and has not ended, draining each first."""
    pid = os.getpid()
    for stack in _all_stacks():
        for run in reversed(list(stack)):
            if run._owner_pid == pid:
                try:
                    _end(run, status)
                except Exception:  # noqa: BLE001 - keep ending the others
                    _log.debug("ending run %s failed", run.info.run_id, exc_info=True)
    # Runs this process owns that are on no stack seen from here: started on another thread,
    # or interrupted while being ended. Their buffers say so.
    writer = get_writer()
    for buf in writer.owned_buffers():
        try:
            writer.end_run(buf.store, buf.run_id, status, _now_ms())
        except Exception:  # noqa: BLE001 - keep ending the others
            _log.debug("ending run %s failed", buf.run_id, exc_info=True)


def _exit_status() -> str:
    """FINISHED, or FAILED (KILLED for Ctrl-C) when the interpreter exits on an exception."""
    exc_type = _unhandled_exit_type
    if exc_type is None and not hasattr(sys, "ps1"):
        # Our excepthook may have been replaced without chaining; the interpreter records the
        # exception that ended the program in sys.last_type (not in interactive sessions, where
        # it is only the last error shown at the prompt).
        last = getattr(sys, "last_type", None)
        if (
            isinstance(last, type)
            and issubclass(last, BaseException)
            and not issubclass(last, SystemExit)
        ):
            exc_type = last
    if exc_type is None:
        return RunStatus.FINISHED.value
    if issubclass(exc_type, KeyboardInterrupt):
        return RunStatus.KILLED.value
    return RunStatus.FAILED.value


def _at_exit() -> None:
    writer = get_writer()
    writer.limit_flushing(writer.config.flush_timeout)
    _join_environment_threads(min(10.0, writer.config.flush_timeout))
    _end_all_owned(_exit_status())
    writer.shutdown()


def _reset_for_tests() -> None:
    """Forget active runs and settings (the test suite's isolation between tests)."""
    global _tracking_uri, _active_experiment_id, _last_active_run_id
    _join_environment_threads()
    for stack in _all_stacks():
        for run in list(stack):
            if run._system_monitor is not None:
                run._system_monitor.stop()
        stack.clear()
    _tracking_uri = None
    _active_experiment_id = None
    _last_active_run_id = None
