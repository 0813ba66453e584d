"""Lightning: ``MLTrailLogger``, a Lightning ``Logger``, and autolog for ``Trainer.fit``/``validate``/``test``.

``MLTrailLogger`` is a complete Lightning logger, for ``lightning.pytorch`` and for
``pytorch_lightning`` (whichever is installed; both if both)::

    from mltrail.integrations.lightning import MLTrailLogger
    trainer = Trainer(logger=MLTrailLogger(experiment_name="mnist", log_model=True))

It records hyperparameters (nested dicts, dataclasses and ``Namespace``\\ s flattened with ``/``,
as Lightning's own loggers do), metrics with their step, and checkpoints through
``after_save_checkpoint``: ``log_model=True`` logs the best and last checkpoints when training
ends, ``"all"`` every checkpoint as it is written (copied in the background), under
``checkpoints/`` with the names Lightning gives them (``epoch=3-val_loss=0.21.ckpt``). A
``checkpoints/metadata.json`` lists each with its monitored score and aliases (``best``,
``latest``), and the run's tags ``mltrail.checkpoint.best``/``.best_score``/``.monitor`` mark the
best. Files over ``reference_checkpoints_over`` bytes are recorded by reference (path, size,
sha256). ``logger.experiment`` is a handle for logging anything else to the run; ``finalize``
ends the run FINISHED, FAILED (KILLED on Ctrl-C); logging again later (``trainer.test()`` after
``fit``) resumes the same run. Only global rank zero records. The logger pickles (``ddp_spawn``)
and its ``save()`` does nothing: the background writer makes everything durable.

The run: the one given by ``run_id``; else the active run (the logger logs into it and never
ends it); else a new run the logger starts, which is the active run while training, so
``mltrail.log_metric`` in a ``training_step`` lands in it too.

Autolog (``mltrail.autolog()``) patches ``Trainer.fit``, ``validate`` and ``test``: when the
trainer has none of our loggers it attaches an ``MLTrailLogger`` (after the user's loggers, so
checkpoint directories and ``trainer.log_dir`` stay as they were), and a callback that records
the optimizers and their hyperparameters (``optimizer/...``), the learning rate of each param
group every ``log_every_n_steps`` (``lr``...), trainer settings (``trainer/max_epochs``...), the
model's parameter counts and summary (``model_summary.txt``), early-stopping settings and the
epoch it stopped at, the datasets of the train/val/test dataloaders (``log_datasets``), and the
final weights as ``model/model.ckpt`` (``log_models``). Options of its own: ``log_checkpoints``
(the logger's ``log_model``) and ``reference_checkpoints_over``.

Tested versions: Lightning 2.2 to 2.6 (:mod:`mltrail.autolog.registry`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import re
import sys
import threading
import types
from argparse import Namespace
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mltrail.autolog import FAILED, AutologConfig, Call, Patch, RunHandle, _safety, enable, safe_hook, safely
from mltrail.integrations import torch as _torch

if TYPE_CHECKING:
    from concurrent.futures import Future

    from mltrail.core.fluent import ActiveRun

NAME = "lightning"
PACKAGES = ("lightning.pytorch", "pytorch_lightning")
_log = logging.getLogger("mltrail.integrations.lightning")


@dataclass(frozen=True)
class Config(AutologConfig):
    """Lightning's options on top of the common ones.

    Attributes:
        log_checkpoints: what the attached logger does with checkpoints (``log_model``): False,
            True (best and last at the end) or ``"all"`` (each as it is written).
        reference_checkpoints_over: checkpoints larger than this many bytes are recorded by
            reference (path, size, sha256) instead of copied.
    """

    log_checkpoints: bool | Literal["all"] = False
    reference_checkpoints_over: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_log_model(self.log_checkpoints, "log_checkpoints")
        _torch._check_threshold(self.reference_checkpoints_over)


def _check_log_model(value: Any, name: str = "log_model") -> None:
    if value not in (True, False, "all") or not isinstance(value, (bool, str)):
        from mltrail.core.errors import InvalidValueError

        msg = f"{name} must be False, True or 'all', got {value!r}"
        raise InvalidValueError(msg)


# ---------------------------------------------------------------------- pure helpers
_KEY_BAD = re.compile(r"[^\w\-. /:]")


def clean_key(key: Any) -> str:
    """A metric or param key as mltrail accepts it: other characters become ``_``.

    Example:
        >>> clean_key("val/acc@1 (top)")
        'val/acc_1 _top_'
    """
    text = _KEY_BAD.sub("_", str(key))
    parts = [("_" if p == ".." else p) for p in text.split("/")]
    text = "/".join(parts).strip().lstrip("/") or "_"
    return text[:250]


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, Namespace):
        return vars(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return None


def _param_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return str(value)
    if isinstance(value, type) or isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}".lstrip(".")
    if hasattr(value, "tolist") and hasattr(value, "shape"):  # tensors and numpy arrays
        try:
            size = int(getattr(value, "numel", lambda: getattr(value, "size", 0))())
            return value.tolist() if size <= 16 else f"{type(value).__name__}(shape={list(value.shape)})"
        except Exception:  # noqa: BLE001 - an exotic array: its text is good enough
            return str(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_param_value(v) for v in value) if type(value) in (list, tuple) else str(value)
    if isinstance(value, (set, frozenset)):
        return sorted((_param_value(v) for v in value), key=str)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def flatten_hparams(params: Any, sep: str = "/") -> dict[str, Any]:
    """Flatten hyperparameters: nested dicts, dataclasses and Namespaces become ``a/b/c`` keys.

    Values are kept when they are plain (numbers, strings, bools, None), small tensors and
    arrays become lists, classes and functions their qualified name, anything else its ``str``.

    Example:
        >>> flatten_hparams({"model": {"hidden": 64}, "opt": Namespace(lr=0.1)})
        {'model/hidden': 64, 'opt/lr': 0.1}
    """
    out: dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        mapping = _as_mapping(value)
        if mapping is not None:
            if not mapping and prefix:
                out[prefix] = "{}"
            for key, item in mapping.items():
                visit(f"{prefix}{sep}{key}" if prefix else str(key), item)
            return
        out[prefix or "_"] = _param_value(value)

    visit("", params)
    return out


def _jsonable(value: Any) -> Any:
    mapping = _as_mapping(value)
    if mapping is not None:
        return {str(k): _jsonable(v) for k, v in mapping.items()}
    plain = _param_value(value)
    if isinstance(plain, (list, tuple)):
        return [_jsonable(v) for v in plain]
    return plain


def map_status(status: str, exc: BaseException | None = None) -> str:
    """Lightning's ``finalize`` status as a run status (a Ctrl-C in flight makes it KILLED)."""
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED"
    return {
        "success": "FINISHED",
        "finished": "FINISHED",
        "failed": "FAILED",
        "aborted": "KILLED",
        "interrupted": "KILLED",
        "killed": "KILLED",
    }.get(str(status).lower(), "FINISHED")


def scan_checkpoints(callback: Any, logged: Mapping[str, float]) -> list[tuple[float, str, Any, str]]:
    """The checkpoints of a ``ModelCheckpoint`` not logged yet (or rewritten since), oldest first.

    Returns ``(mtime, path, score, kind)`` with kind ``"latest"``, ``"best"`` or ``"best_k"``.
    """
    found: dict[str, tuple[Any, str]] = {}
    last = getattr(callback, "last_model_path", "")
    if last:
        found[last] = (getattr(callback, "current_score", None), "latest")
    best = getattr(callback, "best_model_path", "")
    if best:
        found[best] = (getattr(callback, "best_model_score", None), "best")
    for path, score in (getattr(callback, "best_k_models", None) or {}).items():
        found.setdefault(path, (score, "best_k"))
    out = []
    for path, (score, kind) in found.items():
        try:
            mtime = os.path.getmtime(path)
        except OSError:
            continue
        if path not in logged or logged[path] < mtime:
            out.append((mtime, path, score, kind))
    out.sort(key=lambda item: item[0])
    return out


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None


_rank_zero_only: Any = None


def _rank() -> int:
    """Lightning's global rank (the one its ``rank_zero_only`` uses)."""
    global _rank_zero_only
    if _rank_zero_only is None:
        try:
            from lightning_utilities.core.rank_zero import rank_zero_only
        except ImportError:  # pragma: no cover - every supported Lightning depends on it
            return _torch.global_rank()
        _rank_zero_only = rank_zero_only
    return int(getattr(_rank_zero_only, "rank", 0) or 0)


# ---------------------------------------------------------------------- the logger
class _LoggerMixin:
    """Everything of ``MLTrailLogger``; combined with each Lightning package's ``Logger`` base."""

    LOGGER_JOIN_CHAR = "-"
    _PACKAGE = ""
    _DUMMY: Any = None

    def __init__(
        self,
        experiment_name: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
        tracking_uri: str | os.PathLike[str] | None = None,
        tags: Mapping[str, Any] | None = None,
        save_dir: str | os.PathLike[str] | None = None,
        log_model: bool | Literal["all"] = False,
        prefix: str = "",
        reference_checkpoints_over: int | None = None,
        log_system_metrics: bool | None = None,
    ) -> None:
        """Record a Lightning training into an mltrail run.

        Args:
            experiment_name: the experiment (created if missing); default: the active
                experiment (``mltrail.set_experiment``), else "Default".
            run_name: name of a new run (a readable one is generated when omitted).
            run_id: log into (and resume) this run instead of starting one.
            tracking_uri: where to record; default: the tracking URI in force.
            tags: tags of a new run.
            save_dir: where Lightning puts checkpoints when this is the first logger
                (``save_dir/<experiment>/<run id>/checkpoints``); default: the trainer's
                ``default_root_dir``.
            log_model: False; True: the best and last checkpoints when training ends; "all":
                every checkpoint as it is written.
            prefix: put before every metric name (joined with "-").
            reference_checkpoints_over: checkpoints larger than this many bytes are recorded
                by reference (path, size, sha256) instead of copied.
            log_system_metrics: sample CPU/GPU/memory into the run it starts (default: as
                ``mltrail.enable_system_metrics_logging`` or the environment say).

        Example:
            >>> trainer = Trainer(logger=MLTrailLogger(experiment_name="mnist", log_model="all"))
        """
        super().__init__()
        from mltrail.core.errors import InvalidValueError

        _check_log_model(log_model)
        _torch._check_threshold(reference_checkpoints_over)
        if tags is not None and not isinstance(tags, Mapping):
            msg = f"MLTrailLogger(tags=...) must be a dict, got {type(tags).__name__}"
            raise InvalidValueError(msg)
        if not isinstance(prefix, str):
            msg = f"MLTrailLogger(prefix=...) must be a str, got {type(prefix).__name__}"
            raise InvalidValueError(msg)
        self._experiment_name = experiment_name
        self._run_name = run_name
        self._requested_run_id = run_id
        self._tracking_uri = os.fspath(tracking_uri) if tracking_uri is not None else None
        self._tags = dict(tags or {})
        self._save_dir = os.fspath(save_dir) if save_dir is not None else None
        self._log_model = log_model
        self._prefix = prefix
        self._reference_over = reference_checkpoints_over
        self._log_system_metrics = log_system_metrics
        self._experiment_id: str | None = None
        self._run_id: str | None = None
        self._owned = False
        self._experiment: RunHandle | None = None
        self._run: ActiveRun | None = None
        self._buffer: Any = None
        self._keys: dict[str, str] = {}  # metric name as Lightning gives it -> as logged
        self._same_keys: set[str] = set()  # the names logged unchanged (no prefix, nothing to clean)
        self._checkpoint_callback: Any = None
        self._logged_checkpoints: dict[str, float] = {}
        self._checkpoint_records: dict[str, dict[str, Any]] = {}
        self._futures: list[Future[Any]] = []
        self._lock = threading.Lock()
        self._autolog = False

    def __repr__(self) -> str:
        return f"<MLTrailLogger run_id={self._run_id!r} for {self._PACKAGE}>"

    # -- pickling (ddp_spawn): keep settings and the run's id, drop live handles
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_experiment=None, _run=None, _buffer=None, _checkpoint_callback=None,
                     _futures=[], _lock=None)
        from mltrail.core import fluent

        if state["_tracking_uri"] is None:
            state["_tracking_uri"] = fluent.get_tracking_uri()
        if state["_experiment_id"] is None and state["_experiment_name"] is None:
            state["_experiment_id"] = fluent._active_experiment_id
        if self._run is not None and not self._run._ended:
            # The copy (a spawned worker) logs into the same run.
            state["_requested_run_id"] = self._run_id
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_same_keys", set())
        self._lock = threading.Lock()

    # -- the run
    def _open(self) -> RunHandle:
        """Find or start the run (rank zero only); resume it if it was ended."""
        from mltrail.core import fluent
        from mltrail.core.store import resolve_tracking_uri

        if self._experiment is not None and self._experiment.live:
            return self._experiment
        if self._tracking_uri is not None:
            wanted = resolve_tracking_uri(self._tracking_uri)
            if fluent.get_tracking_uri() != wanted:
                # As MLFlowLogger does: the logger's URI becomes the process's (a spawned worker
                # starts without the parent's setting).
                fluent.set_tracking_uri(self._tracking_uri)
        active = fluent.active_run()
        target = self._requested_run_id or (self._run_id if self._owned else None)
        if target is not None:
            if active is not None and active.info.run_id == target:
                run, owned = active, False
            else:
                run, owned = fluent.start_run(run_id=target, log_system_metrics=self._log_system_metrics), True
        elif active is not None:
            run, owned = active, False
        else:
            tags = dict(self._tags)
            run = fluent.start_run(
                experiment_id=self._resolve_experiment_id(),
                run_name=self._run_name,
                tags=tags,
                log_system_metrics=self._log_system_metrics,
            )
            owned = True
        self._run, self._owned = run, owned
        self._run_id = run.info.run_id
        self._experiment_id = run.info.experiment_id
        self._buffer = run._buffer
        self._experiment = RunHandle(run, NAME, owned=owned)
        return self._experiment

    def _resolve_experiment_id(self) -> str | None:
        if self._experiment_name is not None:
            from mltrail.core import fluent
            from mltrail.core.errors import ExperimentExistsError

            client = fluent._client()
            exp = client.get_experiment_by_name(self._experiment_name)
            if exp is None:
                try:
                    return client.create_experiment(self._experiment_name)
                except ExperimentExistsError:  # another process created it meanwhile
                    exp = client.get_experiment_by_name(self._experiment_name)
            assert exp is not None
            return exp.experiment_id
        return self._experiment_id

    def _handle(self) -> RunHandle | None:
        handle = self._experiment
        if handle is not None and handle.live:
            return handle
        opened = safely(NAME, "open_run", self._open)
        return None if opened is FAILED else opened

    @property
    def experiment(self) -> Any:
        """A handle for logging anything else to the run (rank zero; a no-op object elsewhere).

        Example:
            >>> self.logger.experiment.log_figure(fig, "confusion.png")
            >>> self.logger.experiment.run_id
        """
        if _rank() > 0:
            return self._DUMMY()
        handle = self._handle()
        return handle if handle is not None else self._DUMMY()

    @property
    def run_id(self) -> str | None:
        """The run's id (starting the run on rank zero if there is none yet; never resuming it)."""
        if self._run_id is None and _rank() == 0:
            self._handle()
        return self._run_id

    @property
    def name(self) -> str | None:
        """The experiment's name."""
        if self._experiment_name is not None:
            return self._experiment_name
        if _rank() > 0:
            return ""
        try:
            from mltrail.core import fluent

            exp_id = self._experiment_id or fluent._resolve_experiment_id(None)
            self._experiment_name = fluent.get_experiment(exp_id).name
        except Exception:  # noqa: BLE001 - a name is for display and directories only
            _log.debug("could not resolve the experiment name", exc_info=True)
            return "Default"
        return self._experiment_name

    @property
    def version(self) -> str | None:
        """The run's id."""
        return self.run_id

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    def root_dir(self) -> str | None:
        return os.path.join(self._save_dir, str(self.name)) if self._save_dir else None

    @property
    def log_dir(self) -> str | None:
        if not self._save_dir:
            return None
        return os.path.join(self._save_dir, str(self.name), str(self.version))

    @property
    def group_separator(self) -> str:
        return "/"

    # -- hyperparameters and metrics
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Log hyperparameters as params (flattened), and the whole set as ``hparams.json``."""
        if _rank() > 0:
            return
        safely(NAME, "log_hyperparams", self._log_hyperparams, params, kwargs.get("metrics"))

    def _log_hyperparams(self, params: Any, metrics: Any) -> None:
        from mltrail.core.validation import MAX_PARAM_VALUE_LENGTH, stringify

        handle = self._handle()
        if handle is None:
            return
        flat = flatten_hparams(params)
        clean: dict[str, str] = {}
        for key, value in flat.items():
            text = stringify(value)
            if len(text) > MAX_PARAM_VALUE_LENGTH:  # the whole value is in hparams.json
                text = text[: MAX_PARAM_VALUE_LENGTH - 3] + "..."
            clean[clean_key(key)] = text
        _torch._log_params_lenient(self._buffer, clean)
        if flat:
            run = self._run
            assert run is not None
            document = _jsonable(params)
            self._futures.append(_torch.submit_io(
                _write_json, run._client, run.info.run_id, document, "hparams.json"
            ))
        if isinstance(metrics, Mapping) and metrics:
            self._log_metrics(metrics, 0)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log metrics at ``step`` (Lightning passes numbers; called on every rank)."""
        # Called at every logged step: the rank check and the safety net (as safely() does it)
        # are written out, and known names go to the buffer as they are.
        rank = 1 if _rank_zero_only is None else getattr(_rank_zero_only, "rank", 0)
        if rank and _rank() > 0:
            return
        try:
            if _safety._faults_on:
                _safety._fault_check(NAME, "log_metrics")
            buffer, run = self._buffer, self._run
            if buffer is not None and run is not None and not run._ended and self._same_keys.issuperset(metrics):
                try:
                    buffer.log_metrics(metrics, step)
                    return
                except (TypeError, ValueError):  # a value that is not a number: sorted out below
                    pass
            self._log_metrics(metrics, step)
        except Exception as exc:
            if _safety.strict():
                raise
            _safety.report(NAME, "log_metrics", exc)

    def _log_metrics(self, metrics: Mapping[str, Any], step: int | None) -> None:
        buffer = self._buffer
        if buffer is None or self._run is None or self._run._ended:
            if self._handle() is None:
                return
            buffer = self._buffer
        keys = self._keys
        out: dict[str, float] = {}
        for key, value in metrics.items():
            final = keys.get(key)
            if final is None:
                base = f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._prefix else str(key)
                final = keys[key] = clean_key(base)
                if final == key:
                    self._same_keys.add(key)
            number = _float_or_none(value)
            if number is None:
                _log.debug("MLTrailLogger: metric %r is not a number (%r); left out", key, value)
                continue
            out[final] = number
        if out:
            buffer.log_metrics(out, step)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Not recorded (the autolog callback writes a model summary instead)."""

    def save(self) -> None:
        """Nothing to do: the background writer makes logged data durable on its own."""

    # -- checkpoints
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Log checkpoints as ``log_model`` says (Lightning calls this on rank zero)."""
        if not self._log_model or _rank() > 0:
            return
        safely(NAME, "after_save_checkpoint", self._after_save_checkpoint, checkpoint_callback)

    def _after_save_checkpoint(self, callback: Any) -> None:
        if self._log_model == "all" or (self._log_model is True and getattr(callback, "save_top_k", None) == -1):
            self._scan_and_log(callback)
        else:
            self._checkpoint_callback = callback

    def _scan_and_log(self, callback: Any) -> None:
        handle = self._handle()
        run = self._run
        if handle is None or run is None:
            return
        best = getattr(callback, "best_model_path", "") or ""
        info = {
            "monitor": getattr(callback, "monitor", None),
            "mode": getattr(callback, "mode", None),
            "best_path": best,
            "best_score": _float_or_none(getattr(callback, "best_model_score", None)),
            "last_path": getattr(callback, "last_model_path", "") or "",
        }
        for mtime, path, score, kind in scan_checkpoints(callback, self._logged_checkpoints):
            self._logged_checkpoints[path] = mtime
            entry = {"original_path": path, "score": _float_or_none(score), "kind": kind, "mtime": mtime}
            self._futures.append(_torch.submit_io(
                self._upload_checkpoint, run._client, run.info.run_id, run._buffer, entry, dict(info)
            ))

    def _upload_checkpoint(
        self, client: Any, run_id: str, buffer: Any, entry: dict[str, Any], info: dict[str, Any]
    ) -> None:
        """Copy (or reference) one checkpoint, then rewrite the metadata (worker thread)."""
        try:
            path = entry["original_path"]
            if not os.path.isfile(path):
                return  # removed since (a rotated top-k checkpoint): nothing to copy
            record = _torch.log_file_artifact(client, run_id, path, "checkpoints", self._reference_over)
            record.update(entry, monitor=info["monitor"], mode=info["mode"])
            with self._lock:
                self._checkpoint_records[os.path.basename(path)] = record
                records = sorted(self._checkpoint_records.values(), key=lambda r: r["mtime"])
                best_name = os.path.basename(info["best_path"]) if info["best_path"] else None
                newest = records[-1]["original_path"] if records else None
                for r in records:
                    aliases = []
                    if best_name and os.path.basename(r["original_path"]) == best_name:
                        aliases.append("best")
                    if r["original_path"] == newest:
                        aliases.append("latest")
                    r["aliases"] = aliases
                document = {"checkpoints": records}
                best = next((r for r in records if "best" in r["aliases"]), None)
            client.log_bytes(run_id, json.dumps(document, indent=2).encode(), "checkpoints/metadata.json")
            if best is not None:
                tags = {"mltrail.checkpoint.best": best["artifact"]}
                score = best["score"] if best["score"] is not None else info["best_score"]
                if score is not None:
                    tags["mltrail.checkpoint.best_score"] = repr(score)
                if info["monitor"]:
                    tags["mltrail.checkpoint.monitor"] = str(info["monitor"])
                buffer.set_tags(tags)
        except Exception:  # noqa: BLE001 - off the training thread: report, never raise
            _log.warning("mltrail: could not log checkpoint %s", entry.get("original_path"), exc_info=True)

    def _wait_uploads(self) -> None:
        futures, self._futures = self._futures, []
        for future in futures:
            try:
                future.result()
            except Exception:  # noqa: BLE001 - the task logged it
                _log.debug("a background upload failed", exc_info=True)

    # -- the end
    def finalize(self, status: str) -> None:
        """End the run with Lightning's status (success: FINISHED, failed: FAILED)."""
        if _rank() > 0:
            return
        safely(NAME, "finalize", self._finalize, status, sys.exc_info()[1])

    def _finalize(self, status: str, exc: BaseException | None) -> None:
        callback = self._checkpoint_callback
        if callback is not None and self._log_model is True:
            self._checkpoint_callback = None
            self._scan_and_log(callback)
        self._wait_uploads()
        run = self._run
        if run is None or run._ended:
            return
        if not self._owned:
            return  # the user's run: theirs to end
        from mltrail.core import fluent

        final = map_status(status, exc)
        if fluent.active_run() is run:
            fluent.end_run(final)
        else:
            fluent._end(run, final)


def _write_json(client: Any, run_id: str, document: Any, path: str) -> None:
    try:
        client.log_bytes(run_id, json.dumps(document, indent=2, default=str).encode(), path)
    except Exception:  # noqa: BLE001 - off the training thread: report, never raise
        _log.warning("mltrail: could not write %s", path, exc_info=True)


# ---------------------------------------------------------------------- the autolog callback
class _CallbackMixin:
    """What autolog records besides the logger's metrics; combined with each package's Callback."""

    def __init__(self, logger: _LoggerMixin, config: AutologConfig) -> None:
        super().__init__()
        self.mltrail_logger = logger
        self.config = config
        self._suspended = False

    # A class attribute, not a property: Lightning formats it into a profiler label for every
    # hook of every callback, about twenty times a training step.
    state_key = "mltrail-autolog"

    def _run(self) -> RunHandle | None:
        if _rank() > 0:
            return None
        return self.mltrail_logger._handle()

    def _every(self, trainer: Any) -> int:
        return int(self.config.log_every_n_steps or getattr(trainer, "log_every_n_steps", 50) or 50)

    def _suspend_torch(self) -> None:
        # In a ddp_spawn worker the loop runs outside any patched call: keep the plain-PyTorch
        # integration from recording Lightning's loop a second time.
        if not self._suspended:
            self._suspended = True
            _torch.suspend()

    def _resume_torch(self) -> None:
        if self._suspended:
            self._suspended = False
            _torch.resume()

    @safe_hook(NAME, "setup")
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._suspend_torch()

    @safe_hook(NAME, "teardown")
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._resume_torch()

    @safe_hook(NAME, "on_exception")
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._resume_torch()

    @safe_hook(NAME, "on_train_start")
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        run = self._run()
        if not run:
            return
        buffer = self.mltrail_logger._buffer
        params: dict[str, Any] = {}
        for i, optimizer in enumerate(getattr(trainer, "optimizers", None) or []):
            params.update(_torch.optimizer_params(optimizer, i))
        for i, config in enumerate(getattr(trainer, "lr_scheduler_configs", None) or []):
            prefix = "lr_scheduler" if i == 0 else f"lr_scheduler_{i}"
            params[f"{prefix}/name"] = type(config.scheduler).__name__
            params[f"{prefix}/interval"] = getattr(config, "interval", "epoch")
        params.update(trainer_params(trainer))
        params.update({f"model/{k}": v for k, v in _torch.param_counts(pl_module).items()})
        for i, es in enumerate(getattr(trainer, "early_stopping_callbacks", None) or []):
            params.update(early_stopping_params(es, i))
        _torch._log_params_lenient(buffer, params)
        run.log_text(_torch.model_summary_text(pl_module), "model_summary.txt")
        if self.config.log_datasets:
            self._log_datasets(run, getattr(trainer, "train_dataloader", None), "training", trainer)
            self._log_datasets(run, getattr(trainer, "val_dataloaders", None), "validation", trainer)

    def _log_datasets(self, run: RunHandle, loaders: Any, context: str, trainer: Any) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        prefix = type(datamodule).__name__ if datamodule is not None else None
        for name, loader in _dataloaders(loaders):
            dataset = getattr(loader, "dataset", None)
            if dataset is None:
                continue
            label = ".".join(p for p in (prefix, name or None, type(dataset).__name__) if p)
            run.log_input(_torch.dataset_fingerprint(dataset, name=label), context)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        # Called before every batch: the safety net is written out here, as safely() does it.
        try:
            if _safety._faults_on:
                _safety._fault_check(NAME, "on_train_batch_start")
            rank = 1 if _rank_zero_only is None else getattr(_rank_zero_only, "rank", 0)
            if rank and _rank() > 0:
                return
            self._log_lr(trainer)
        except Exception as exc:
            if _safety.strict():
                raise
            _safety.report(NAME, "on_train_batch_start", exc)

    def _log_lr(self, trainer: Any) -> None:
        loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
        step = getattr(loop, "_batches_that_stepped", None)
        if step is None:
            step = trainer.global_step
        if (step + 1) % self._every(trainer) and not trainer.should_stop:
            return
        metrics: dict[str, float] = {}
        for i, optimizer in enumerate(trainer.optimizers):
            metrics.update(_torch.lr_metrics(optimizer, i))
        buffer = self.mltrail_logger._buffer
        if metrics and buffer is not None:
            buffer.log_metrics(metrics, step)

    @safe_hook(NAME, "on_train_end")
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        run = self._run()
        if not run:
            return
        metrics: dict[str, float] = {"epochs": float(trainer.current_epoch)}
        for i, es in enumerate(getattr(trainer, "early_stopping_callbacks", None) or []):
            metrics.update(early_stopping_results(es, i))
        run.log_metrics(metrics, trainer.global_step)

    @safe_hook(NAME, "on_fit_end")
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.config.log_models:
            return
        run = self._run()
        if not run:
            return
        import tempfile

        import torch

        checkpoint: dict[str, Any] = {
            "state_dict": pl_module.state_dict(),
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "pytorch-lightning_version": _package_version(self.mltrail_logger._PACKAGE),
        }
        hparams = getattr(pl_module, "hparams", None)
        if hparams:
            checkpoint["hyper_parameters"] = dict(hparams)
        with tempfile.TemporaryDirectory(prefix="mltrail-model-") as tmp:
            path = os.path.join(tmp, "model.ckpt")
            torch.save(checkpoint, path)
            run.log_artifact(path, "model")

    @safe_hook(NAME, "on_validation_start")
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if getattr(trainer, "sanity_checking", False) or not self.config.log_datasets:
            return
        if str(getattr(trainer.state, "fn", "")).lower().endswith("validate"):
            run = self._run()
            if run:
                self._log_datasets(run, trainer.val_dataloaders, "validation", trainer)

    @safe_hook(NAME, "on_test_start")
    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        if not self.config.log_datasets:
            return
        run = self._run()
        if run:
            self._log_datasets(run, trainer.test_dataloaders, "testing", trainer)


def _package_version(package: str) -> str:
    module = sys.modules.get(package.split(".")[0])
    return str(getattr(module, "__version__", "0"))


def _dataloaders(loaders: Any, name: str = "") -> list[tuple[str, Any]]:
    """Flatten a dataloader, or a list/dict of them (Lightning's collections), into (name, loader)."""
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return [item for key, value in loaders.items() for item in _dataloaders(value, str(key))]
    if isinstance(loaders, (list, tuple)):
        if len(loaders) == 1:
            return _dataloaders(loaders[0], name)
        return [item for i, value in enumerate(loaders) for item in _dataloaders(value, name or str(i))]
    return [(name, loaders)]


def trainer_params(trainer: Any) -> dict[str, Any]:
    """The trainer settings worth comparing between runs, as ``trainer/...`` params."""
    out: dict[str, Any] = {}
    for attr in ("max_epochs", "min_epochs", "max_steps", "accumulate_grad_batches",
                 "gradient_clip_val", "gradient_clip_algorithm", "log_every_n_steps",
                 "precision", "num_devices", "num_nodes", "check_val_every_n_epoch"):
        try:
            value = getattr(trainer, attr)
        except Exception:  # noqa: BLE001 - a property that needs a running strategy
            continue
        if value is not None:
            out[f"trainer/{attr}"] = _param_value(value)
    strategy = getattr(trainer, "strategy", None)
    if strategy is not None:
        out["trainer/strategy"] = type(strategy).__name__
    return out


def early_stopping_params(callback: Any, index: int = 0) -> dict[str, Any]:
    prefix = "early_stopping" if index == 0 else f"early_stopping_{index}"
    out: dict[str, Any] = {}
    for attr in ("monitor", "mode", "patience", "min_delta", "stopping_threshold", "divergence_threshold"):
        value = getattr(callback, attr, None)
        if value is not None:
            if attr == "min_delta":
                value = abs(float(value))  # Lightning stores it signed by the mode
            out[f"{prefix}/{attr}"] = _param_value(value)
    return out


def early_stopping_results(callback: Any, index: int = 0) -> dict[str, float]:
    prefix = "early_stopping" if index == 0 else f"early_stopping_{index}"
    out: dict[str, float] = {}
    for attr in ("stopped_epoch", "wait_count", "best_score"):
        value = _float_or_none(getattr(callback, attr, None))
        if value is not None:
            out[f"{prefix}/{attr}"] = value
    return out


# ---------------------------------------------------------------------- one class per package
_QUALNAMES = {
    ("logger", "lightning.pytorch"): "_MLTrailLoggerForLightning",
    ("logger", "pytorch_lightning"): "_MLTrailLoggerForPL",
    ("callback", "lightning.pytorch"): "_AutologCallbackForLightning",
    ("callback", "pytorch_lightning"): "_AutologCallbackForPL",
}
_built: dict[str, type] = {}
_build_lock = threading.RLock()


def logger_class(package: str | None = None) -> type:
    """``MLTrailLogger`` for ``package`` (``"lightning.pytorch"`` or ``"pytorch_lightning"``).

    Default: the package already imported (``lightning.pytorch`` if both or neither are),
    else the one installed.
    """
    return _build("logger", package or _preferred_package())


def callback_class(package: str) -> type:
    return _build("callback", package)


def _preferred_package() -> str:
    if "pytorch_lightning" in sys.modules and "lightning.pytorch" not in sys.modules:
        return "pytorch_lightning"
    import importlib.util

    try:
        if importlib.util.find_spec("lightning.pytorch") is not None:
            return "lightning.pytorch"
    except (ImportError, ValueError):
        pass
    return "pytorch_lightning"


def _build(kind: str, package: str) -> type:
    if package not in PACKAGES:
        from mltrail.core.errors import InvalidValueError

        msg = f"package must be one of {PACKAGES}, got {package!r}"
        raise InvalidValueError(msg)
    qualname = _QUALNAMES[(kind, package)]
    with _build_lock:
        cls = _built.get(qualname)
        if cls is not None:
            return cls
        import importlib

        if kind == "logger":
            base = importlib.import_module(f"{package}.loggers.logger").Logger
            fabric = "lightning.fabric" if package == "lightning.pytorch" else "lightning_fabric"
            dummy = importlib.import_module(f"{fabric}.loggers.logger")._DummyExperiment
            namespace = {"__module__": __name__, "__qualname__": qualname, "_PACKAGE": package,
                         "_DUMMY": dummy, "__doc__": _LoggerMixin.__init__.__doc__}
            cls = types.new_class("MLTrailLogger", (_LoggerMixin, base), {},
                                  lambda ns: ns.update(namespace))
        else:
            base = importlib.import_module(f"{package}.callbacks").Callback
            namespace = {"__module__": __name__, "__qualname__": qualname}
            cls = types.new_class("MLTrailAutologCallback", (_CallbackMixin, base), {},
                                  lambda ns: ns.update(namespace))
        _built[qualname] = cls
        return cls


def __getattr__(name: str) -> Any:
    if name == "MLTrailLogger":
        return logger_class()
    for (kind, package), qualname in _QUALNAMES.items():
        if name == qualname:
            return _build(kind, package)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def _package_of(obj: Any) -> str:
    for cls in type(obj).__mro__:
        module = cls.__module__ or ""
        for package in PACKAGES:
            if module == package or module.startswith(package + "."):
                return package
    return _preferred_package()


# ---------------------------------------------------------------------- the patches
def _pre_stage(call: Call) -> None:
    """Before fit/validate/test: make sure the trainer has our logger and our callback."""
    trainer = call.instance
    if trainer is None:
        return
    config = call.config
    package = _package_of(trainer)
    loggers = list(trainer.loggers)
    ours = next((lg for lg in loggers if isinstance(lg, _LoggerMixin)), None)
    if ours is None:
        from mltrail.autolog.runs import AUTOLOG_TAG
        from mltrail.core import fluent

        if config.exclusive and fluent.active_run() is not None:
            return  # the user's run, and autolog may log only into runs it starts
        ours = logger_class(package)(
            tags={AUTOLOG_TAG: NAME, **config.extra_tags},
            log_model=getattr(config, "log_checkpoints", False),
            reference_checkpoints_over=getattr(config, "reference_checkpoints_over", None),
        )
        ours._autolog = True
        if not loggers:
            # With no logger of the user's, ours becomes trainer.logger: keep the directories
            # Lightning would have used without one.
            root = str(trainer.default_root_dir)
            ours._save_dir = root
            for callback in getattr(trainer, "checkpoint_callbacks", []):
                if getattr(callback, "dirpath", "") is None:
                    callback.dirpath = os.path.join(root, "checkpoints")
        trainer.loggers = [*loggers, ours]
    callbacks = trainer.callbacks
    mine = next((cb for cb in callbacks if isinstance(cb, _CallbackMixin)), None)
    if mine is None:
        callbacks.append(callback_class(package)(ours, config))
    else:
        mine.mltrail_logger = ours
        mine.config = config


PATCHES = tuple(
    Patch(owner=f"{package}.trainer.trainer", path=f"Trainer.{method}", pre=_pre_stage, run="none")
    for package in PACKAGES
    for method in ("fit", "validate", "test")
)


def autolog(
    *,
    disable: bool = False,
    exclusive: bool = False,
    silent: bool = False,
    log_models: bool = True,
    log_datasets: bool = True,
    log_every_n_steps: int | None = None,
    extra_tags: Mapping[str, str] | None = None,
    disable_for_unsupported_versions: bool = False,
    log_checkpoints: bool | Literal["all"] = False,
    reference_checkpoints_over: int | None = None,
) -> None:
    """Record every ``Trainer.fit``/``validate``/``test`` (Lightning and pytorch_lightning).

    Args:
        disable: stop, and restore the Trainer's methods.
        exclusive: log only into runs autolog starts, never into a run the user started.
        silent: no warnings from this integration.
        log_models: save the final weights as ``model/model.ckpt`` (a Lightning checkpoint
            with the state dict and hyperparameters).
        log_datasets: record the dataloaders' datasets as run inputs.
        log_every_n_steps: log the learning rate every n steps (default: the trainer's
            ``log_every_n_steps``). Metrics the module logs follow the trainer's setting.
        extra_tags: tags set on every run this integration starts.
        disable_for_unsupported_versions: leave Lightning versions outside the tested range alone.
        log_checkpoints: False, True (best and last checkpoints at the end) or "all".
        reference_checkpoints_over: checkpoints larger than this many bytes are recorded by
            reference (path, size, sha256) instead of copied.

    Example:
        >>> from mltrail.integrations import lightning as mltrail_lightning
        >>> mltrail_lightning.autolog(log_checkpoints=True)
        >>> Trainer(max_epochs=3).fit(model, datamodule=dm)
    """
    enable(NAME, Config(**locals()))
