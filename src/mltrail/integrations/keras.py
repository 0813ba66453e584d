"""Keras 3: a callback that records ``model.fit``, and autolog for ``Model.fit`` and ``evaluate``.

What one ``fit`` records:

* params: ``epochs``, ``batch_size``, ``steps_per_epoch``, ``initial_epoch``, ``shuffle``,
  ``validation_split`` / ``validation_freq`` when used, the optimizer's class (``optimizer``)
  and config (``optimizer.learning_rate``, ``optimizer.beta_1``...; a learning-rate schedule
  as its class and its own config), ``loss``, the compiled ``metrics``, ``model_class``,
  ``total_params`` / ``trainable_params``, and the settings of the ``EarlyStopping``,
  ``ReduceLROnPlateau`` and ``ModelCheckpoint`` callbacks of the same fit;
* ``model_summary.txt``: what ``model.summary()`` prints;
* per epoch (``step=epoch``): every number in Keras's epoch logs (``loss``, ``accuracy``,
  ``val_loss``...) and ``learning_rate`` (so a schedule or ``ReduceLROnPlateau`` shows);
* per batch, only when asked (``log_every_n_steps=n``): ``batch/<metric>`` every n steps at
  ``step=`` the global batch index, and ``batch/learning_rate`` under a schedule;
* early stopping: ``early_stopping.stopped_epoch`` (0: it did not stop),
  ``early_stopping.best_epoch`` and, with ``restore_best_weights``, ``early_stopping.restored_epoch``;
* the files ``ModelCheckpoint`` writes, under ``checkpoints/``;
* the trained model as ``model/model.keras`` when asked (autolog: ``log_models=True``),
  loadable with :func:`load_model`;
* fingerprints of the training and validation data (context ``training`` / ``validation``):
  numpy arrays (and lists or dicts of them), pandas frames, ``tf.data.Dataset`` (element spec
  and cardinality), ``keras.utils.PyDataset`` (length), a torch ``DataLoader`` (length).

``Model.evaluate`` logs ``eval_<metric>`` into the active run, or back into the run autolog
started for the ``fit`` of the same model.

Where it hooks in: ``keras.Model.fit`` and ``keras.Model.evaluate``, one class for every
backend. With TensorFlow >= 2.16, ``tf.keras.Model`` *is* ``keras.Model``, so one patch covers
both (Keras 2 behind ``TF_USE_LEGACY_KERAS=1`` is not patched).

Speed: the callback defines per-batch hooks only when per-batch logging is asked for — Keras
looks at which hooks a callback overrides to decide whether to do per-batch work at all — and
declares itself ``async_safe``, so on backends that dispatch callbacks on a worker thread
(PyTorch, JAX) training never waits for it. A batch that is not logged costs two integer
divisions.

Tested with Keras 3.0 (with numpy < 2, which Keras 3.0 needs) and 3.15 on the PyTorch backend
(torch 2.13 CPU, no TensorFlow installed), and Keras 3.15 with tensorflow-cpu 2.21; the tested
range is in :mod:`mltrail.autolog.registry`. The JAX backend goes through the same code but
is not in the test matrix.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import math
import os
import re
import string
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from mltrail.autolog import AutologConfig, Call, Patch, enable, safe_hook, safely
from mltrail.core.entities import Dataset
from mltrail.core.errors import InvalidValueError, NotFoundError, ParamConflictError

# MLTrailCallback is made on first access (module __getattr__ below), once Keras is imported.
__all__ = ["Config", "MLTrailCallback", "autolog", "dataset_fingerprint", "load_model", "log_model"]  # noqa: F822

NAME = "keras"
MODEL_FILE = "model.keras"
MODEL_META_FILE = "mltrail_model.json"
SUMMARY_FILE = "model_summary.txt"
CHECKPOINT_DIR = "checkpoints"
BATCH_PREFIX = "batch/"
EVAL_PREFIX = "eval_"
KERAS_DEFAULT_BATCH_SIZE = 32  # what fit uses for arrays when batch_size is None

_log = logging.getLogger("mltrail.integrations.keras")
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /:]")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAX_PARAM_CHARS = 6000  # the store's limit on a param value (core.validation)
_IN_MEMORY_CHECKPOINT = 256 * 1024 * 1024  # larger checkpoint files are copied from disk


# ---------------------------------------------------------------------- options
@dataclass(frozen=True)
class Config(AutologConfig):
    """Keras options, on top of the common ones.

    Attributes:
        log_model_summary: write ``model_summary.txt``.
        log_checkpoints: log the files ``ModelCheckpoint`` writes, under ``checkpoints/``.
        log_evaluate: log the metrics of ``Model.evaluate`` (``eval_<metric>``).
    """

    log_model_summary: bool = True
    log_checkpoints: bool = True
    log_evaluate: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("log_model_summary", "log_checkpoints", "log_evaluate"):
            if not isinstance(getattr(self, name), bool):
                msg = f"keras autolog option {name} must be True or False, got {getattr(self, name)!r}"
                raise InvalidValueError(msg)


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
    log_model_summary: bool = True,
    log_checkpoints: bool = True,
    log_evaluate: bool = True,
) -> None:
    """Record every ``keras.Model.fit`` (and ``evaluate``), on any backend and via ``tf.keras``.

    A ``fit`` outside any run starts a run and ends it (FINISHED, or FAILED if ``fit`` raised);
    inside an active run it logs there (a second ``fit`` in the same run gets a child run). A
    ``fit`` whose callbacks already hold an :class:`MLTrailCallback` is left to that callback.

    Args:
        disable: turn Keras autolog off and restore ``fit`` and ``evaluate``.
        exclusive: log only into runs autolog starts, never into a run the user started.
        silent: no warnings from this integration (details still go to DEBUG logging).
        log_models: save the trained model as ``model/model.keras`` (see :func:`load_model`).
        log_datasets: record fingerprints of the training, validation and evaluation data.
        log_every_n_steps: also log ``batch/<metric>`` every n training batches (None: per
            epoch only, and Keras keeps dispatching batches without any work of ours).
        extra_tags: tags set on every run autolog starts.
        disable_for_unsupported_versions: leave Keras versions outside the tested range alone.
        log_model_summary: write ``model_summary.txt``.
        log_checkpoints: log the files ``ModelCheckpoint`` writes.
        log_evaluate: log ``Model.evaluate`` metrics as ``eval_<metric>``.

    Example:
        >>> import mltrail
        >>> mltrail.keras.autolog(log_every_n_steps=50)
        >>> model.fit(x_train, y_train, epochs=5, validation_split=0.1)
        >>> model.evaluate(x_test, y_test)  # eval_loss, eval_accuracy go to the same run
    """
    enable(NAME, Config(**locals()))


# ---------------------------------------------------------------------- pure helpers
_keys: dict[str, str] = {}


def metric_key(name: str) -> str:
    """``name`` as a metric key: characters a key may not hold become ``_`` (cached)."""
    key = _keys.get(name)
    if key is None:
        key = _BAD_KEY_CHARS.sub("_", str(name)).strip().lstrip("/") or "metric"
        _keys[name] = key
    return key


def to_float(value: Any) -> float | None:
    """``value`` (a float, numpy scalar, 0-d tensor or variable) as a float; None if it is not one."""
    if type(value) is float:
        return value
    if isinstance(value, (bool, str, bytes)) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        import keras

        return float(keras.ops.convert_to_numpy(value))
    except Exception:  # noqa: BLE001 - anything that will not become one number is skipped
        return None


def numeric_logs(logs: Mapping[str, Any] | None, prefix: str = "") -> dict[str, float]:
    """The numbers in a Keras ``logs`` dict as ``{metric key: float}``, under ``prefix``."""
    out: dict[str, float] = {}
    if not logs:
        return out
    for name, value in logs.items():
        number = value if type(value) is float else to_float(value)
        if number is not None:
            out[prefix + metric_key(name)] = number
    return out


def param_text(value: Any) -> str | None:
    """A param value as stored text; None for values that say nothing (None, empty)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, float):
        text = _short_float(value)
    elif callable(value) and not isinstance(value, type):
        text = getattr(value, "__name__", None) or type(value).__name__
    else:
        text = str(value)
    if not text:
        return None
    if len(text) > _MAX_PARAM_CHARS:
        text = text[: _MAX_PARAM_CHARS - 3] + "..."
    return text


def _short_float(value: float) -> str:
    """``repr(value)``, or the shorter float32 text when ``value`` is a float32 widened.

    Keras keeps hyperparameters in float32 variables: ``0.005`` comes back from ``get_config()``
    as ``0.004999999888241291``; the param should read what the user wrote.
    """
    text = repr(value)
    if len(text) > 10 and math.isfinite(value):
        import numpy as np

        single = np.float32(value)
        if float(single) == value:
            return str(single)
    return text


def flatten_config(prefix: str, value: Any, out: dict[str, str] | None = None) -> dict[str, str]:
    """Flatten a (serialized) Keras config into ``{"prefix.key": text}`` params.

    A serialized Keras object (``{"class_name": ..., "config": {...}}``, as a learning-rate
    schedule inside an optimizer's config) becomes ``prefix = class name`` plus its config
    under ``prefix.``; ``name`` entries and None values are left out.
    """
    out = {} if out is None else out
    if value is None:
        return out
    if isinstance(value, Mapping):
        if "class_name" in value and "config" in value:
            config = value["config"]
            if value["class_name"] == "function" and isinstance(config, str):
                out[prefix] = config
                return out
            out[prefix] = str(value["class_name"])
            if isinstance(config, Mapping):
                for key, item in config.items():
                    if key != "name":
                        flatten_config(f"{prefix}.{key}", item, out)
            return out
        for key, item in value.items():
            if key != "name":
                flatten_config(f"{prefix}.{key}", item, out)
        return out
    text = param_text(value)
    if text is not None:
        out[prefix] = text
    return out


def describe(obj: Any) -> str | None:
    """A short name for a loss or metric as ``compile`` got it (string, object or serialized)."""
    if obj is None:
        return None
    if isinstance(obj, str):
        return obj
    if isinstance(obj, Mapping):
        if "class_name" in obj:
            config = obj.get("config")
            if isinstance(config, str):
                return config
            if isinstance(config, Mapping) and isinstance(config.get("name"), str):
                return str(config["name"])
            return str(obj["class_name"])
        parts = [f"{k}: {d}" for k, d in ((k, describe(v)) for k, v in obj.items()) if d]
        return ", ".join(parts) or None
    if isinstance(obj, (list, tuple)):
        parts = [d for d in (describe(v) for v in obj) if d]
        return ", ".join(parts) or None
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(obj, "__name__", None) or type(obj).__name__


def optimizer_params(optimizer: Any) -> dict[str, str]:
    """``optimizer`` (its class) and ``optimizer.<key>`` for its config."""
    if optimizer is None:
        return {}
    params = {"optimizer": type(optimizer).__name__}
    try:
        config = optimizer.get_config()
    except Exception:  # noqa: BLE001 - a custom optimizer without a config still has a class
        _log.debug("optimizer %r has no usable get_config()", optimizer, exc_info=True)
        return params
    flatten_config("optimizer", config, params)
    params["optimizer"] = type(optimizer).__name__
    return params


def compile_params(model: Any) -> dict[str, str]:
    """``loss``, ``metrics`` and ``loss_weights`` as the model was compiled."""
    try:
        config = model.get_compile_config() or {}
    except Exception:  # noqa: BLE001 - e.g. a lambda loss that does not serialize
        config = {}
    if not config:
        config = {"loss": getattr(model, "loss", None)}
    params: dict[str, str] = {}
    for key in ("loss", "metrics", "weighted_metrics", "loss_weights"):
        value = config.get(key)
        text = param_text(value) if key == "loss_weights" else describe(value)
        if text:
            params[key] = text
    return params


def model_params(model: Any) -> dict[str, str]:
    """``model_class``, ``total_params`` and ``trainable_params``."""
    params = {"model_class": type(model).__name__}
    try:
        params["total_params"] = str(int(model.count_params()))
        params["trainable_params"] = str(
            sum(math.prod(int(d) for d in w.shape) for w in model.trainable_weights)
        )
    except Exception:  # noqa: BLE001 - an unbuilt model has no weights to count yet
        _log.debug("cannot count the parameters of %r", model, exc_info=True)
    return params


def callback_params(callbacks: Iterable[Any]) -> dict[str, str]:
    """The settings of the EarlyStopping, ReduceLROnPlateau and ModelCheckpoint callbacks."""
    import keras

    wanted = (
        (keras.callbacks.EarlyStopping, "early_stopping",
         ("monitor", "patience", "min_delta", "mode", "baseline", "restore_best_weights",
          "start_from_epoch")),
        (keras.callbacks.ReduceLROnPlateau, "reduce_lr",
         ("monitor", "factor", "patience", "min_delta", "cooldown", "min_lr", "mode")),
        (keras.callbacks.ModelCheckpoint, "checkpoint",
         ("filepath", "monitor", "save_best_only", "save_weights_only", "save_freq", "mode")),
    )
    params: dict[str, str] = {}
    for cb in callbacks:
        for cls, prefix, attrs in wanted:
            if isinstance(cb, cls) and not any(k.startswith(prefix + ".") for k in params):
                for attr in attrs:
                    text = param_text(getattr(cb, attr, None))
                    if text is not None:
                        params[f"{prefix}.{attr}"] = text
    return params


def model_summary(model: Any) -> str | None:
    """What ``model.summary()`` prints, as plain text; None for a model not built yet."""
    lines: list[str] = []

    def sink(text: Any, *args: Any, **kwargs: Any) -> None:
        lines.append(str(text))

    try:
        model.summary(print_fn=sink)
    except ValueError:  # "This model has not yet been built"
        return None
    text = _ANSI.sub("", "\n".join(lines)).rstrip()
    return text + "\n" if text else None


def current_learning_rate(optimizer: Any) -> float | None:
    """The optimizer's learning rate now (a schedule evaluated at the current iteration)."""
    if optimizer is None:
        return None
    try:
        value = optimizer.learning_rate
    except Exception:  # noqa: BLE001 - an optimizer without a learning rate
        return None
    return to_float(value)


def learning_rate_schedule(optimizer: Any) -> Any:
    """The optimizer's ``LearningRateSchedule``, or None for a fixed (variable) rate."""
    import keras

    schedule = getattr(optimizer, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return schedule
    return None


# ---------------------------------------------------------------------- datasets
def _is_array(value: Any) -> bool:
    import numpy as np

    return isinstance(value, np.ndarray)


def _arrays(value: Any) -> dict[str, Any] | None:
    """``value`` as ``{name: ndarray}`` when it is an array or a list/tuple/dict of arrays."""
    if value is None:
        return None
    if _is_array(value):
        return {"": value}
    module = type(value).__module__ or ""
    if module.startswith("torch") and hasattr(value, "device") and hasattr(value, "detach"):
        if getattr(value.device, "type", "cpu") != "cpu":
            return None  # never copy a device tensor to fingerprint it
        return {"": value.detach().numpy()}
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return None
    out: dict[str, Any] = {}
    for key, item in items:
        sub = _arrays(item) if not isinstance(item, (Mapping, list, tuple)) else None
        if sub is None:
            return None  # Python numbers, nested structures: not described
        out[key] = sub[""]
    return out or None


def dataset_fingerprint(x: Any, y: Any = None, *, name: str | None = None) -> Dataset | None:
    """A fingerprint of what ``fit`` trains on; None for data that cannot be described cheaply.

    Never copies or iterates the data: arrays are hashed in place (sampled rows), a
    ``tf.data.Dataset`` is described by its element spec and cardinality, a ``PyDataset`` or
    torch ``DataLoader`` by its class and length. A Python generator gives None.

    Example:
        >>> ds = mltrail.keras.dataset_fingerprint(x_train, y_train, name="digits")
        >>> mltrail.log_input(ds, context="training")
    """
    from mltrail.core import datasets

    if x is None:
        return None
    if isinstance(x, Dataset):
        return x
    module = type(x).__module__ or ""
    if module.startswith("tensorflow") and hasattr(x, "element_spec"):
        return _tf_dataset(x, name)
    if module.startswith("pandas") and hasattr(x, "columns"):
        return datasets.from_pandas(x, name=name)
    features = _arrays(x)
    if features is not None:
        targets = _arrays(y) if y is not None else None
        if set(features) == {""} and (targets is None or set(targets) == {""}):
            return datasets.from_numpy(features[""], None if targets is None else targets[""], name=name)
        return _multi_array_dataset(features, targets or {}, name)
    length = _length(x)
    if length is not None:
        kind = _container_kind(x)
        extra = {"batch_size": getattr(x, "batch_size", None)}
        return _described(kind, name, {"num_batches": length, **extra}, [type(x).__qualname__, length])
    return None


def _length(x: Any) -> int | None:
    """The number of batches of a PyDataset or DataLoader-like container (not of a list)."""
    if isinstance(x, (list, tuple, dict, str, bytes)) or not hasattr(x, "__len__"):
        return None
    if hasattr(x, "__next__") or not (hasattr(x, "__getitem__") or hasattr(x, "__iter__")):
        return None
    try:
        return len(x)
    except Exception:  # noqa: BLE001 - a container without a length
        return None


def _container_kind(x: Any) -> str:
    module = type(x).__module__ or ""
    try:
        import keras

        if isinstance(x, keras.utils.PyDataset):
            return "keras.PyDataset"
    except Exception:  # noqa: BLE001 - Keras versions without PyDataset
        pass
    if module.startswith("torch"):
        return f"torch.{type(x).__name__}"
    return f"{module.split('.')[0]}.{type(x).__name__}" if module else type(x).__name__


def _multi_array_dataset(features: Mapping[str, Any], targets: Mapping[str, Any], name: str | None) -> Dataset:
    from mltrail.core import datasets

    h = hashlib.sha256()
    schema: dict[str, Any] = {"features": {}, "targets": {}}
    rows = None
    for part, arrays in (("features", features), ("targets", targets)):
        for key, arr in arrays.items():
            fp = datasets.from_numpy(arr)
            h.update(f"{part}:{key}:{fp.digest}".encode())
            schema[part][key or "0"] = {"dtype": str(arr.dtype), "shape": [-1, *arr.shape[1:]]}
            if rows is None and arr.ndim:
                rows = int(arr.shape[0])
    digest = h.hexdigest()[:16]
    return Dataset(
        name=name or f"dataset-{digest[:8]}",
        digest=digest,
        source_type="numpy",
        source=json.dumps({"source": "in-memory"}),
        schema=json.dumps(schema),
        profile=json.dumps({"num_rows": rows}),
    )


def _plain_spec(spec: Any) -> Any:
    """A ``tf.data`` element spec as JSON-able structure: ``{"shape": [...], "dtype": "float32"}``."""
    if isinstance(spec, Mapping):
        return {str(k): _plain_spec(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return [_plain_spec(v) for v in spec]
    shape = getattr(spec, "shape", None)
    dtype = getattr(spec, "dtype", None)
    if shape is not None and dtype is not None:
        try:
            dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
        except ValueError:  # unknown rank
            dims = None
        return {"shape": dims, "dtype": getattr(dtype, "name", str(dtype))}
    return str(spec)


def _tf_dataset(ds: Any, name: str | None) -> Dataset:
    spec = _plain_spec(ds.element_spec)
    try:
        cardinality: int | None = int(ds.cardinality())
    except Exception:  # noqa: BLE001 - a dataset that cannot tell
        cardinality = None
    profile = {
        # tf.data.INFINITE_CARDINALITY is -1, UNKNOWN_CARDINALITY is -2
        "num_batches": cardinality if cardinality is not None and cardinality >= 0 else None,
        "infinite": cardinality == -1,
    }
    return _described("tf.data.Dataset", name, profile, [spec, cardinality], schema={"element_spec": spec})


def _described(
    kind: str, name: str | None, profile: dict[str, Any], identity: list[Any], *, schema: Any = None
) -> Dataset:
    digest = hashlib.sha256(json.dumps([kind, *identity], default=str).encode()).hexdigest()[:16]
    return Dataset(
        name=name or f"dataset-{digest[:8]}",
        digest=digest,
        source_type=kind,
        source=json.dumps({"source": "in-memory"}),
        schema=json.dumps(schema) if schema is not None else None,
        profile=json.dumps(profile, default=str),
    )


def split_for_validation(x: Any, y: Any, validation_split: float) -> tuple[Any, Any, Any, Any]:
    """``(x_train, y_train, x_val, y_val)`` as ``fit(validation_split=...)`` cuts arrays (views)."""
    features = _arrays(x)
    if not validation_split or features is None:
        return x, y, None, None
    n = next((int(a.shape[0]) for a in features.values() if a.ndim), 0)
    split_at = math.floor(n * (1.0 - validation_split))

    def cut(value: Any, start: int, end: int | None) -> Any:
        if value is None:
            return None
        if isinstance(value, Mapping):
            return {k: cut(v, start, end) for k, v in value.items()}
        if isinstance(value, (list, tuple)) and not _is_array(value):
            return type(value)(cut(v, start, end) for v in value)
        return value[start:end]

    return cut(x, 0, split_at), cut(y, 0, split_at), cut(x, split_at, None), cut(y, split_at, None)


# ---------------------------------------------------------------------- where to log
class _IdRun:
    """Log into a run given by id, through :class:`mltrail.Client` (``MLTrailCallback(run_id=...)``)."""

    owned = False

    def __init__(self, run_id: str) -> None:
        from mltrail.core.client import Client

        self.run_id = run_id
        self._client = Client()

    def __bool__(self) -> bool:
        return True

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mltrail.core.entities import Param

        if params:
            self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mltrail.core.entities import Metric

        if metrics:
            now = int(time.time() * 1000)
            self._client.log_batch(
                self.run_id, metrics=[Metric(k, v, now, step or 0) for k, v in metrics.items()]
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, value)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        self._client.log_bytes(self.run_id, data, artifact_file)

    def log_dict(self, dictionary: Any, artifact_file: str) -> None:
        self._client.log_dict(self.run_id, dictionary, artifact_file)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, local_path, artifact_path)

    def log_input(self, dataset: Any, context: str | None = None) -> None:
        self._client.log_inputs(self.run_id, [dataset], context)


def _resolve_run(run_id: str | None) -> tuple[Any, Any]:
    """Where a callback used by hand logs: ``(sink, the run it started or None)``."""
    from mltrail.autolog.runs import NO_RUN, RunHandle, _global_rank
    from mltrail.core import fluent

    if _global_rank() != 0:
        return NO_RUN, None  # under distributed training only global rank zero logs
    if run_id is not None:
        return _IdRun(run_id), None
    active = fluent.active_run()
    if active is not None:
        return RunHandle(active, NAME, owned=False), None
    started = fluent.start_run()
    return RunHandle(started, NAME, owned=True), started


def _log_params(run: Any, params: Mapping[str, str]) -> None:
    """Log ``params``, leaving out those the run already holds with another value."""
    try:
        run.log_params(params)
    except ParamConflictError:
        for key, value in params.items():
            try:
                run.log_params({key: value})
            except ParamConflictError:
                _log.debug("param %s already logged with another value; kept the first", key)


# ---------------------------------------------------------------------- the fit being run
@dataclass
class _FitContext:
    """What the callback knows of the ``fit`` it serves: the other callbacks and the data."""

    callbacks: list[Any] = field(default_factory=list)
    x: Any = None
    y: Any = None
    batch_size: Any = None
    validation_split: Any = 0.0
    validation_data: Any = None
    validation_freq: Any = 1
    initial_epoch: Any = 0
    shuffle: Any = True
    class_weight: Any = None

    @classmethod
    def of(cls, arguments: Mapping[str, Any], callbacks: Iterable[Any]) -> _FitContext:
        names = ("x", "y", "batch_size", "validation_split", "validation_data", "validation_freq",
                 "initial_epoch", "shuffle", "class_weight")
        found = {k: arguments[k] for k in names if k in arguments}
        return cls(callbacks=list(callbacks), **found)

    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        batch_size = self.batch_size
        if batch_size is None:
            if _arrays(self.x) is not None:
                batch_size = KERAS_DEFAULT_BATCH_SIZE
            else:
                batch_size = getattr(self.x, "batch_size", None)
        for key, value in (
            ("batch_size", batch_size),
            ("initial_epoch", self.initial_epoch),
            ("shuffle", self.shuffle if isinstance(self.shuffle, (bool, str)) else None),
            ("validation_split", self.validation_split or None),
            ("validation_freq", self.validation_freq if self.validation_freq != 1 else None),
            ("class_weight", self.class_weight),
        ):
            text = param_text(value)
            if text is not None:
                out[key] = text
        return out

    def datasets(self) -> list[tuple[Dataset, str]]:
        x, y = self.x, self.y
        val_x = val_y = None
        if self.validation_data is not None:
            val = self.validation_data
            if isinstance(val, tuple) and len(val) in (2, 3):
                val_x, val_y = val[0], val[1]
            else:
                val_x = val
        elif self.validation_split:
            x, y, val_x, val_y = split_for_validation(x, y, float(self.validation_split))
        out = []
        for data, targets, context in ((x, y, "training"), (val_x, val_y, "validation")):
            ds = dataset_fingerprint(data, targets)
            if ds is not None:
                out.append((ds, context))
        return out


def _discover_context(callback: Any) -> _FitContext:
    """The fit's callbacks and arguments, read from the frames of Keras's ``fit``.

    A callback passed by hand is not told which other callbacks it runs with, nor what data it
    trains on. ``CallbackList.on_train_begin`` holds the list (as ``self``) and is called by the
    trainer's ``fit``, whose locals hold the data (already split when ``validation_split`` was
    used). Anything not found is simply not logged.
    """
    import keras

    frame: FrameType | None = sys._getframe(1)
    peers: list[Any] | None = None
    for _ in range(24):
        if frame is None:
            break
        f_locals = frame.f_locals
        owner = f_locals.get("self")
        if peers is None:
            if isinstance(owner, keras.callbacks.CallbackList) and any(
                cb is callback for cb in owner.callbacks
            ):
                peers = list(owner.callbacks)
        elif frame.f_code.co_name == "fit" and hasattr(owner, "optimizer"):
            return _FitContext.of(f_locals, peers)
        frame = frame.f_back
    return _FitContext(callbacks=peers or [callback])


# ---------------------------------------------------------------------- checkpoints
def _filename_pattern(basename: str) -> re.Pattern[str]:
    """A regex for the names a ModelCheckpoint ``filepath`` like ``ckpt-{epoch:02d}.keras`` gives."""
    try:
        parts = []
        for literal, field_name, _spec, _conv in string.Formatter().parse(basename):
            parts.append(re.escape(literal))
            if field_name is not None:
                parts.append(".+?")
        return re.compile("".join(parts))
    except ValueError:
        return re.compile(re.escape(basename))


class _CheckpointWatch:
    """The files one ModelCheckpoint writes: new or rewritten ones since the last look."""

    def __init__(self, filepath: str) -> None:
        directory, basename = os.path.split(os.path.abspath(os.fspath(filepath)))
        self.directory = directory
        self.pattern = _filename_pattern(basename)
        self.seen = self._scan()  # files there before training are not this fit's

    def _scan(self) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if self.pattern.fullmatch(entry.name) and entry.is_file():
                        st = entry.stat()
                        found[entry.name] = (st.st_mtime_ns, st.st_size)
        except OSError:
            pass
        return found

    def changed(self) -> list[str]:
        now = self._scan()
        fresh = [name for name, stamp in now.items() if self.seen.get(name) != stamp]
        self.seen = now
        return [os.path.join(self.directory, name) for name in sorted(fresh)]


class _CheckpointUploader:
    """Copies checkpoint files into the run off the training thread (one worker, in order).

    The file is read at once (it was just written, so it comes from the page cache) and the
    bytes are written to the artifact store on the worker, so a checkpoint rewritten at the next
    epoch cannot be copied half-way.
    """

    def __init__(self, run: Any, watches: list[_CheckpointWatch]) -> None:
        self.run = run
        self.watches = watches
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.futures: list[concurrent.futures.Future[Any]] = []

    def collect(self) -> None:
        for watch in self.watches:
            for path in watch.changed():
                artifact = f"{CHECKPOINT_DIR}/{os.path.basename(path)}"
                if self.pool is None:
                    self.pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=1, thread_name_prefix="mltrail-keras-checkpoints"
                    )
                if os.path.getsize(path) <= _IN_MEMORY_CHECKPOINT:
                    with open(path, "rb") as fh:
                        data = fh.read()
                    self.futures.append(self.pool.submit(self.run.log_bytes, data, artifact))
                else:
                    self.futures.append(self.pool.submit(self.run.log_artifact, path, CHECKPOINT_DIR))

    def finish(self) -> None:
        """Wait for the copies; raise the first failure (reported by the caller's safety net)."""
        pool, self.pool = self.pool, None
        futures, self.futures = self.futures, []
        if pool is not None:
            pool.shutdown(wait=True)
        for future in futures:
            future.result()


# ---------------------------------------------------------------------- models
def _log_model_to(run: Any, model: Any, artifact_path: str = "model") -> None:
    import keras

    with tempfile.TemporaryDirectory(prefix="mltrail-keras-") as tmp:
        path = os.path.join(tmp, MODEL_FILE)
        model.save(path)
        run.log_artifact(path, artifact_path)
    run.log_dict(
        {
            "flavor": NAME,
            "file": MODEL_FILE,
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
            "model_class": type(model).__name__,
        },
        f"{artifact_path}/{MODEL_META_FILE}",
    )


def log_model(model: Any, artifact_path: str = "model", *, run_id: str | None = None) -> None:
    """Save ``model`` in the ``.keras`` format as an artifact of the active run (or ``run_id``).

    Example:
        >>> with mltrail.start_run() as run:
        ...     model.fit(x, y)
        ...     mltrail.keras.log_model(model)
        >>> same = mltrail.keras.load_model(run.info.run_id)
    """
    from mltrail.core import fluent

    if run_id is not None:
        _log_model_to(_IdRun(run_id), model, artifact_path)
        return
    active = fluent.active_run()
    if active is None:
        msg = "log_model needs an active run (mltrail.start_run()) or run_id="
        raise InvalidValueError(msg)
    _log_model_to(_IdRun(active.info.run_id), model, artifact_path)


def load_model(run_id: str, artifact_path: str = "model", **kwargs: Any) -> Any:
    """Load a model logged by this integration (``runs:/<run_id>/<path>`` also works).

    Args:
        run_id: the run, or a ``runs:/<run_id>/<artifact_path>`` URI.
        artifact_path: where in the run's artifacts the model is.
        **kwargs: passed to ``keras.saving.load_model`` (``custom_objects=``, ``compile=``...).

    Example:
        >>> model = mltrail.keras.load_model(run_id)
        >>> model.predict(x_test)
    """
    from mltrail.core.client import Client

    if run_id.startswith("runs:/"):
        run_id, _, path = run_id[len("runs:/"):].partition("/")
        artifact_path = path.strip("/") or artifact_path
    local = Client().download_artifacts(run_id, artifact_path)
    meta_path = os.path.join(local, MODEL_META_FILE)
    if not os.path.isfile(meta_path):
        msg = f"run {run_id} has no Keras model at {artifact_path!r} (no {MODEL_META_FILE} there)"
        raise NotFoundError(msg)
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("flavor") != NAME:
        msg = (
            f"the model at {artifact_path!r} of run {run_id} was logged by the "
            f"{meta.get('flavor')!r} integration; load it with mltrail.{meta.get('flavor')}.load_model"
        )
        raise InvalidValueError(msg)
    import keras

    return keras.saving.load_model(os.path.join(local, meta.get("file", MODEL_FILE)), **kwargs)


# ---------------------------------------------------------------------- the callback
_classes: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    # The callback classes subclass keras.callbacks.Callback, so they are made on first use:
    # importing this module (autolog before `import keras`) must not import Keras, which would
    # fix its backend before the user's script has chosen one.
    if name == "MLTrailCallback":
        return callback_class()
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def callback_class() -> type:
    """:class:`MLTrailCallback`, made (once) now that Keras is imported."""
    cls = _classes.get("MLTrailCallback")
    if cls is None:
        cls = _classes["MLTrailCallback"] = _make_callback_class()
    return cls


def _validated_every(n: object) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        msg = f"log_every_n_steps must be a positive int or None, got {n!r}"
        raise InvalidValueError(msg)
    return n


def _raise(exc: BaseException) -> None:
    raise exc


def _make_callback_class() -> type:
    import keras

    class MLTrailCallback(keras.callbacks.Callback):  # type: ignore[misc]
        """Record a Keras ``fit`` into an mltrail run: params, metrics, model, data, checkpoints.

        Logs into the run given by ``run_id``, else the active run, else a run it starts at
        ``on_train_begin`` and ends at ``on_train_end`` (Keras tells callbacks nothing when
        ``fit`` raises: that run stays active until this callback's next ``fit`` ends it
        FAILED, or the interpreter exits; autolog has no such gap). With autolog on,
        ``fit`` adds one by itself; passing one by hand takes its place (nothing is logged
        twice). A callback passed by hand finds the other callbacks of the ``fit`` and its
        data by looking at Keras's ``fit`` on the call stack, once per ``fit``.

        Args:
            run_id: log into this run (by id) instead of the active one.
            log_every_n_steps: also log ``batch/<metric>`` every n training batches. None (the
                default) logs per epoch only and adds no per-batch work at all.
            log_model: save the trained model as ``model/model.keras`` at the end of training.
            log_model_summary: write ``model_summary.txt``.
            log_datasets: record fingerprints of the training and validation data.
            log_checkpoints: log the files ``ModelCheckpoint`` callbacks write.
            log_params: log the fit's params (epochs, optimizer, loss...).

        Example:
            >>> from mltrail.integrations.keras import MLTrailCallback
            >>> with mltrail.start_run():
            ...     model.fit(x, y, epochs=5, callbacks=[MLTrailCallback(log_every_n_steps=10)])
        """

        # Keras 3 dispatches batch hooks of async-safe callbacks on a worker thread instead of
        # making the training loop wait; ours only enqueue (under a lock) and keep no state
        # that the training thread reads during the epoch.
        async_safe = True
        # tf.keras 2 would otherwise convert every batch's logs to numpy for us.
        _supports_tf_logs = True

        def __init__(
            self,
            *,
            run_id: str | None = None,
            log_every_n_steps: int | None = None,
            log_model: bool = False,
            log_model_summary: bool = True,
            log_datasets: bool = True,
            log_checkpoints: bool = True,
            log_params: bool = True,
        ) -> None:
            super().__init__()
            self.run_id = run_id
            self.log_every_n_steps = _validated_every(log_every_n_steps)
            self._every: int = self.log_every_n_steps or 1
            self._per_call = 1  # training steps per batch hook call (steps_per_execution)
            self.log_model = log_model
            self.log_model_summary = log_model_summary
            self.log_datasets = log_datasets
            self.log_checkpoints = log_checkpoints
            self.log_params = log_params
            self._handle: Any = None  # given by autolog: the run its patched fit owns
            self._context: _FitContext | None = None  # given by autolog, else discovered
            self._run: Any = None  # where this fit logs
            self._started: Any = None  # a run this callback started itself
            self._lock = threading.Lock()
            self._batch_error: BaseException | None = None
            self._steps: int | None = None
            self._epoch_base = 0  # global index of the current epoch's first batch
            self._seen = 0  # batches seen this epoch, when Keras does not know the count
            self._iteration_offset = 0
            self._schedule: Any = None
            self._batch_keys: dict[str, str] = {}  # Keras's name -> our key, made once each
            self._uploader: _CheckpointUploader | None = None
            if self.log_every_n_steps is not None:
                # Keras decides whether a fit needs per-batch callback work by looking at which
                # batch hooks its callbacks override: override it only when it will be used.
                self.on_train_batch_end = self._on_train_batch_end

        # -------------------------------------------------------------- hooks
        @safe_hook(NAME, "on_train_begin")
        def on_train_begin(self, logs: Any = None) -> None:
            self._batch_error = None
            self._uploader = None
            stale = self._started
            if stale is not None and not getattr(stale, "_ended", False):
                # The run started for a fit that raised (Keras calls no hook then): end it
                # FAILED before it is taken for the active run of this fit.
                from mltrail.core import fluent

                fluent._end(stale, "FAILED")
            if self._handle is not None:
                self._run, self._started = self._handle, None
            else:
                self._run, self._started = _resolve_run(self.run_id)
            run = self._run
            if not run:
                return
            model = self.model
            context = self._context if self._context is not None else _discover_context(self)
            self._context = context
            params = self.params or {}
            self._steps = params.get("steps")
            initial = int(context.initial_epoch or 0)
            self._epoch_base = initial * self._steps if self._steps else 0
            self._seen = 0
            per_call = getattr(model, "steps_per_execution", 1)
            self._per_call = per_call if isinstance(per_call, int) and per_call > 0 else 1
            if self.log_every_n_steps is not None:
                safely(NAME, "schedule", self._find_schedule, model, initial)
            if self.log_params:
                safely(NAME, "params", self._log_fit_params, run, model, context, params)
            if self.log_model_summary:
                safely(NAME, "model_summary", self._log_summary, run, model)
            if self.log_datasets:
                safely(NAME, "datasets", self._log_datasets, run, context)
            if self.log_checkpoints:
                safely(NAME, "checkpoints", self._watch_checkpoints, run, context)

        @safe_hook(NAME, "on_epoch_begin")
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            if self._steps:
                self._epoch_base = epoch * self._steps

        @safe_hook(NAME, "on_epoch_end")
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            run = self._run
            if not run:
                return
            metrics = numeric_logs(logs)
            if "learning_rate" not in metrics:
                lr = current_learning_rate(getattr(self.model, "optimizer", None))
                if lr is not None:
                    metrics["learning_rate"] = lr
            run.log_metrics(metrics, step=epoch)
            if self.log_every_n_steps is not None:
                if not self._steps:
                    self._epoch_base += self._seen
                    self._seen = 0
                self._report_batch_error()
            if self._uploader is not None:
                safely(NAME, "checkpoints", self._uploader.collect)

        @safe_hook(NAME, "on_train_end")
        def on_train_end(self, logs: Any = None) -> None:
            run, started = self._run, self._started
            try:
                if run:
                    if self.log_every_n_steps is not None:
                        self._report_batch_error()
                    if self._uploader is not None:
                        safely(NAME, "checkpoints", self._finish_checkpoints, self._uploader)
                    context = self._context or _FitContext()
                    safely(NAME, "early_stopping", self._log_early_stopping, run, context)
                    if self.log_model:
                        safely(NAME, "log_model", _log_model_to, run, self.model)
            finally:
                # Drop the references to this fit's data; a callback used by hand looks again
                # at its next fit.
                self._run = self._started = self._uploader = self._context = None
                if started is not None and not getattr(started, "_ended", False):
                    started.__exit__(None, None, None)

        # -------------------------------------------------------------- per batch
        def _on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            # On the PyTorch and JAX backends this runs on Keras's worker thread. A failure is
            # kept and reported from the training thread at the epoch's end, so that the
            # warning names the user's line (and strict mode raises it there).
            steps = self._steps
            if steps is None:
                with self._lock:
                    if batch >= self._seen:
                        self._seen = batch + 1
            elif batch >= steps:  # the last execution of an epoch, reported as a full one
                batch = steps - 1
            step = self._epoch_base + batch
            # Log when a multiple of n lies in the steps this call covers: one step, or
            # steps_per_execution steps on TensorFlow, where Keras reports only the last.
            every = self._every
            if step // every == (step - self._per_call) // every or not logs or self._run is None:
                return
            try:
                self._log_batch(step, logs)
            except Exception as exc:  # noqa: BLE001 - reported by _report_batch_error
                if self._batch_error is None:
                    self._batch_error = exc

        def _log_batch(self, step: int, logs: Mapping[str, Any]) -> None:
            keys = self._batch_keys
            metrics: dict[str, float] = {}
            for name, value in logs.items():
                key = keys.get(name)
                if key is None:
                    key = keys[name] = BATCH_PREFIX + metric_key(name)
                if type(value) is not float:
                    value = to_float(value)
                    if value is None:
                        continue
                metrics[key] = value
            schedule = self._schedule
            if schedule is not None:
                lr = to_float(schedule(step + self._iteration_offset))
                if lr is not None:
                    metrics[BATCH_PREFIX + "learning_rate"] = lr
            with self._lock:
                self._run.log_metrics(metrics, step=step)

        def _report_batch_error(self) -> None:
            error, self._batch_error = self._batch_error, None
            if error is not None:
                safely(NAME, "on_train_batch_end", _raise, error)
            else:
                # The point is reached every epoch, so the fault-injection harness covers it.
                safely(NAME, "on_train_batch_end", _noop)

        # -------------------------------------------------------------- steps of on_train_begin
        def _find_schedule(self, model: Any, initial_epoch: int) -> None:
            optimizer = getattr(model, "optimizer", None)
            self._schedule = learning_rate_schedule(optimizer)
            if optimizer is not None and self._schedule is not None:
                iterations = int(to_float(optimizer.iterations) or 0)
                self._iteration_offset = iterations - self._epoch_base

        def _log_fit_params(self, run: Any, model: Any, context: _FitContext, params: Mapping[str, Any]) -> None:
            out: dict[str, str] = {}
            for key, value in (("epochs", params.get("epochs")), ("steps_per_epoch", params.get("steps"))):
                text = param_text(value)
                if text is not None:
                    out[key] = text
            out.update(context.params())
            out.update(optimizer_params(getattr(model, "optimizer", None)))
            out.update(compile_params(model))
            out.update(model_params(model))
            out.update(callback_params(context.callbacks))
            _log_params(run, out)
            run.set_tags({"keras.backend": keras.backend.backend()})

        def _log_summary(self, run: Any, model: Any) -> None:
            text = model_summary(model)
            if text:
                run.log_text(text, SUMMARY_FILE)

        def _log_datasets(self, run: Any, context: _FitContext) -> None:
            for dataset, where in context.datasets():
                run.log_input(dataset, context=where)

        def _watch_checkpoints(self, run: Any, context: _FitContext) -> None:
            watches = [
                _CheckpointWatch(cb.filepath)
                for cb in context.callbacks
                if isinstance(cb, keras.callbacks.ModelCheckpoint)
                and isinstance(getattr(cb, "filepath", None), (str, os.PathLike))
                and "{" not in os.path.dirname(os.fspath(cb.filepath))
            ]
            if watches:
                self._uploader = _CheckpointUploader(run, watches)

        @staticmethod
        def _finish_checkpoints(uploader: _CheckpointUploader) -> None:
            try:
                uploader.collect()
            finally:
                uploader.finish()

        @staticmethod
        def _log_early_stopping(run: Any, context: _FitContext) -> None:
            for cb in context.callbacks:
                if isinstance(cb, keras.callbacks.EarlyStopping):
                    metrics = {"early_stopping.stopped_epoch": float(cb.stopped_epoch)}
                    best = getattr(cb, "best_epoch", None)
                    if isinstance(best, int):
                        metrics["early_stopping.best_epoch"] = float(best)
                        if cb.restore_best_weights and getattr(cb, "best_weights", None) is not None:
                            metrics["early_stopping.restored_epoch"] = float(best)
                    run.log_metrics(metrics, step=0)
                    return

    MLTrailCallback.__module__ = __name__
    MLTrailCallback.__qualname__ = "MLTrailCallback"
    return MLTrailCallback


def _noop() -> None:
    return None


def _eval_callback_class() -> type:
    cls = _classes.get("_EvalCallback")
    if cls is not None:
        return cls
    import keras

    class _EvalCallback(keras.callbacks.Callback):  # type: ignore[misc]
        """Keeps the final logs of one ``evaluate`` (no batch hooks: nothing per batch)."""

        def __init__(self) -> None:
            super().__init__()
            self.logs: dict[str, Any] | None = None

        @safe_hook(NAME, "on_test_end")
        def on_test_end(self, logs: Any = None) -> None:
            self.logs = dict(logs or {})

    cls = _classes["_EvalCallback"] = _EvalCallback
    return cls


# ---------------------------------------------------------------------- the patches
_positions: dict[tuple[type, str], dict[str, int]] = {}


def _arguments(call: Call, method: str) -> dict[str, Any]:
    """The call's arguments by name (positional ones included), for ``Model.<method>``."""
    positions = _method_positions(call.instance, method)
    named = {name: call.args[i] for name, i in positions.items() if i < len(call.args)}
    named.update(call.kwargs)
    return named


def _method_positions(instance: Any, method: str) -> dict[str, int]:
    import inspect

    key = (type(instance), method)
    found = _positions.get(key)
    if found is None:
        try:
            params = list(inspect.signature(getattr(type(instance), method)).parameters.values())[1:]
        except (TypeError, ValueError):
            params = []
        found = _positions[key] = {
            p.name: i for i, p in enumerate(params) if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
    return found


def _with_callback(call: Call, method: str, callback: Any) -> bool:
    """Add ``callback`` to the call's ``callbacks`` argument; False if that cannot be done."""
    import keras

    positions = _method_positions(call.instance, method)
    index = positions.get("callbacks")
    positional = "callbacks" not in call.kwargs and index is not None and index < len(call.args)
    current = call.args[index] if positional and index is not None else call.kwargs.get("callbacks")
    if isinstance(current, keras.callbacks.CallbackList):
        _log.debug("fit got a CallbackList: not adding mltrail's callback to it")
        return False
    if current is None:
        listed: list[Any] = []
    elif isinstance(current, (list, tuple)):
        listed = list(current)
    else:
        listed = [current]
    listed.append(callback)
    if positional and index is not None:
        args = list(call.args)
        args[index] = listed
        call.args = tuple(args)
    else:
        call.kwargs["callbacks"] = listed
    return True


def _has_our_callback(callbacks: Any) -> bool:
    cls = _classes.get("MLTrailCallback")
    if cls is None or callbacks is None:
        return False
    if isinstance(callbacks, cls):
        return True
    items = getattr(callbacks, "callbacks", callbacks)
    return isinstance(items, (list, tuple)) and any(isinstance(cb, cls) for cb in items)


def _when_fit(call: Call) -> bool:
    # The user's own MLTrailCallback records this fit: autolog steps aside.
    return not _has_our_callback(_arguments(call, "fit").get("callbacks"))


def _pre_fit(call: Call) -> None:
    if not call.run:
        return
    config = call.config
    cls = callback_class()
    callback = cls(
        log_every_n_steps=config.log_every_n_steps,
        log_model=config.log_models,
        log_model_summary=getattr(config, "log_model_summary", True),
        log_datasets=config.log_datasets,
        log_checkpoints=getattr(config, "log_checkpoints", True),
    )
    callback._handle = call.run
    arguments = _arguments(call, "fit")
    if _with_callback(call, "fit", callback):
        callbacks = _arguments(call, "fit").get("callbacks") or [callback]
        callback._context = _FitContext.of(arguments, callbacks)
        call.state["callback"] = callback


# Models trained in a run autolog started: evaluate() after fit() logs back into that run.
_trained_in: weakref.WeakKeyDictionary[Any, tuple[str, str]] = weakref.WeakKeyDictionary()


def _post_fit(call: Call, result: Any) -> None:
    run = call.run
    if run and run.owned and run.run_id and "callback" in call.state:
        from mltrail.core import fluent

        _trained_in[call.instance] = (fluent.get_tracking_uri(), run.run_id)


def _when_evaluate(call: Call) -> bool:
    # fit() runs validation through evaluate(..., _use_cached_eval_dataset=True): part of fit.
    return bool(getattr(call.config, "log_evaluate", True)) and not call.kwargs.get(
        "_use_cached_eval_dataset"
    )


def _pre_evaluate(call: Call) -> None:
    if not call.run and call.instance not in _trained_in:
        return
    callback = _eval_callback_class()()
    if _with_callback(call, "evaluate", callback):
        call.state["callback"] = callback


def _post_evaluate(call: Call, result: Any) -> None:
    callback = call.state.get("callback")
    if callback is None or callback.logs is None:
        return
    metrics = numeric_logs(callback.logs, EVAL_PREFIX)
    dataset = None
    if call.config.log_datasets:
        arguments = _arguments(call, "evaluate")
        dataset = dataset_fingerprint(arguments.get("x"), arguments.get("y"))
    if call.run:
        _log_evaluation(call.run, metrics, dataset)
        return
    where = _trained_in.get(call.instance)
    if where is None:
        return
    from mltrail.core import fluent

    uri, run_id = where
    if fluent.get_tracking_uri() != uri:
        return
    # The run autolog started for this model's fit has ended: open it again for the metrics.
    with fluent.start_run(run_id=run_id) as resumed:
        from mltrail.autolog.runs import RunHandle

        handle = RunHandle(resumed, NAME, owned=False)
        _log_evaluation(handle, metrics, dataset)
        handle.close()


_eval_steps: dict[str, int] = {}


def _log_evaluation(run: Any, metrics: Mapping[str, float], dataset: Dataset | None) -> None:
    run_id = str(getattr(run, "run_id", ""))
    step = _eval_steps.get(run_id, 0)
    _eval_steps[run_id] = step + 1
    run.log_metrics(metrics, step=step)
    if dataset is not None:
        run.log_input(dataset, context="evaluation")


PATCHES = (
    Patch(owner="keras", path="Model.fit", pre=_pre_fit, post=_post_fit, when=_when_fit,
          child="if_used"),
    Patch(owner="keras", path="Model.evaluate", pre=_pre_evaluate, post=_post_evaluate,
          when=_when_evaluate, run="active"),
)
