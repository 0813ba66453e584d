"""What the XGBoost and LightGBM integrations share: plain helpers, no framework imported.

Gradient-boosting libraries report the same kinds of things (params as strings, evaluation
results per data set and metric, feature importances per type, a model serialised to bytes),
so the two integrations turn them into records the same way:

* metric keys ``<data set>-<metric>`` (``validation_0-logloss``, ``valid-ndcg_at_5``), as
  MLflow names them, with characters a key may not hold replaced;
* params as strings, long ones cut, floats that a library prints at float32 precision
  (``0.100000001``) shortened to what the user wrote (``0.1``);
* dataset fingerprints for numpy, pandas and scipy.sparse inputs, never copying the data;
* feature importances of every type in ``feature_importance.json`` and one bar chart per type
  in ``feature_importance.svg`` — an SVG is written with string formatting in well under a
  millisecond, where a matplotlib figure would cost a second's import and tens of milliseconds
  per chart inside the user's ``train`` call;
* a model as ``<artifact_path>/<file>`` plus ``<artifact_path>/mltrail_model.json`` describing
  how to load it back;
* the same options (:class:`Options`), the same three patches (:func:`patches`: the module's
  ``train`` under both names, the estimators' ``fit``) and the same split of the work after
  training: what must see the booster as it is when training returns stays on the caller's
  thread, the rest (importance files, the model's files) goes to the autolog engine's
  background jobs through :func:`later`.
"""

from __future__ import annotations

import hashlib
import html
import inspect
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mltrail.autolog import Call, Patch, jobs
from mltrail.core.entities import Dataset
from mltrail.core.errors import InvalidValueError

_log = logging.getLogger("mltrail.integrations")

MODEL_META_FILE = "mltrail_model.json"
IMPORTANCE_FILE = "feature_importance"  # .json and .svg
CHART_MAX_FEATURES = 40  # bars drawn in an importance chart; the JSON keeps every feature
_MAX_PARAM_CHARS = 6000  # the store's limit on a param value (core.validation)
_SAMPLE_ROWS = 10_000  # as core.datasets: rows hashed from each end of a large array
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /:]")


# ---------------------------------------------------------------------- options
@dataclass(frozen=True)
class Options:
    """What a training logs, from the autolog config or a callback's arguments."""

    log_models: bool = True
    importance_types: tuple[str, ...] = ()
    log_importance_plots: bool = True
    log_every_n_steps: int = 1
    model_format: str = "ubj"  # XGBoost's; LightGBM has one format


def options(config: Any, importance_types: tuple[str, ...]) -> Options:
    """:class:`Options` from an integration's config (its own options where it has them)."""
    return Options(
        log_models=config.log_models,
        importance_types=getattr(config, "importance_types", importance_types),
        log_importance_plots=getattr(config, "log_importance_plots", True),
        log_every_n_steps=config.log_every_n_steps or 1,
        model_format=getattr(config, "model_format", "ubj"),
    )


def check_importance_types(types: Iterable[str], known: tuple[str, ...], library: str) -> tuple[str, ...]:
    """``types`` as a tuple, each one of ``known`` (a lone string counts as one type)."""
    found = (types,) if isinstance(types, str) else tuple(types)
    unknown = [t for t in found if t not in known]
    if unknown:
        msg = f"importance_types {unknown} are not {library} importance types; choose from {list(known)}"
        raise InvalidValueError(msg)
    return found


def check_every_n(n: Any) -> int:
    """A callback's ``log_every_n_steps``: a positive int."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        msg = f"log_every_n_steps must be a positive int, got {n!r}"
        raise InvalidValueError(msg)
    return n


# ---------------------------------------------------------------------- the patches
def patches(
    package: str,
    training_module: str,
    estimator: str,
    *,
    train: tuple[Callable[[Call], Any], Callable[[Call, Any], Any], Callable[[Call], bool]],
    fit: tuple[Callable[[Call], Any], Callable[[Call, Any], Any], Callable[[Call], bool]],
    include: Callable[[type], bool],
) -> tuple[Patch, ...]:
    """``train`` as ``<package>.train`` and ``<training_module>.train``, and ``<estimator>.fit``.

    ``train`` and ``fit`` are ``(pre, post, when)``; ``estimator`` is ``"module:Class"`` and
    every subclass defining its own ``fit`` is patched (``include`` picks them). A training
    that is not the first in a user's run goes to a child run.
    """
    owner, cls = estimator.split(":")
    pre, post, when = train
    pre_fit, post_fit, when_fit = fit
    return (
        Patch(owner=package, path="train", pre=pre, post=post, when=when, child="if_used"),
        Patch(owner=training_module, path="train", pre=pre, post=post, when=when, child="if_used"),
        Patch(owner=owner, path=f"{cls}.fit", pre=pre_fit, post=post_fit, when=when_fit, child="if_used",
              subclasses=True, include=include),
    )


def has_callback(callbacks: Any, classes: tuple[type, ...]) -> bool:
    """Whether the user passed one of our callbacks (then autolog stays out of the call)."""
    return bool(classes) and any(isinstance(cb, classes) for cb in (callbacks or ()))


def log_estimator(run: Any, estimator: Any, params: Mapping[str, str]) -> set[str]:
    """Tag the run with the estimator's class and log its params; the keys logged."""
    cls = type(estimator)
    run.set_tags({"estimator_name": cls.__name__, "estimator_class": f"{cls.__module__}.{cls.__qualname__}"})
    log_params_tolerant(run, params)
    return set(params)


# ---------------------------------------------------------------------- after training
def later(integration: str, run: Any, steps: list[tuple[str, Callable[[Any], None]]]) -> None:
    """Queue ``step(sink)`` for the autolog engine's background worker, one job for all of them.

    ``sink`` logs by run id (:class:`ClientRun`) into ``run``'s run: by the time the worker runs,
    the call's own handle is closed. Each step must read only what cannot change once training
    has returned (or a snapshot taken before calling this).
    """
    run_id = getattr(run, "run_id", None)
    if run_id is None or not steps:
        return
    from mltrail.core import fluent

    uri = fluent.get_tracking_uri()
    sinks: list[ClientRun] = []

    def sink() -> ClientRun:
        if not sinks:
            sinks.append(ClientRun(run_id, uri))
        return sinks[0]

    jobs.submit_steps(integration, run_id, [(point, lambda fn=fn: fn(sink())) for point, fn in steps])


class Inputs:
    """Dataset fingerprints taken now, written by a background job (a store write each).

    Stands in for the run in the helpers that log inputs: the fingerprint is computed on the
    caller's thread (the library may free the raw data once training starts), the write waits.
    """

    def __init__(self) -> None:
        self.found: list[tuple[Dataset, str | None]] = []

    def log_input(self, dataset: Dataset, context: str | None = None) -> None:
        self.found.append((dataset, context))

    def write_later(self, integration: str, run: Any) -> None:
        found = self.found
        if found:
            later(integration, run, [("dataset", lambda sink: [sink.log_input(d, c) for d, c in found])])


# ---------------------------------------------------------------------- metric keys
class MetricKeys:
    """``(data set, metric) -> metric key``, formatted and checked once per pair.

    The per-iteration hot path looks a key up in a dict instead of formatting it again.
    """

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], str] = {}

    def __call__(self, data_name: str, metric_name: str) -> str:
        pair = (data_name, metric_name)
        key = self._keys.get(pair)
        if key is None:
            key = self._keys[pair] = metric_key(data_name, metric_name)
        return key


def metric_key(data_name: str, metric_name: str) -> str:
    """The metric key for ``metric_name`` evaluated on ``data_name``: ``"valid-ndcg_at_5"``.

    ``@`` (``ndcg@5``, ``error@0.7``) becomes ``_at_``; any other character a metric key may not
    hold becomes ``_``.
    """
    raw = f"{data_name}-{metric_name}".replace("@", "_at_")
    return _BAD_KEY_CHARS.sub("_", raw) or "metric"


def finite_or_nan(value: Any) -> float:
    """``value`` as a float (numpy scalars included); NaN for what is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------- params
def short_number(text: str) -> str:
    """Shorten a float printed at more digits than it holds: ``"0.100000001"`` -> ``"0.1"``.

    Libraries keep many params as float32 and print them with nine significant digits; the
    shortest text that reads back as the same float32 (or float64) is what the user wrote.
    Text that is not a finite decimal float is returned as it is.
    """
    if not any(c in text for c in ".eE") or len(text) < 6:
        return text
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value):
        return text
    import numpy as np

    candidates = [repr(value), str(np.float32(value))]
    best = min(candidates, key=len)
    return best if len(best) < len(text) else text


def param_text(value: Any) -> str | None:
    """A param value as stored text; None for values that say nothing (None, empty)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif callable(value) and not isinstance(value, type):
        text = getattr(value, "__qualname__", None) or getattr(value, "__name__", None) or type(value).__name__
    elif isinstance(value, float) and math.isnan(value):
        text = "nan"
    else:
        text = str(value)
    if not text:
        return None
    if len(text) > _MAX_PARAM_CHARS:
        text = text[: _MAX_PARAM_CHARS - 3] + "..."
    return text


def loggable_params(items: Mapping[Any, Any], *, skip: Iterable[str] = ()) -> dict[str, str]:
    """``{key: text}`` for the entries that can be params, leaving out ``skip`` and None values."""
    from mltrail.core.errors import InvalidInputError
    from mltrail.core.validation import validate_key

    skipped = set(skip)
    out: dict[str, str] = {}
    for key, value in items.items():
        name = str(key)
        if name in skipped or name in out:
            continue
        text = param_text(value)
        if text is None:
            continue
        try:
            validate_key(name, "param")
        except InvalidInputError:
            _log.debug("not logging param %r: not a valid param key", name)
            continue
        out[name] = text
    return out


def log_params_tolerant(run: Any, params: Mapping[str, str]) -> None:
    """Log ``params``, skipping any the run already holds with another value."""
    from mltrail.core.errors import ParamConflictError

    try:
        run.log_params(params)
    except ParamConflictError:
        for key, value in params.items():
            try:
                run.log_params({key: value})
            except ParamConflictError:
                _log.debug("param %r is already logged with another value; kept the first", key)


def pairs_to_dict(params: Any) -> dict[str, Any]:
    """A params argument as a dict; a list of pairs with repeated keys gives lists of values."""
    if params is None:
        return {}
    if isinstance(params, Mapping):
        return dict(params)
    out: dict[str, Any] = {}
    try:
        for key, value in params:
            if key in out:
                previous = out[key]
                out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                out[key] = value
    except (TypeError, ValueError):
        return {}
    return out


def argument(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], name: str, default: Any = None
) -> Any:
    """The value of parameter ``name`` in a call of ``func`` with ``args`` and ``kwargs``."""
    if name in kwargs:
        return kwargs[name]
    index = positions(func).get(name)
    if index is not None and index < len(args):
        return args[index]
    return default


def set_argument(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str, value: Any
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` with parameter ``name`` set to ``value``, wherever the caller put it."""
    index = positions(func).get(name)
    if name not in kwargs and index is not None and index < len(args):
        new_args = list(args)
        new_args[index] = value
        return tuple(new_args), kwargs
    kwargs[name] = value
    return args, kwargs


_positions: dict[Any, dict[str, int]] = {}


def positions(func: Callable[..., Any]) -> dict[str, int]:
    """``{parameter: position}`` for the positional parameters of ``func`` (cached)."""
    key = getattr(func, "__wrapped__", func)
    found = _positions.get(key)
    if found is None:
        try:
            params = inspect.signature(key).parameters.values()
        except (TypeError, ValueError):
            params = []  # type: ignore[assignment]
        found = {
            p.name: i
            for i, p in enumerate(params)
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
        _positions[key] = found
    return found


# ---------------------------------------------------------------------- datasets
def fingerprint(data: Any, targets: Any = None, *, name: str | None = None) -> Dataset | None:
    """A dataset fingerprint for numpy, pandas, scipy.sparse or list ``data``; None for anything else.

    Nothing is copied: numpy and pandas go through :mod:`mltrail.data`, which hashes sampled
    rows in place; a sparse matrix is described by its shape and stored values.
    """
    if data is None:
        return None
    from mltrail.core import datasets

    module = type(data).__module__ or ""
    if module.startswith("scipy.sparse") or (hasattr(data, "nnz") and hasattr(data, "tocsr")):
        return _sparse_dataset(data, targets, name)
    if module.startswith("pandas"):
        if hasattr(data, "columns"):
            return datasets.from_pandas(data, name=name)
        return datasets.from_numpy(data.to_numpy(), _array_or_none(targets), name=name)
    import numpy as np

    # numpy and plain lists only: converting a GPU array or another library's frame would
    # copy the training data, which a fingerprint never does.
    if isinstance(data, (np.ndarray, list, tuple)):
        return datasets.from_numpy(data, _array_or_none(targets), name=name)
    return None


def _array_or_none(targets: Any) -> Any:
    if targets is None:
        return None
    to_numpy = getattr(targets, "to_numpy", None)
    return to_numpy() if callable(to_numpy) else targets


def _sparse_dataset(data: Any, targets: Any, name: str | None) -> Dataset:
    import numpy as np

    h = hashlib.sha256()
    shape = tuple(int(n) for n in data.shape)
    h.update(f"{type(data).__name__}{shape}{int(data.nnz)}{data.dtype}".encode())
    for part in ("data", "indices", "indptr"):
        arr = getattr(data, part, None)
        if isinstance(arr, np.ndarray) and arr.size:
            _hash_ends(h, arr)
    if targets is not None:
        _hash_ends(h, np.asarray(_array_or_none(targets)))
    digest = h.hexdigest()[:16]
    return Dataset(
        name=name or f"dataset-{digest[:8]}",
        digest=digest,
        source_type="scipy.sparse",
        source=json.dumps({"source": "in-memory"}),
        schema=json.dumps({"features": {"dtype": str(data.dtype), "shape": [-1, *shape[1:]]}}),
        profile=json.dumps({"num_rows": shape[0], "features_shape": list(shape), "nnz": int(data.nnz)}),
    )


def _hash_ends(h: Any, arr: Any) -> None:
    """Hash up to ``_SAMPLE_ROWS`` entries from each end of a 1-D array (a view, no copy)."""
    import numpy as np

    flat = arr.reshape(-1) if arr.ndim != 1 else arr
    parts = [flat] if flat.shape[0] <= 2 * _SAMPLE_ROWS else [flat[:_SAMPLE_ROWS], flat[-_SAMPLE_ROWS:]]
    for part in parts:
        if part.dtype.hasobject:
            h.update(repr(part.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(part).tobytes())


def described_dataset(
    *,
    kind: str,
    name: str | None,
    num_rows: int | None,
    num_columns: int | None,
    feature_names: Iterable[str] | None = None,
    feature_types: Iterable[str] | None = None,
    labels: Any = None,
    source: str | None = None,
    extra: Iterable[bytes] = (),
) -> Dataset:
    """A fingerprint from what a library's own data container tells (shape, names, labels).

    Used where the raw data is no longer reachable without a copy (an XGBoost ``DMatrix``, a
    constructed LightGBM ``Dataset``): the digest covers the shape, feature names and types,
    sampled labels and ``extra`` bytes (a file's size and mtime).
    """
    names = [str(n) for n in feature_names] if feature_names is not None else None
    types = [str(t) for t in feature_types] if feature_types is not None else None
    h = hashlib.sha256()
    h.update(json.dumps([kind, num_rows, num_columns, names, types, source]).encode())
    for chunk in extra:
        h.update(chunk)
    if labels is not None:
        import numpy as np

        arr = np.asarray(labels)
        if arr.size:
            _hash_ends(h, arr)
    digest = h.hexdigest()[:16]
    schema: dict[str, Any] = {"num_columns": num_columns}
    if names is not None:
        kinds: list[str | None] = list(types) if types is not None else [None] * len(names)
        schema["features"] = [{"name": n, "type": t} for n, t in zip(names, kinds, strict=False)]
    return Dataset(
        name=name or f"dataset-{digest[:8]}",
        digest=digest,
        source_type=kind,
        source=json.dumps({"source": source or "in-memory"}),
        schema=json.dumps(schema),
        profile=json.dumps({"num_rows": num_rows, "num_columns": num_columns}),
    )


def file_stamp(path: Any) -> bytes:
    """Size and modification time of a data file, for a digest that changes with the file."""
    try:
        st = os.stat(path)
    except OSError:
        return b""
    return f"{st.st_size}:{st.st_mtime_ns}".encode()


# ---------------------------------------------------------------------- importances
def importance_scalar(value: Any) -> float:
    """One number per feature for the chart: the value, or the sum of magnitudes of a vector."""
    if isinstance(value, (list, tuple)):
        return float(sum(abs(finite_or_nan(v)) for v in value))
    return finite_or_nan(value)


def importance_svg(panels: Mapping[str, Mapping[str, Any]], *, max_features: int = CHART_MAX_FEATURES) -> str:
    """Horizontal bar charts of feature importances, one panel per type, as one SVG document.

    Each panel shows the ``max_features`` largest scores, largest first; the JSON file next to
    it keeps every feature.
    """
    width, label_w, bar_w, row_h = 0, 0, 360, 18
    prepared = []
    for kind, scores in panels.items():
        ranked = sorted(
            ((str(k), importance_scalar(v)) for k, v in scores.items()),
            key=lambda kv: (-(kv[1] if math.isfinite(kv[1]) else -math.inf), kv[0]),
        )
        prepared.append((str(kind), ranked[:max_features], max(0, len(ranked) - max_features)))
        label_w = max(label_w, min(260, 12 + 7 * max((len(k) for k, _ in ranked[:max_features]), default=4)))
    width = label_w + bar_w + 90
    out: list[str] = []
    y0 = 0
    for kind, ranked, hidden in prepared:
        top = max((v for _, v in ranked if math.isfinite(v)), default=0.0) or 1.0
        out.append(
            f'<text x="{width / 2:.0f}" y="{y0 + 20}" text-anchor="middle" font-size="14" '
            f'font-weight="bold">{html.escape(f"Feature importance ({kind})")}</text>'
        )
        for i, (feature, value) in enumerate(ranked):
            y = y0 + 34 + i * row_h
            length = bar_w * value / top if math.isfinite(value) and value > 0 else 0.0
            label = feature if len(feature) <= 36 else feature[:33] + "..."
            out.append(
                f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{html.escape(label)}</text>'
                f'<rect x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row_h - 6}" fill="#4878d0"/>'
                f'<text x="{label_w + length + 4:.1f}" y="{y + 13}">{_fmt(value)}</text>'
            )
        y0 += 34 + row_h * max(1, len(ranked))
        if hidden:
            out.append(f'<text x="{label_w}" y="{y0 + 10}" fill="#666">and {hidden} more (see the JSON file)</text>')
            y0 += 14
        y0 += 16
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y0}" '
        f'viewBox="0 0 {width} {y0}" font-family="sans-serif" font-size="12">\n'
        f'<rect width="{width}" height="{y0}" fill="white"/>'
    )
    return "\n".join([head, *out, "</svg>"])


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}"


def log_importances(run: Any, importances: Mapping[str, Mapping[str, Any]], *, plots: bool = True) -> None:
    """Write ``feature_importance.json`` (``{type: {feature: score}}``) and its SVG chart.

    Two files for every type: each artifact write costs a few syscalls, and ten small files
    would cost more than computing the importances.
    """
    found = {kind: dict(scores) for kind, scores in importances.items() if scores}
    if not found:
        return
    run.log_dict(found, IMPORTANCE_FILE + ".json")
    if plots:
        run.log_text(importance_svg(found), IMPORTANCE_FILE + ".svg")


# ---------------------------------------------------------------------- models
def log_model_files(run: Any, artifact_path: str, files: Mapping[str, bytes], meta: Mapping[str, Any]) -> None:
    """Write a model's files and its ``mltrail_model.json`` under ``artifact_path``."""
    for name, data in files.items():
        run.log_bytes(data, f"{artifact_path}/{name}")
    run.log_dict(dict(meta), f"{artifact_path}/{MODEL_META_FILE}")


def saved_with(save: Callable[[str], Any], filename: str) -> bytes:
    """The bytes ``save(path)`` writes to a file named ``filename`` (in a private temp dir)."""
    with tempfile.TemporaryDirectory(prefix="mltrail-model-") as tmp:
        path = os.path.join(tmp, filename)
        save(path)
        with open(path, "rb") as fh:
            return fh.read()


def fetch_model(run_id: str, artifact_path: str, flavor: str) -> tuple[str, dict[str, Any]]:
    """Download a logged model: ``(local directory, its mltrail_model.json)``."""
    from mltrail.core.client import Client
    from mltrail.core.errors import InvalidValueError, NotFoundError

    jobs.flush(run_id=run_id)  # a model trained a moment ago may still be being written
    local = Client().download_artifacts(run_id, artifact_path)
    meta_path = os.path.join(local, MODEL_META_FILE)
    if not os.path.isfile(meta_path):
        msg = f"run {run_id} has no model at {artifact_path!r} (no {MODEL_META_FILE} there)"
        raise NotFoundError(msg)
    with open(meta_path, encoding="utf-8") as fh:
        meta: dict[str, Any] = json.load(fh)
    if meta.get("flavor") != flavor:
        msg = (
            f"the model at {artifact_path!r} of run {run_id} was logged by the "
            f"{meta.get('flavor')!r} integration, not {flavor!r}; load it with "
            f"mltrail.{meta.get('flavor')}.load_model"
        )
        raise InvalidValueError(msg)
    return local, meta


# ---------------------------------------------------------------------- a run by id
class ClientRun:
    """Log into a run given by id (a callback used with ``run_id=``), through :class:`Client`.

    Offers the methods of :class:`mltrail.autolog.RunHandle` that the boosting callbacks use.
    """

    def __init__(self, run_id: str, tracking_uri: str | None = None) -> None:
        from mltrail.core.client import Client

        self.run_id = run_id
        self._client = Client(tracking_uri)

    def __bool__(self) -> bool:
        return True

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mltrail.core.entities import Param

        if params:
            self._client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mltrail.core.client import _now_ms
        from mltrail.core.entities import Metric

        if metrics:
            ts = _now_ms()
            self._client.log_batch(
                self.run_id, metrics=[Metric(k, v, ts, step or 0) for k, v in metrics.items()]
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, value)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        self._client.log_bytes(self.run_id, data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, dictionary: Any, artifact_file: str) -> None:
        self._client.log_dict(self.run_id, dictionary, artifact_file)

    def log_input(self, dataset: Any, context: str | None = None) -> None:
        self._client.log_inputs(self.run_id, [dataset], context)


def resolve_run(run_id: str | None, integration: str) -> tuple[Any, Any]:
    """Where a callback used by hand logs: ``(sink, run it started or None)``.

    ``run_id`` given: that run, by id. Else the active run; else a new run, which the caller
    ends when training ends. Under distributed training only global rank zero logs.
    """
    from mltrail.autolog.runs import NO_RUN, RunHandle, _global_rank
    from mltrail.core import fluent

    if _global_rank() != 0:
        return NO_RUN, None
    if run_id is not None:
        return ClientRun(run_id), None
    active = fluent.active_run()
    if active is not None:
        return RunHandle(active, integration, owned=False), None
    started = fluent.start_run()
    return RunHandle(started, integration, owned=True), started


def end_started(run: Any) -> None:
    """End a run a callback started (FINISHED), unless someone ended it already."""
    if run is not None and not run._ended:
        run.__exit__(None, None, None)
