"""scikit-learn: every ``fit`` recorded, searches as parent and child runs, nothing logged twice.

What is captured for each outermost ``fit`` (or ``fit_transform`` / ``fit_predict``):

* params: ``get_params(deep=True)`` — a meta-estimator's steps included (``clf__C``); a value
  longer than 500 characters is cut, and every cut value is kept whole in ``params_full.json``;
* tags ``estimator_name`` (``LogisticRegression``) and ``estimator_class``
  (``sklearn.linear_model._logistic.LogisticRegression``); metric ``fit_duration_s``;
* training metrics on the data the model was fitted on, honouring ``sample_weight``:
  classifiers ``training_accuracy_score``, weighted ``training_precision_score`` /
  ``training_recall_score`` / ``training_f1_score``, ``training_log_loss`` and
  ``training_roc_auc`` when probabilities exist, ``training_score``; regressors
  ``training_mean_squared_error``, ``training_root_mean_squared_error``,
  ``training_mean_absolute_error``, ``training_r2_score``, ``training_score``; clusterers
  ``training_inertia`` and ``training_silhouette_score`` (on a 500-row sample);
* for classifiers, ``training_confusion_matrix.png``, ``training_roc_curve.png`` and
  ``training_precision_recall_curve.png`` (when matplotlib is installed);
* the fitted model under ``model/`` (cloudpickle), loaded back by :func:`load_model`;
* the fingerprint of ``X``/``y`` as a run input (context ``training``), named after the variable
  the caller passed (``X_train``) — a digest of sampled rows, never a copy of the data.

Searches (``GridSearchCV``, ``RandomizedSearchCV``, the halving searches): the search's run is
the parent, with its params, ``best_<param>`` params, ``best_cv_score``, the refit model and
training metrics, and ``cv_results.csv``; the best ``max_tuning_runs`` candidates (default 5,
``None`` for all) become child runs with their params and mean/std test scores. The fits inside
a search, a ``Pipeline``, a ``ColumnTransformer`` or any meta-estimator are part of the outer
fit and are not recorded on their own. ``cross_validate`` / ``cross_val_score``: one run with
each fold's scores (``test_score`` at ``step=fold``) and their ``mean_``/``std_``.

Post-training metrics: after an autologged fit, ``model.score(X_test, y_test)`` and
``sklearn.metrics`` functions called on that model's predictions are logged to the model's run
as ``<metric>_<dataset variable>`` (``accuracy_score_X_test``,
``LogisticRegression_score_X_test``) — also after the run has ended.

A second fit inside the same user run goes into a child run of it. Data-preparation estimators
fitted on their own (scalers, encoders, imputers, univariate feature selection) are left out
unless ``log_preprocessing=True``; inside a Pipeline their params are part of its run. XGBoost
and LightGBM estimators are left to their own integrations when those are on.

Where it hooks in: ``fit``, ``fit_transform``, ``fit_predict``, ``predict``, ``predict_proba``,
``predict_log_proba``, ``decision_function`` and ``score`` of every class derived from
``BaseEstimator`` that defines one (classes defined after ``autolog()`` included) and of
scikit-learn's mixins that define them; ``cross_validate`` and ``cross_val_score``; the metric
functions of ``sklearn.metrics``. Functions bound by ``from sklearn.metrics import f1_score``
*before* ``autolog()`` keep the original and are not seen.

What costs time runs off the caller's thread. The ``fit`` call itself adds: the run's start,
params and tags, pickling the fitted model (the snapshot the rest is computed from — the model
may be refitted as soon as ``fit`` returns) and naming the caller's variables. The engine's
background worker (:mod:`mltrail.autolog.jobs`) then predicts on the training data with the
unpickled copy, computes the metrics, draws the plots, fingerprints ``X``/``y``, writes the
files, creates a search's child runs and, for a run autolog started, ends the run after all
that. ``mltrail.flush()`` (or this module's :func:`flush`) waits for it; interpreter exit does
too. The worker reads ``X`` and ``y`` as passed, without copying them: changing them in place
right after ``fit`` (before ``mltrail.flush()``) can change the recorded training metrics and
fingerprint. With ``log_models=False`` the predictions are made on the caller's thread
instead (there is no snapshot to make them from later).

This module holds the patches and what a fit logs; beside it: ``_metrics`` (training metrics
in numpy, checked against ``sklearn.metrics`` by the tests), ``_plots`` (the PNG plots) and
``_post_training`` (metrics on an autologged model's predictions).

Tested versions: scikit-learn 1.4 through 1.9 (``mltrail.autolog.registry``).

Example:
    >>> import mltrail
    >>> mltrail.autolog()
    >>> from sklearn.linear_model import LogisticRegression
    >>> model = LogisticRegression().fit(X_train, y_train)
    >>> accuracy_score(y_test, model.predict(X_test))   # logged as accuracy_score_X_test
    >>> mltrail.sklearn.load_model(mltrail.last_active_run().info.run_id).predict(X_test)
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mltrail.autolog import FAILED, AutologConfig, Call, Patch, _safety, enable, jobs, safely
from mltrail.core.errors import InvalidValueError
from mltrail.integrations.sklearn import _post_training

NAME = "sklearn"
MODEL_ARTIFACT_PATH = "model"
MODEL_META_FILE = "mltrail_model.json"
PARAM_VALUE_LIMIT = 500
SERIALIZATION_FORMATS = ("cloudpickle", "pickle")

_log = logging.getLogger("mltrail.integrations.sklearn")


@dataclass(frozen=True)
class Config(AutologConfig):
    """scikit-learn's options on top of the common ones.

    Attributes:
        max_tuning_runs: child runs for the best candidates of a search (None: every one).
        log_post_training_metrics: log metrics computed on an autologged model's predictions.
        log_training_metrics: compute metrics on the training data after each fit.
        log_plots: draw the confusion matrix and ROC / precision-recall curves (matplotlib).
        log_preprocessing: also record standalone fits of data-preparation estimators.
        serialization_format: ``"cloudpickle"`` (default) or ``"pickle"``.
    """

    max_tuning_runs: int | None = 5
    log_post_training_metrics: bool = True
    log_training_metrics: bool = True
    log_plots: bool = True
    log_preprocessing: bool = False
    serialization_format: str = "cloudpickle"

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.max_tuning_runs
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            msg = f"autolog option max_tuning_runs must be a non-negative int or None, got {n!r}"
            raise InvalidValueError(msg)
        for name in ("log_post_training_metrics", "log_training_metrics", "log_plots", "log_preprocessing"):
            if not isinstance(getattr(self, name), bool):
                msg = f"autolog option {name} must be True or False, got {getattr(self, name)!r}"
                raise InvalidValueError(msg)
        if self.serialization_format not in SERIALIZATION_FORMATS:
            msg = (
                f"autolog option serialization_format must be one of {SERIALIZATION_FORMATS}, "
                f"got {self.serialization_format!r}"
            )
            raise InvalidValueError(msg)


def _config(call: Call) -> Config:
    config = call.config
    return config if isinstance(config, Config) else Config()


# ---------------------------------------------------------------------- pure helpers
def estimator_params(estimator: Any, limit: int = PARAM_VALUE_LIMIT) -> tuple[dict[str, str], dict[str, str]]:
    """``(params, cut)``: ``get_params(deep=True)`` as text, and the full text of values cut.

    A value longer than ``limit`` characters is logged as its first ``limit - 3`` characters and
    ``...``; ``cut`` maps those keys to their whole text. Keys that cannot be param keys are left
    out (logged at DEBUG).
    """
    from mltrail.core.errors import InvalidInputError
    from mltrail.core.validation import stringify, validate_key

    try:
        raw = _deep_params(estimator)
    except Exception:  # noqa: BLE001 - a third-party get_params may fail on deep=True
        raw = estimator.get_params(deep=False)
    params: dict[str, str] = {}
    cut: dict[str, str] = {}
    for key, value in raw.items():
        try:
            validate_key(key, "param")
        except InvalidInputError:
            _log.debug("sklearn: param %r is not a valid key; not logged", key)
            continue
        text = stringify(value)
        if len(text) > limit:
            cut[key] = text
            text = text[: limit - 3] + "..."
        params[key] = text
    return params, cut


_param_names: dict[type, tuple[str, ...]] = {}


def _deep_params(estimator: Any) -> dict[str, Any]:
    """``estimator.get_params(deep=True)``, with each class's parameter names read once.

    scikit-learn's own ``get_params`` inspects ``__init__``'s signature on every call, which
    costs a short fit a tenth of a millisecond. Classes with a ``get_params`` of their own
    (``Pipeline``, third-party estimators) are asked as usual.
    """
    from sklearn.base import BaseEstimator

    cls = type(estimator)
    if getattr(cls, "get_params", None) is not BaseEstimator.get_params:
        return dict(estimator.get_params(deep=True))
    names = _param_names.get(cls)
    if names is None:
        names = _param_names[cls] = tuple(cls._get_param_names())
    out: dict[str, Any] = {}
    for key in names:  # as BaseEstimator.get_params(deep=True) does
        value = getattr(estimator, key)
        if hasattr(value, "get_params") and not isinstance(value, type):
            out.update((f"{key}__{k}", v) for k, v in _deep_params(value).items())
        out[key] = value
    return out


def estimator_tags(estimator: Any) -> dict[str, str]:
    """``estimator_name`` and ``estimator_class`` (module and qualified name)."""
    cls = type(estimator)
    return {"estimator_name": cls.__name__, "estimator_class": f"{cls.__module__}.{cls.__qualname__}"}


def estimator_kind(estimator: Any) -> str | None:
    """``"classifier"``, ``"regressor"``, ``"clusterer"``, ``"outlier_detector"`` or None."""
    from sklearn import base

    try:
        tags = base.get_tags(estimator) if hasattr(base, "get_tags") else None
    except Exception:  # noqa: BLE001 - a third-party estimator with broken tags
        tags = None
    if tags is not None and getattr(tags, "estimator_type", None):
        return str(tags.estimator_type)
    kind = getattr(estimator, "_estimator_type", None)
    return kind if isinstance(kind, str) else None


def fit_arguments(
    instance: Any, method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[Any, Any, Any]:
    """``(X, y, sample_weight)`` of a call of ``instance.<method>(*args, **kwargs)``."""
    plan = _plan(getattr(type(instance), method, None))
    bound = _bind(plan, args, kwargs) if plan is not None else None
    if plan is None or bound is None:
        X = args[0] if args else kwargs.get("X")
        y = args[1] if len(args) > 1 else kwargs.get("y")
        return X, y, kwargs.get("sample_weight")
    positional = plan[0]
    X = bound.get(positional[0]) if positional else None
    y = bound.get(positional[1]) if len(positional) > 1 else None
    return X, y, bound.get("sample_weight")


def _bind(
    plan: tuple[tuple[str, ...], frozenset[str], bool], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The call's arguments by name (``**kwargs`` ones included), or None if it would not bind."""
    positional, named, var_kw = plan
    if len(args) > len(positional):
        return None
    bound = dict(zip(positional, args, strict=False))
    for key, value in kwargs.items():
        if key in bound or not (key in named or var_kw):
            return None  # given twice, or an unknown keyword: the call itself fails
        bound[key] = value
    return bound


_plans: dict[Any, tuple[tuple[str, ...], frozenset[str], bool] | None] = {}


def _plan(func: Any) -> tuple[tuple[str, ...], frozenset[str], bool] | None:
    """A method's parameters but ``self``: (positional names, keyword names, takes ``**kwargs``).

    None where arguments cannot be matched up by name and position alone (``*args``).
    """
    if func is None:
        return None
    key = getattr(func, "__wrapped__", func)
    try:
        return _plans[key]
    except (KeyError, TypeError):
        pass
    try:
        sig: inspect.Signature | None = inspect.signature(func)
    except (TypeError, ValueError):
        sig = None
    plan = None
    if sig is not None:
        params = list(sig.parameters.values())
        if params and params[0].name == "self":
            params = params[1:]
        P = inspect.Parameter
        if not any(p.kind is P.VAR_POSITIONAL for p in params):
            positional = tuple(p.name for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD))
            named = frozenset(p.name for p in params if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY))
            plan = (positional, named, any(p.kind is P.VAR_KEYWORD for p in params))
    try:
        _plans[key] = plan
    except TypeError:
        pass
    return plan


def caller_variable(obj: Any) -> str | None:
    """The name the user's code holds ``obj`` under (``X_test``), or None.

    Looks at the innermost frame outside mltrail and wrapt (the user's line that made the
    patched call): its locals first, then its globals.
    """
    if obj is None:
        return None
    frame = sys._getframe(1)
    while frame is not None and _safety._internal(frame):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    try:
        for scope in (frame.f_locals, frame.f_globals) if frame.f_locals is not frame.f_globals else (
            frame.f_globals,
        ):
            for name, value in list(scope.items()):
                if value is obj and name.isidentifier() and not name.startswith("_"):
                    return name
    finally:
        del frame
    return None


def dataset_of(X: Any, y: Any, name: str | None) -> Any:
    """The fingerprint of ``X``/``y`` (numpy, pandas or scipy.sparse) or None for other inputs."""
    from mltrail.core import datasets

    module = type(X).__module__
    if module.startswith("pandas") and hasattr(X, "columns"):
        return datasets.from_pandas(X, name=name)
    if module.startswith("scipy.sparse") and hasattr(X, "nnz"):
        return _sparse_dataset(X, y, name)
    if hasattr(X, "__array__") and hasattr(X, "shape") and hasattr(X, "dtype"):
        targets = y
        if y is not None and not (hasattr(y, "__array__") and hasattr(y, "shape")):
            targets = None
        return datasets.from_numpy(X, targets, name=name)
    return None


def _sparse_dataset(X: Any, y: Any, name: str | None) -> Any:
    import hashlib

    import numpy as np

    from mltrail.core.datasets import _hash_array
    from mltrail.core.entities import Dataset

    csr = X if X.format in ("csr", "csc") else None
    h = hashlib.sha256()
    h.update(f"{X.format}{X.shape}{X.dtype}{X.nnz}".encode())
    if csr is not None:
        for part in (csr.data, csr.indices, csr.indptr):
            _hash_array(h, part)
    if y is not None and hasattr(y, "shape"):
        _hash_array(h, np.asarray(y))
    digest = h.hexdigest()[:16]
    return Dataset(
        name=name or f"dataset-{digest[:8]}",
        digest=digest,
        source_type="scipy.sparse",
        source=json.dumps({"source": "in-memory"}),
        schema=json.dumps({"features": {"dtype": str(X.dtype), "shape": [-1, X.shape[1]],
                                        "format": X.format}}),
        profile=json.dumps({"num_rows": X.shape[0], "features_shape": list(X.shape), "nnz": int(X.nnz)}),
    )


def cv_results_csv(cv_results: Mapping[str, Any]) -> str:
    """``cv_results_`` as CSV text: one row per candidate, one column per key."""
    import csv
    import io

    import numpy as np

    keys = list(cv_results)
    n = len(cv_results[keys[0]]) if keys else 0
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(keys)
    columns = []
    for key in keys:
        column = cv_results[key]
        mask = np.ma.getmaskarray(column) if isinstance(column, np.ma.MaskedArray) else None
        values = column.tolist() if hasattr(column, "tolist") else list(column)
        if mask is not None:
            values = ["" if m else v for v, m in zip(values, mask.tolist(), strict=True)]
        columns.append(values)
    for i in range(n):
        writer.writerow([_cell(col[i]) for col in columns])
    return out.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, default=str, sort_keys=True)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return str(value)


def best_candidates(
    cv_results: Mapping[str, Any], limit: int | None, refit: Any = None
) -> list[tuple[int, dict[str, str], dict[str, float]]]:
    """The best ``limit`` candidates of a search: ``(index, params, metrics)``, best first.

    Ranked by ``rank_test_score`` (one metric) or ``rank_test_<refit>`` (several, ``refit``
    naming the one the search refits on); metrics are each ``mean_test_*``, ``std_test_*``,
    ``mean_train_*``, ``std_train_*``, ``rank_test_*``, ``mean_fit_time`` and
    ``mean_score_time`` of the candidate.
    """
    import numpy as np

    params_list = list(cv_results.get("params", []))
    n = len(params_list)
    if n == 0 or limit == 0:
        return []
    rank_key = next(
        (k for k in ("rank_test_score", f"rank_test_{refit}") if k in cv_results),
        next((k for k in cv_results if k.startswith("rank_test_")), None),
    )
    order = list(range(n))
    if rank_key is not None:
        ranks = np.asarray(cv_results[rank_key], dtype=np.float64)
        order = sorted(order, key=lambda i: (ranks[i], i))
    if limit is not None:
        order = order[:limit]
    metric_keys = [
        k for k in cv_results
        if k.startswith(("mean_test_", "std_test_", "mean_train_", "std_train_", "rank_test_"))
        or k in ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time")
    ]
    out = []
    for i in order:
        params = {str(k): _param_text(v) for k, v in params_list[i].items()}
        metrics = {}
        for key in metric_keys:
            try:
                value = float(cv_results[key][i])
            except (TypeError, ValueError):
                continue
            metrics[key] = value
        out.append((i, params, metrics))
    return out


def _param_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 3] + "..."


def cross_validation_metrics(result: Any, scoring_name: str = "score") -> tuple[dict[str, list[float]], dict[str, float]]:
    """``(per_fold, summary)`` from what ``cross_validate`` / ``cross_val_score`` returned.

    ``per_fold`` maps ``test_<scorer>`` (and ``train_*``, ``fit_time``, ``score_time``) to each
    fold's value; ``summary`` holds each one's ``mean_`` and ``std_``.
    """
    import numpy as np

    if isinstance(result, Mapping):
        series = {k: v for k, v in result.items() if k.startswith(("test_", "train_")) or k in ("fit_time", "score_time")}
    else:
        series = {f"test_{scoring_name}": result}
    per_fold: dict[str, list[float]] = {}
    summary: dict[str, float] = {}
    for key, values in series.items():
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if arr.ndim != 1 or arr.size == 0:
            continue
        per_fold[key] = arr.tolist()
        summary[f"mean_{key}"] = float(arr.mean())
        summary[f"std_{key}"] = float(arr.std())
    return per_fold, summary


# ---------------------------------------------------------------------- which calls we log
_PREPROCESSING_MODULES = (
    "sklearn.preprocessing",
    "sklearn.impute",
    "sklearn.feature_extraction",
    "sklearn.feature_selection",
)
# Frameworks with an integration of their own whose estimators derive from BaseEstimator.
_LEFT_TO = {"xgboost": "xgboost", "lightgbm": "lightgbm"}


def _integration_on(name: str) -> bool:
    from mltrail.autolog import autolog_status

    status = autolog_status().get(name)
    return status is not None and status.state == "active"


def _want_fit(call: Call) -> bool:
    cls = type(call.instance)
    for klass in cls.__mro__:
        owner = _LEFT_TO.get(klass.__module__.split(".")[0])
        if owner is not None:
            return not _integration_on(owner)
    if not _config(call).log_preprocessing and cls.__module__.startswith(_PREPROCESSING_MODULES):
        # Data preparation on its own; a meta-estimator among them (RFE, SelectFromModel,
        # IterativeImputer: they fit a model many times) is still one run.
        return getattr(call.instance, "estimator", None) is not None
    return True


# ---------------------------------------------------------------------- the fit patch
def _pre_fit(call: Call) -> None:
    call.state["start"] = time.perf_counter()
    run = call.run
    if not run:
        return
    estimator = call.instance
    params, cut = estimator_params(estimator)
    run.log_params(params)
    run.set_tags(estimator_tags(estimator))
    if cut:
        text = json.dumps(cut, indent=2)
        _submit(call, "params_full", lambda client, run_id: client.log_text(run_id, text, "params_full.json"))


def _post_fit(call: Call, result: Any) -> None:
    duration = time.perf_counter() - call.state.get("start", time.perf_counter())
    run = call.run
    if not run or run.run_id is None:
        return
    estimator = call.instance
    config = _config(call)
    run.log_metrics({"fit_duration_s": duration})
    method = call.patch.path.rsplit(".", 1)[-1]
    X, y, weight = fit_arguments(estimator, method, call.args, call.kwargs)
    record = _FitRecord(estimator, config, run.run_id, _tracking_uri())
    steps: list[tuple[str, Callable[[], object]]] = []
    if _is_search(estimator):
        safely(NAME, "search", _log_search, call, estimator, config, record, steps)
    # The snapshot that the background work reads the model from: the estimator may be refitted
    # as soon as fit returns. Its pickle is the model file anyway.
    if config.log_models and safely(NAME, "model", record.take_snapshot) is not FAILED:
        steps.append(("model", record.write_models))
    if config.log_training_metrics and X is not None:
        labels = result if method == "fit_predict" else None
        if safely(NAME, "training_metrics", record.prepare_metrics, X, y, weight, labels) is not FAILED:
            steps.append(("training_metrics", record.training_metrics))
            if config.log_plots and _plots_available():
                steps.append(("plots", record.plots))
    if config.log_datasets and X is not None:
        name = safely(NAME, "dataset", caller_variable, X)
        if name is not FAILED:
            steps.append(("dataset", lambda: record.dataset(X, y, name)))
    jobs.submit_steps(NAME, run.run_id, steps)
    if config.log_post_training_metrics:
        _post_training.remember_model(estimator, run.run_id, record.uri)


def _tracking_uri() -> str:
    from mltrail.core import fluent

    return fluent.get_tracking_uri()


def _client(uri: str) -> Any:
    from mltrail.core.client import Client

    return Client(uri)


def _submit(call: Call, point: str, job: Callable[[Any, str], None]) -> None:
    """Queue ``job(client, run_id)`` for the background thread, for this call's run."""
    run_id = call.run.run_id
    if run_id is None:
        return
    uri = call.state.get("uri") or _tracking_uri()
    call.state["uri"] = uri
    jobs.submit(NAME, point, run_id, lambda: job(_client(uri), run_id))


def _log_dataset(client: Any, run_id: str, X: Any, y: Any, name: str | None) -> None:
    found = dataset_of(X, y, name)
    if found is not None:
        client.log_inputs(run_id, [found], "training")


class _FitRecord:
    """What one fit leaves for the background thread, and the steps that thread runs.

    Taken on the caller's thread: the model's pickle (the snapshot), or, without one, the
    predictions on the training data. The background thread reads the model from the snapshot
    (unpickled once), and ``X``/``y`` as the caller passed them — never copied.
    """

    def __init__(self, estimator: Any, config: Config, run_id: str, uri: str) -> None:
        self.cls = type(estimator)
        self.config = config
        self.run_id = run_id
        self.uri = uri
        self.snapshot: bytes | None = None  # a plain pickle: safe to load in this process
        self.model_bytes: bytes | None = None  # the model file, where it is not the snapshot
        self.best_bytes: bytes | None = None  # a search's best estimator file, likewise
        self.best_cls: type | None = None
        self.best_estimator = False
        self.inputs: tuple[Any, Any, Any, Any] | None = None  # X, y, sample_weight, fit_predict labels
        self.predictions: _Predictions | None = None
        self.predicted = False  # predictions made on the caller's thread (no snapshot)
        self.report: Any = None
        self._model: Any = None
        self._estimator: Any = estimator  # only until the snapshot is taken

    # -- on the caller's thread
    def take_snapshot(self) -> None:
        """Pickle the model as it is now.

        With the standard pickler (in C, and classes by reference) whenever it can: loading that
        back in this process touches nothing of the user's. A cloudpickle of a class defined in
        ``__main__`` or in a function carries the class by value, and loading it in the process
        that defined the class resets the class's methods to copies bound to a snapshot of their
        globals. So a model only cloudpickle can write (it holds a lambda) is never loaded back
        here: its file is written as taken, and its predictions are made now, on this thread.
        """
        estimator = self._estimator
        fmt = self.config.serialization_format
        self.best_estimator = _is_search(estimator) and getattr(estimator, "best_estimator_", None) is not None
        try:
            self.snapshot = pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            if fmt == "pickle":
                raise
            self.model_bytes = _dumps(estimator, fmt)
            if self.best_estimator:
                best = estimator.best_estimator_
                self.best_bytes, self.best_cls = _dumps(best, fmt), type(best)

    def prepare_metrics(self, X: Any, y: Any, weight: Any, labels: Any) -> None:
        self.inputs = (X, y, weight, labels)
        if self.snapshot is None:  # no snapshot to predict from later: predict now
            self.predictions = _predictions(self._estimator, X, y, weight, labels)
            self.predicted = True

    # -- on the background thread
    def model(self) -> Any:
        if self._model is None:
            assert self.snapshot is not None
            self._model = pickle.loads(self.snapshot)
        return self._model

    def write_models(self) -> None:
        client = _client(self.uri)
        fmt = self.config.serialization_format
        data = self.model_bytes if self.snapshot is None else self._file_from_snapshot(self.snapshot, fmt)
        assert data is not None
        _write_model(client, self.run_id, data, self.cls, fmt, MODEL_ARTIFACT_PATH)
        if self.best_estimator:
            if self.snapshot is None:
                best_cls, best_data = self.best_cls, self.best_bytes
            else:
                best = self.model().best_estimator_
                best_cls, best_data = type(best), _dumps(best, fmt)
            assert best_data is not None and best_cls is not None
            _write_model(client, self.run_id, best_data, best_cls, fmt, "best_estimator")

    def _file_from_snapshot(self, snapshot: bytes, fmt: str) -> bytes:
        # A plain pickle is the cloudpickle file too, unless it names something in __main__
        # (cloudpickle writes that by value, so that another process can load it).
        if fmt == "pickle" or b"__main__" not in snapshot:
            return snapshot
        return _dumps(self.model(), fmt)

    def training_metrics(self) -> None:
        assert self.inputs is not None
        X, y, weight, labels = self.inputs
        preds = self.predictions if self.predicted else _predictions(self.model(), X, y, weight, labels)
        if preds is None:
            return
        metrics, self.report = _metrics_from(preds, X, y, weight)
        jobs.log_metrics(_client(self.uri), self.run_id,
                         {f"training_{k}": v for k, v in metrics.items() if v is not None})

    def plots(self) -> None:
        report = self.report
        if report is None:
            return
        from mltrail.integrations.sklearn import _plots

        client = _client(self.uri)
        client.log_bytes(self.run_id, _plots.confusion_matrix_png(report.confusion, report.labels,
                                                                  "Confusion matrix (training)"),
                         "training_confusion_matrix.png")
        if report.roc:
            client.log_bytes(self.run_id, _plots.curves_png(report.roc, kind="roc", title="ROC curve (training)"),
                             "training_roc_curve.png")
            client.log_bytes(self.run_id, _plots.curves_png(report.pr, kind="pr",
                                                            title="Precision-recall curve (training)"),
                             "training_precision_recall_curve.png")

    def dataset(self, X: Any, y: Any, name: str | None) -> None:
        _log_dataset(_client(self.uri), self.run_id, X, y, name)


def _is_search(estimator: Any) -> bool:
    search = sys.modules.get("sklearn.model_selection._search")  # not imported: no search exists
    if search is None:
        return False
    return isinstance(estimator, search.BaseSearchCV) and hasattr(estimator, "cv_results_")


def _log_search(
    call: Call, search: Any, config: Config, record: _FitRecord, steps: list[tuple[str, Callable[[], object]]]
) -> None:
    run = call.run
    best_params = getattr(search, "best_params_", None)
    if isinstance(best_params, Mapping):
        run.log_params({f"best_{k}": _param_text(v) for k, v in best_params.items()})
    best_score = getattr(search, "best_score_", None)
    if best_score is not None:
        try:
            run.log_metrics({"best_cv_score": float(best_score)})
        except (TypeError, ValueError):
            pass
    results = search.cv_results_  # a new dict per fit: safe to read later on another thread
    limit = config.max_tuning_runs
    refit = getattr(search, "refit", None)
    parent_name = type(search).__name__

    def job() -> None:
        client, run_id = _client(record.uri), record.run_id
        client.log_text(run_id, cv_results_csv(results), "cv_results.csv")
        candidates = best_candidates(results, limit, refit)
        if not candidates:
            return
        from mltrail.autolog.runs import AUTOLOG_TAG
        from mltrail.core.entities import Metric, Param
        info = client.store_for(run_id).get_run_info(run_id)  # the search's run, started moments ago
        now = int(time.time() * 1000)
        for rank, (index, params, metrics) in enumerate(candidates, start=1):
            child = client.create_run(
                info.experiment_id,
                tags={AUTOLOG_TAG: NAME, "estimator_name": parent_name, "candidate_index": str(index),
                      "candidate_rank": str(rank), **config.extra_tags},
                run_name=f"{info.run_name}-candidate-{rank}",
                parent_run_id=run_id,
            )
            child_id = child.info.run_id
            client.log_batch(
                child_id,
                metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                params=[Param(k, v) for k, v in params.items()],
            )
            client.set_terminated(child_id)

    steps.append(("search_children", job))


# ---------------------------------------------------------------------- training metrics
@dataclass(frozen=True)
class _Predictions:
    """What training metrics need from a fitted model: its outputs on the training data."""

    kind: str
    y_pred: Any = None
    proba: Any = None
    scores: Any = None  # decision_function of a binary classifier without predict_proba
    classes: Any = None
    score: float | None = None  # estimator.score when it is not the default metric
    labels: Any = None  # a clusterer's
    inertia: float | None = None


def _predictions(estimator: Any, X: Any, y: Any, weight: Any, labels: Any) -> _Predictions | None:
    """Run the fitted ``estimator`` on its training data (wherever it is safe to use)."""
    kind = estimator_kind(estimator)
    if kind == "classifier" and y is not None and hasattr(estimator, "predict"):
        classes = getattr(estimator, "classes_", None)
        proba = estimator.predict_proba(X) if hasattr(estimator, "predict_proba") else None
        y_pred = _predict_from_proba(estimator, classes, proba)
        if y_pred is None:
            y_pred = estimator.predict(X)
        scores = None
        if proba is None and classes is not None and len(classes) == 2 and hasattr(estimator, "decision_function"):
            scores = estimator.decision_function(X)
        return _Predictions(kind, y_pred, proba, scores, classes, _own_score(estimator, X, y, weight, kind))
    if kind == "regressor" and y is not None and hasattr(estimator, "predict"):
        y_pred = estimator.predict(X)
        return _Predictions(kind, y_pred, score=_own_score(estimator, X, y, weight, kind))
    if kind == "clusterer":
        inertia = getattr(estimator, "inertia_", None)
        if labels is None:
            labels = getattr(estimator, "labels_", None)
        return _Predictions(kind, labels=labels, inertia=None if inertia is None else float(inertia))
    return None


def _metrics_from(preds: _Predictions, X: Any, y: Any, weight: Any) -> tuple[dict[str, float], Any]:
    """``(metrics, classifier report or None)`` from a model's predictions on its training data."""
    from mltrail.integrations.sklearn import _metrics

    if preds.kind == "classifier":
        report = None
        if preds.classes is not None:
            report = _metrics.classifier_report(y, preds.y_pred, preds.classes, proba=preds.proba,
                                                scores=preds.scores, sample_weight=weight)
        if report is None:
            metrics = _classifier_metrics_slow(y, preds.y_pred, weight)
        else:
            metrics = dict(report.metrics)
        metrics["score"] = preds.score if preds.score is not None else metrics["accuracy_score"]
        return metrics, report
    if preds.kind == "regressor":
        metrics = _metrics.regressor_metrics(y, preds.y_pred, sample_weight=weight)
        if metrics is None:
            from sklearn import metrics as m

            metrics = {
                "mean_squared_error": float(m.mean_squared_error(y, preds.y_pred, sample_weight=weight)),
                "mean_absolute_error": float(m.mean_absolute_error(y, preds.y_pred, sample_weight=weight)),
                "r2_score": float(m.r2_score(y, preds.y_pred, sample_weight=weight)),
            }
            metrics["root_mean_squared_error"] = math.sqrt(metrics["mean_squared_error"])
        metrics["score"] = preds.score if preds.score is not None else metrics["r2_score"]
        return metrics, None
    metrics = {}
    if preds.inertia is not None:
        metrics["inertia"] = preds.inertia
    if preds.labels is not None:
        value = _metrics.silhouette(X, preds.labels)
        if value is not None:
            metrics["silhouette_score"] = value
    return metrics, None


# Classes whose ``predict`` is, by construction, the class of highest ``predict_proba`` (ties
# included): for their estimators the training predictions are read off the probabilities
# instead of being computed twice (a forest's prediction costs as much as its probabilities).
_PREDICT_IS_ARGMAX_PROBA = frozenset({
    "sklearn.ensemble._forest.ForestClassifier",
    "sklearn.ensemble._bagging.BaggingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.tree._classes.BaseDecisionTree",
    "sklearn.calibration.CalibratedClassifierCV",
})


def _predict_from_proba(estimator: Any, classes: Any, proba: Any) -> Any:
    import numpy as np

    if proba is None or classes is None:
        return None
    owner = next((k for k in type(estimator).__mro__ if "predict" in vars(k)), None)
    if owner is None or f"{owner.__module__}.{owner.__qualname__}" not in _PREDICT_IS_ARGMAX_PROBA:
        return None
    classes = np.asarray(classes)
    proba = np.asarray(proba)
    if classes.ndim != 1 or proba.ndim != 2 or proba.shape[1] != len(classes):
        return None
    return classes.take(np.argmax(proba, axis=1))


def _classifier_metrics_slow(y: Any, y_pred: Any, weight: Any) -> dict[str, float]:
    """scikit-learn's own functions, for labels the fast path does not cover (multilabel...)."""
    from sklearn import metrics as m

    out = {"accuracy_score": float(m.accuracy_score(y, y_pred, sample_weight=weight))}
    for name in ("precision_score", "recall_score", "f1_score"):
        fn = getattr(m, name)
        out[name] = float(fn(y, y_pred, average="weighted", sample_weight=weight, zero_division=0))
    return out


def _own_score(estimator: Any, X: Any, y: Any, weight: Any, kind: str) -> float | None:
    """``estimator.score(X, y)``, or None when ``score`` is the default metric (computed anyway)."""
    if _default_score(estimator, kind):
        return None
    plan = _plan(type(estimator).score) if weight is not None else None
    if plan is not None and "sample_weight" in plan[1]:
        return float(estimator.score(X, y, sample_weight=weight))
    return float(estimator.score(X, y))


def _default_score(estimator: Any, kind: str) -> bool:
    """Whether ``estimator.score`` is accuracy (classifier) or R² (regressor), as the mixins define."""
    from sklearn.base import ClassifierMixin, RegressorMixin
    from sklearn.pipeline import Pipeline

    mixin = ClassifierMixin if kind == "classifier" else RegressorMixin
    seen = 0
    while seen < 10:
        seen += 1
        owner = next((k for k in type(estimator).__mro__ if "score" in vars(k)), None)
        if owner is mixin:
            return True
        if owner is Pipeline and getattr(estimator, "steps", None):
            estimator = estimator.steps[-1][1]
            continue
        if _is_search(estimator) and getattr(estimator, "scoring", None) is None:
            best = getattr(estimator, "best_estimator_", None)
            if best is None:
                return False
            estimator = best
            continue
        return False
    return False


_plots_checked: bool | None = None


def _plots_available() -> bool:
    global _plots_checked
    if _plots_checked is None:
        from mltrail.integrations.sklearn import _plots

        _plots_checked = _plots.available()
    return _plots_checked


# ---------------------------------------------------------------------- models
def _dumps(obj: Any, fmt: str) -> bytes:
    if fmt == "pickle":
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        import cloudpickle
    except ImportError:
        from joblib.externals import cloudpickle  # scikit-learn always has joblib
    return bytes(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def model_meta(estimator: Any, fmt: str) -> dict[str, Any]:
    """What ``mltrail_model.json`` says about a logged model."""
    return _model_meta(type(estimator), fmt)


def _model_meta(cls: type, fmt: str) -> dict[str, Any]:
    import platform

    import sklearn

    return {
        "flavor": NAME,
        "format": fmt,
        "file": "model.pkl",
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "sklearn_version": sklearn.__version__,
        "python_version": platform.python_version(),
    }


def _write_model(client: Any, run_id: str, data: bytes, cls: type, fmt: str, artifact_path: str) -> None:
    client.log_bytes(run_id, data, f"{artifact_path}/model.pkl")
    client.log_text(run_id, json.dumps(_model_meta(cls, fmt), indent=2), f"{artifact_path}/{MODEL_META_FILE}")


def log_model(estimator: Any, artifact_path: str = MODEL_ARTIFACT_PATH, *, run_id: str | None = None,
              serialization_format: str = "cloudpickle") -> None:
    """Save a fitted estimator into a run's artifacts, loadable with :func:`load_model`.

    Example:
        >>> with mltrail.start_run() as run:
        ...     mltrail.sklearn.log_model(model)
        >>> mltrail.sklearn.load_model(run.info.run_id)
    """
    from mltrail.core import fluent
    from mltrail.core.client import Client

    if serialization_format not in SERIALIZATION_FORMATS:
        msg = f"serialization_format must be one of {SERIALIZATION_FORMATS}, got {serialization_format!r}"
        raise InvalidValueError(msg)
    if run_id is None:
        run_id = fluent._current().info.run_id
    client = Client()
    client.log_bytes(run_id, _dumps(estimator, serialization_format), f"{artifact_path}/model.pkl")
    client.log_text(run_id, json.dumps(model_meta(estimator, serialization_format), indent=2),
                    f"{artifact_path}/{MODEL_META_FILE}")


def load_model(run_id: str, artifact_path: str = MODEL_ARTIFACT_PATH) -> Any:
    """Load the estimator logged to run ``run_id`` (under ``model/`` unless told otherwise).

    Only load models you trust: a pickle runs code when it is loaded.

    Example:
        >>> model = mltrail.sklearn.load_model(run_id)
        >>> model.predict(X_test)
        >>> search_best = mltrail.sklearn.load_model(run_id, "best_estimator")
    """
    from mltrail.core.client import Client
    from mltrail.core.errors import NotFoundError

    jobs.flush(run_id=run_id)
    client = Client()
    local = client.download_artifacts(run_id, artifact_path)
    meta_path = os.path.join(local, MODEL_META_FILE)
    if not os.path.isfile(meta_path):
        msg = f"run {run_id} has no scikit-learn model at {artifact_path!r} (no {MODEL_META_FILE} there)"
        raise NotFoundError(msg)
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("flavor") != NAME:
        msg = (
            f"the model at {artifact_path!r} of run {run_id} was logged by the {meta.get('flavor')!r} "
            f"integration; load it with mltrail.{meta.get('flavor')}.load_model"
        )
        raise InvalidValueError(msg)
    with open(os.path.join(local, meta.get("file", "model.pkl")), "rb") as fh:
        return pickle.load(fh)


def flush(timeout: float | None = None) -> bool:
    """Wait until the background work of this integration (files, plots, inputs) is done.

    ``mltrail.flush()`` covers the tracking data; this covers what a ``fit`` left for the
    background thread. Returns False if ``timeout`` seconds ran out first.
    """
    return jobs.flush(timeout)


# ---------------------------------------------------------------------- cross-validation
def _pre_cross_validate(call: Call) -> None:
    call.state["start"] = time.perf_counter()
    run = call.run
    if not run:
        return
    estimator = call.args[0] if call.args else call.kwargs.get("estimator")
    if estimator is None or not hasattr(estimator, "get_params"):
        return
    call.state["uri"] = _tracking_uri()
    params, cut = estimator_params(estimator)
    scoring = call.kwargs.get("scoring")
    cv = call.kwargs.get("cv")
    params["cv"] = _param_text(cv if cv is not None else "default")
    if scoring is not None:
        params["scoring"] = _param_text(scoring)
    run.log_params(params)
    run.set_tags({**estimator_tags(estimator), "cross_validation": call.patch.path})
    if cut:
        text = json.dumps(cut, indent=2)
        _submit(call, "params_full", lambda client, run_id: client.log_text(run_id, text, "params_full.json"))
    X = call.args[1] if len(call.args) > 1 else call.kwargs.get("X")
    y = call.args[2] if len(call.args) > 2 else call.kwargs.get("y")
    if _config(call).log_datasets and X is not None:
        name = safely(NAME, "dataset", caller_variable, X)
        if name is not FAILED:
            _submit(call, "dataset", lambda client, run_id: _log_dataset(client, run_id, X, y, name))


def _post_cross_validate(call: Call, result: Any) -> None:
    run = call.run
    if not run:
        return
    scoring = call.kwargs.get("scoring")
    name = scoring if isinstance(scoring, str) else "score"
    per_fold, summary = cross_validation_metrics(result, name)
    for key, values in per_fold.items():
        for fold, value in enumerate(values):
            run.log_metrics({key: value}, step=fold)
    summary["cv_duration_s"] = time.perf_counter() - call.state.get("start", time.perf_counter())
    run.log_metrics(summary)


# ---------------------------------------------------------------------- the patches
_FIT_METHODS = ("fit", "fit_transform", "fit_predict")
_PREDICT_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function")
# sklearn.metrics functions that return one number from (y_true, y_pred / y_score), present in
# every supported version (1.4+).
METRIC_FUNCTIONS = (
    "accuracy_score", "balanced_accuracy_score", "f1_score", "fbeta_score", "precision_score",
    "recall_score", "jaccard_score", "matthews_corrcoef", "cohen_kappa_score", "hamming_loss",
    "zero_one_loss", "log_loss", "hinge_loss", "brier_score_loss", "roc_auc_score",
    "average_precision_score", "top_k_accuracy_score", "r2_score", "explained_variance_score",
    "max_error", "mean_absolute_error", "mean_squared_error", "root_mean_squared_error",
    "mean_squared_log_error", "root_mean_squared_log_error", "median_absolute_error",
    "mean_absolute_percentage_error", "mean_pinball_loss", "mean_poisson_deviance",
    "mean_gamma_deviance", "mean_tweedie_deviance", "d2_absolute_error_score",
    "d2_pinball_score", "d2_tweedie_score", "adjusted_rand_score", "rand_score",
    "adjusted_mutual_info_score", "mutual_info_score", "normalized_mutual_info_score",
    "homogeneity_score", "completeness_score", "v_measure_score", "fowlkes_mallows_score",
)
_CV_FUNCTIONS = ("cross_validate", "cross_val_score")

PATCHES = (
    *(
        Patch(owner="sklearn.base", path=f"BaseEstimator.{method}", pre=_pre_fit, post=_post_fit,
              child="if_used", when=_want_fit, subclasses=True)
        for method in _FIT_METHODS
    ),
    # Mixins outside BaseEstimator's tree that define fit_* or predict/score themselves.
    Patch(owner="sklearn.base", path="TransformerMixin.fit_transform", pre=_pre_fit, post=_post_fit,
          child="if_used", when=_want_fit),
    Patch(owner="sklearn.base", path="ClusterMixin.fit_predict", pre=_pre_fit, post=_post_fit,
          child="if_used", when=_want_fit),
    Patch(owner="sklearn.base", path="OutlierMixin.fit_predict", pre=_pre_fit, post=_post_fit,
          child="if_used", when=_want_fit),
    *(
        Patch(owner="sklearn.base", path=f"BaseEstimator.{method}", post=_post_training.post_predict, run="none",
              when=_post_training.want_tracked_instance, subclasses=True)
        for method in _PREDICT_METHODS
    ),
    *(
        Patch(owner="sklearn.linear_model._base", path=f"LinearClassifierMixin.{method}",
              post=_post_training.post_predict, run="none", when=_post_training.want_tracked_instance)
        for method in ("predict", "decision_function")
    ),
    Patch(owner="sklearn.base", path="BaseEstimator.score", post=_post_training.post_score, run="none",
          when=_post_training.want_tracked_instance, subclasses=True),
    *(
        Patch(owner="sklearn.base", path=f"{mixin}.score", post=_post_training.post_score, run="none",
              when=_post_training.want_tracked_instance)
        for mixin in ("ClassifierMixin", "RegressorMixin")
    ),
    *(
        Patch(owner=owner, path=fn, pre=_pre_cross_validate, post=_post_cross_validate, child="if_used")
        for owner in ("sklearn.model_selection", "sklearn.model_selection._validation")
        for fn in _CV_FUNCTIONS
    ),
    *(
        Patch(owner="sklearn.metrics", path=fn, post=_post_training.post_metric, run="none", when=_post_training.want_metric)
        for fn in METRIC_FUNCTIONS
    ),
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
    max_tuning_runs: int | None = 5,
    log_post_training_metrics: bool = True,
    log_training_metrics: bool = True,
    log_plots: bool = True,
    log_preprocessing: bool = False,
    serialization_format: str = "cloudpickle",
) -> None:
    """Record every scikit-learn ``fit``: params, metrics, plots, the model and the data's fingerprint.

    Args:
        disable: stop, and restore every original.
        exclusive: log only into runs autolog starts, never into a run the user started.
        silent: no warnings from this integration (details still go to DEBUG logging).
        log_models: save each fitted model under ``model/`` (see :func:`load_model`).
        log_datasets: record the fingerprint of ``X``/``y`` as a run input.
        log_every_n_steps: accepted for uniformity; unused (a fit has no steps to thin).
        extra_tags: tags set on every run autolog starts.
        disable_for_unsupported_versions: leave scikit-learn versions outside 1.4-1.9 alone.
        max_tuning_runs: child runs for a search's best candidates (None: all of them).
        log_post_training_metrics: log ``sklearn.metrics`` calls on an autologged model's
            predictions and its ``score`` on new data to the model's run.
        log_training_metrics: compute metrics on the training data after each fit.
        log_plots: draw the confusion matrix and ROC / precision-recall curves (matplotlib).
        log_preprocessing: also record standalone fits of scalers, encoders, imputers...
        serialization_format: ``"cloudpickle"`` or ``"pickle"``.

    Example:
        >>> from mltrail.integrations import sklearn as sklearn_autolog
        >>> sklearn_autolog.autolog(max_tuning_runs=10, log_plots=False)
        >>> GridSearchCV(SVC(), {"C": [0.1, 1, 10]}).fit(X, y)   # a parent run, 3 children
    """
    enable(NAME, Config(**locals()))


def _reset_for_tests() -> None:
    """Forget tracked models and predictions (test isolation)."""
    _post_training.reset()
