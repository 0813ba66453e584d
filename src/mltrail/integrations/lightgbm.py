"""LightGBM: a training callback, and autolog of ``lightgbm.train`` and the scikit-learn API.

What is captured for each training:

* params: those passed (``params`` of ``lightgbm.train``; ``get_params()`` of an estimator),
  ``num_boost_round``, and every default the booster settled on, read from the parameters
  block of the model text (``num_leaves=31``, ``learning_rate=0.1``, ``bagging_fraction=1``...);
* metrics: ``<valid set>-<metric>`` (``valid_0-binary_logloss``, ``valid-ndcg_at_5``) for every
  validation set and metric at ``step=iteration``, logged as training runs; under early
  stopping ``best_iteration`` (LightGBM's count: 1 is the first iteration), ``best_score``
  (the first metric on the first validation set, the one early stopping watches first) and
  ``stopped_iteration`` (0-based, the step of the last metrics);
* artifacts: ``feature_importance.json`` (``{"split": {...}, "gain": {...}}``) and its bar
  charts in ``feature_importance.svg``; the model under ``model/``: ``model.txt`` (LightGBM's text format) and, for an
  estimator, ``model.pkl``; :func:`load_model` loads back what was trained;
* inputs: fingerprints of the training data and validation sets (numpy, pandas,
  scipy.sparse; a file's path, size and mtime; a constructed ``Dataset``'s shape, feature
  names and labels).

Where it hooks in: ``lightgbm.train`` (patched as ``lightgbm.train`` and
``lightgbm.engine.train``) and ``LGBMModel.fit`` with every subclass that defines its own
``fit`` (``LGBMClassifier``, ``LGBMRegressor``, ``LGBMRanker``, user subclasses): the pre step
adds an :class:`MLTrailCallback` to ``callbacks``, which logs each iteration as it happens;
the post step logs the rest once, after training. A user who passes an
:class:`MLTrailCallback` gets that callback's logging and autolog stays out of the call.

Tested versions: LightGBM 4.0 through 4.x (``mltrail.autolog.registry``).

Example:
    >>> import mltrail, lightgbm as lgb
    >>> mltrail.autolog()
    >>> lgb.LGBMClassifier(n_estimators=200).fit(X, y, eval_set=[(X_val, y_val)],
    ...                                         callbacks=[lgb.early_stopping(10)])
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mltrail.autolog import NO_RUN, AutologConfig, Call, _safety, enable, jobs, safely
from mltrail.integrations import _boosting as b

if TYPE_CHECKING:
    from mltrail.core.entities import Dataset

NAME = "lightgbm"
IMPORTANCE_TYPES: tuple[str, ...] = ("split", "gain")
MODEL_ARTIFACT_PATH = "model"

_log = logging.getLogger("mltrail.integrations.lightgbm")


@dataclass(frozen=True)
class Config(AutologConfig):
    """LightGBM's options on top of the common ones.

    Attributes:
        importance_types: ``"split"`` and/or ``"gain"``; empty for none.
        log_importance_plots: also write the importances as SVG bar charts.
    """

    importance_types: tuple[str, ...] = IMPORTANCE_TYPES
    log_importance_plots: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "importance_types", _check_importance_types(self.importance_types))


def _check_importance_types(types: Iterable[str]) -> tuple[str, ...]:
    return b.check_importance_types(types, IMPORTANCE_TYPES, "LightGBM")


def _options(config: AutologConfig) -> b.Options:
    return b.options(config, IMPORTANCE_TYPES)


# ---------------------------------------------------------------------- pure helpers
def model_params(model_text: str) -> dict[str, str]:
    """Every param in the ``parameters:`` block of a LightGBM model text (empty ones left out)."""
    start = model_text.find("\nparameters:\n")
    if start < 0:
        return {}
    end = model_text.find("\nend of parameters", start)
    block = model_text[start + 13 : end if end >= 0 else len(model_text)]
    out: dict[str, str] = {}
    for line in block.splitlines():
        if line.startswith("[") and line.endswith("]"):
            key, sep, value = line[1:-1].partition(": ")
            if sep and value:
                out[key] = value
    return out


def iteration_metrics(results: Iterable[Any], keys: b.MetricKeys) -> dict[str, float]:
    """``env.evaluation_result_list`` as ``{key: value}``; ``lightgbm.cv``'s stdv as ``<key>-std``."""
    out: dict[str, float] = {}
    for item in results:
        key = keys(item[0], item[1])
        out[key] = float(item[2])
        if len(item) > 4 and item[4] is not None:
            out[key + "-std"] = float(item[4])
    return out


def training_summary(booster: Any, last_iteration: int | None = None) -> dict[str, float]:
    """``best_iteration``, ``best_score`` and ``stopped_iteration`` where early stopping set them.

    ``lightgbm.train`` hands back a booster cut at its best iteration, so the iteration training
    stopped at is the last one a callback saw (``last_iteration``), not the booster's count.
    """
    best = int(getattr(booster, "best_iteration", 0) or 0)
    if best <= 0:
        return {}
    out = {"best_iteration": float(best)}
    if last_iteration is not None and last_iteration >= 0:
        out["stopped_iteration"] = float(last_iteration)
    train_name = getattr(booster, "_train_data_name", "training")
    for data_name, per_metric in (getattr(booster, "best_score", None) or {}).items():
        if data_name != train_name and per_metric:
            out["best_score"] = b.finite_or_nan(next(iter(per_metric.values())))
            break
    return out


def importances(booster: Any, types: Iterable[str]) -> dict[str, dict[str, float]]:
    """``{importance type: {feature: score}}`` from ``Booster.feature_importance``."""
    names = [str(n) for n in booster.feature_name()]
    out: dict[str, dict[str, float]] = {}
    for kind in types:
        values = booster.feature_importance(importance_type=kind)
        out[kind] = {n: float(v) for n, v in zip(names, values, strict=False)}
    return out


def dataset_fingerprint(dataset: Any, name: str | None = None) -> Dataset | None:
    """A fingerprint of a ``lightgbm.Dataset``: of its raw data if still held, else its shape."""
    data = getattr(dataset, "data", None)
    label = getattr(dataset, "label", None)
    if isinstance(data, (str, os.PathLike)):
        return b.described_dataset(
            kind="lightgbm.Dataset", name=name, num_rows=None, num_columns=None,
            source=os.fspath(data), extra=[b.file_stamp(data)],
        )
    found = b.fingerprint(data, label, name=name) if data is not None else None
    if found is not None:
        return found
    try:
        return b.described_dataset(
            kind="lightgbm.Dataset",
            name=name,
            num_rows=int(dataset.num_data()),
            num_columns=int(dataset.num_feature()),
            feature_names=dataset.get_feature_name(),
            labels=dataset.get_label(),
        )
    except Exception:  # noqa: BLE001 - LightGBMError: neither raw data nor a constructed Dataset
        _log.debug("no fingerprint for this lightgbm.Dataset", exc_info=True)
        return None


# ---------------------------------------------------------------------- logging a trained model
def _finish(
    run: Any,
    booster: Any,
    opts: b.Options,
    *,
    skip_params: Iterable[str] = (),
    estimator: Any = None,
    last_iteration: int | None = None,
    snapshot: bool = True,
) -> None:
    """Log what a finished training left: default params, summary, importances, the model.

    On the caller's thread: the params (from one iteration's model text: its parameters block
    is the whole model's) and the summary. The model text (tens of milliseconds for a few
    hundred trees), the importances and the files go to the background, reading ``booster``
    there — unless ``snapshot``: then the text and importances are taken now, because the
    booster may still change (``keep_training_booster=True``, or a callback's ``finish``
    called on a booster we know nothing of). A booster that ``lightgbm.train`` built and
    returned, or that an estimator's ``fit`` replaced its own with, is not changed by
    LightGBM afterwards (further training builds a new booster), and its C calls are
    thread-safe.
    """
    head = booster.model_to_string(num_iteration=1)
    b.log_params_tolerant(run, b.loggable_params(model_params(head), skip=skip_params))
    summary = training_summary(booster, last_iteration)
    if summary:
        run.log_metrics(summary)
    types, plots = opts.importance_types, opts.log_importance_plots
    found = importances(booster, types) if snapshot and types else None
    text = booster.model_to_string() if snapshot and opts.log_models else None
    steps: list[tuple[str, Any]] = []
    if types:
        steps.append(("importances", lambda sink: b.log_importances(
            sink, found if found is not None else importances(booster, types), plots=plots)))
    if opts.log_models:
        meta = _model_meta(booster, estimator)
        # The estimator's own state, pickled now with the booster left as a reference: a
        # refit replaces what it holds; the booster is filled in from its text later.
        skeleton = _pickle_skeleton(estimator, booster) if estimator is not None else None
        steps.append(("model", lambda sink: _log_model(
            sink, booster, text if text is not None else booster.model_to_string(), skeleton, meta)))
    b.later(NAME, run, steps)


def _model_meta(booster: Any, estimator: Any) -> dict[str, Any]:
    import lightgbm

    model_class, model_file = "lightgbm.basic.Booster", "model.txt"
    if estimator is not None:
        # An estimator comes back through pickle (its classes, params and the booster);
        # model.txt stays as the portable copy any LightGBM can read.
        cls = type(estimator)
        model_class, model_file = f"{cls.__module__}.{cls.__qualname__}", "model.pkl"
    return {
        "flavor": NAME,
        "model_class": model_class,
        "model_file": model_file,
        "booster_file": "model.txt",
        "lightgbm_version": lightgbm.__version__,
        "num_trees": int(booster.num_trees()),
        "best_iteration": int(getattr(booster, "best_iteration", 0) or 0),
    }


def _log_model(run: Any, booster: Any, text: str, skeleton: bytes | None, meta: Mapping[str, Any]) -> None:
    files = {"model.txt": text.encode("utf-8")}
    if skeleton is not None:
        files["model.pkl"] = pickle_estimator(_unpickle_skeleton(skeleton, booster), booster, text)
    b.log_model_files(run, MODEL_ARTIFACT_PATH, files, meta)


def _pickle_skeleton(estimator: Any, booster: Any) -> bytes:
    """``estimator`` pickled with ``booster`` left as a reference (cheap: no trees)."""
    import io

    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.persistent_id = lambda obj: "booster" if obj is booster else None  # type: ignore[method-assign]
    pickler.dump(estimator)
    return buf.getvalue()


def _unpickle_skeleton(data: bytes, booster: Any) -> Any:
    import io

    unpickler = pickle.Unpickler(io.BytesIO(data))
    unpickler.persistent_load = lambda pid: booster  # type: ignore[method-assign]
    return unpickler.load()


def pickle_estimator(estimator: Any, booster: Any, text: str) -> bytes:
    """Pickle ``estimator`` as ``pickle.dumps`` would, reusing ``text`` for its booster.

    A Booster pickles as its model text; serialising 200 trees again costs as much as the text
    we already hold, so the estimator's booster is pickled from ``text`` when that is the whole
    model (as ``Booster.__getstate__`` would), unpickled by LightGBM's own ``__setstate__``.
    """
    import copyreg
    import io

    import lightgbm

    best = int(getattr(booster, "best_iteration", 0) or 0)
    whole = text if best <= 0 or best == booster.current_iteration() else None

    def reduce_booster(bst: Any) -> Any:
        if bst is booster and whole is not None:
            state = {k: v for k, v in bst.__dict__.items() if k not in ("train_set", "valid_sets")}
            state["_handle"] = whole
        else:
            state = bst.__getstate__()
        return (copyreg.__newobj__, (type(bst),), state)  # type: ignore[attr-defined]

    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, lightgbm.Booster: reduce_booster}
    pickler.dump(estimator)
    return buf.getvalue()


def load_model(run_id: str, artifact_path: str = MODEL_ARTIFACT_PATH) -> Any:
    """Load the model a run logged: a ``lightgbm.Booster``, or the estimator that was fitted.

    An estimator is unpickled: load only runs you trust, as with any pickle. The booster alone
    is always in ``model.txt`` (``lightgbm.Booster(model_file=...)``).

    Example:
        >>> clf = mltrail.lightgbm.load_model(run.info.run_id)   # an LGBMClassifier
        >>> clf.predict(X_test)
    """
    import lightgbm

    local, meta = b.fetch_model(run_id, artifact_path, NAME)
    model_file = os.path.basename(str(meta.get("model_file", "model.txt")))
    path = os.path.join(local, model_file)
    if model_file.endswith(".pkl"):
        with open(path, "rb") as fh:
            return pickle.load(fh)
    return lightgbm.Booster(model_file=path)


# ---------------------------------------------------------------------- the callback
class MLTrailCallback:
    """Log a LightGBM training into an mltrail run: params and each iteration's metrics.

    Pass it in ``callbacks`` of ``lightgbm.train`` or of an estimator's ``fit``. It logs into
    the run given by ``run_id``, else the active run, else a run it starts. On the first
    iteration it logs the training params; on every iteration each validation set's metrics
    at ``step=iteration``. LightGBM tells a callback nothing when training ends (early stopping
    ends it with an exception raised past the callbacks), so call :meth:`finish` with the
    trained booster to log the defaults, ``best_iteration``, importances and the model, and to
    end a run the callback started. ``mltrail.autolog()`` does all of this without a callback.

    Args:
        run_id: the run to log into (default: the active run, or a new one).
        log_models: :meth:`finish` saves the model (``model/``), loadable with :func:`load_model`.
        importance_types: ``"split"`` and/or ``"gain"``.
        log_importance_plots: also write SVG bar charts of the importances.
        log_every_n_steps: log the evaluation every n iterations.

    Example:
        >>> from mltrail.integrations.lightgbm import MLTrailCallback
        >>> cb = MLTrailCallback()
        >>> booster = lgb.train(params, dtrain, 100, valid_sets=[dvalid], callbacks=[cb])
        >>> cb.finish(booster)
    """

    before_iteration = False  # LightGBM calls it after each iteration's evaluation

    def __init__(
        self,
        run_id: str | None = None,
        *,
        log_models: bool = True,
        importance_types: Iterable[str] = IMPORTANCE_TYPES,
        log_importance_plots: bool = True,
        log_every_n_steps: int = 1,
    ) -> None:
        self.run_id = run_id
        self.options = b.Options(
            log_models=bool(log_models),
            importance_types=_check_importance_types(importance_types),
            log_importance_plots=bool(log_importance_plots),
            log_every_n_steps=b.check_every_n(log_every_n_steps),
        )
        self._reset()

    def _reset(self) -> None:
        self._run: Any = NO_RUN
        self._started: Any = None
        self._logged: set[str] = set()
        self._keys = b.MetricKeys()
        self.last_iteration: int | None = None  # the last iteration LightGBM called us for

    # Only the options travel through copy and pickle (an estimator's clone, a worker).
    def __getstate__(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __call__(self, env: Any) -> None:
        if env.iteration == env.begin_iteration:
            safely(NAME, "before_training", self._open, env)
        self._after_iteration(env)

    def _after_iteration(self, env: Any) -> None:
        # Once per boosting round: one dict, one log_metrics, no other call when all goes well.
        iteration = self.last_iteration = env.iteration
        results = env.evaluation_result_list
        if results and iteration % self.options.log_every_n_steps == 0 and self._run:
            try:
                if _safety._faults_on:
                    _safety._fault_check(NAME, "after_iteration")
                self._run.log_metrics(iteration_metrics(results, self._keys), step=iteration)
            except Exception as exc:
                if _safety.strict():
                    raise
                _safety.report(NAME, "after_iteration", exc)

    def _open(self, env: Any) -> None:
        b.end_started(self._started)  # a run left open by an earlier training without finish()
        self._reset()
        self._run, self._started = b.resolve_run(self.run_id, NAME)
        params = b.loggable_params(env.params)
        b.log_params_tolerant(self._run, params)
        self._logged = set(params)

    def finish(self, booster: Any) -> None:
        """Log the trained ``booster`` (defaults, summary, importances, model); end our run."""
        safely(NAME, "after_training", self._close, booster)

    def _close(self, booster: Any) -> None:
        try:
            if self._run:
                _finish(self._run, booster, self.options, skip_params=self._logged,
                        last_iteration=self.last_iteration)
        finally:
            if self._started is not None:
                jobs.flush(run_id=self._started.info.run_id)  # its files, before its end
            b.end_started(self._started)
            self._started = None
            self._run = NO_RUN


class _AutologCallback(MLTrailCallback):
    """The callback autolog adds: iterations into the call's run; the post step does the rest."""

    def __init__(self, run: Any, opts: b.Options) -> None:
        self.run_id = None
        self.options = opts
        self._reset()
        self._run = run

    def __getstate__(self) -> dict[str, Any]:
        return {"run_id": None, "options": self.options}

    __call__ = MLTrailCallback._after_iteration


def _has_our_callback(callbacks: Any) -> bool:
    return b.has_callback(callbacks, (MLTrailCallback,))


# ---------------------------------------------------------------------- lightgbm.train
def _train_function() -> Any:
    import lightgbm.engine

    return lightgbm.engine.train


def _when_train(call: Call) -> bool:
    return not _has_our_callback(b.argument(_train_function(), call.args, call.kwargs, "callbacks"))


def train_call_params(train: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The params of one ``lightgbm.train`` call: ``params`` plus ``num_boost_round``."""
    params = dict(b.argument(train, args, kwargs, "params") or {})
    params.setdefault("num_boost_round", b.argument(train, args, kwargs, "num_boost_round", 100))
    feval = b.argument(train, args, kwargs, "feval")
    if feval is not None:
        params["feval"] = feval
    return params


def _pre_train(call: Call) -> None:
    run = call.run
    if not run:
        return
    train = _train_function()
    params = b.loggable_params(train_call_params(train, call.args, call.kwargs))
    b.log_params_tolerant(run, params)
    call.state["logged"] = set(params)
    if call.config.log_datasets:
        inputs = b.Inputs()
        _log_datasets(
            inputs,
            b.argument(train, call.args, call.kwargs, "train_set"),
            b.argument(train, call.args, call.kwargs, "valid_sets"),
            b.argument(train, call.args, call.kwargs, "valid_names"),
        )
        inputs.write_later(NAME, run)
    callbacks = b.argument(train, call.args, call.kwargs, "callbacks")
    callback = call.state["callback"] = _AutologCallback(run, _options(call.config))
    call.args, call.kwargs = b.set_argument(
        train, call.args, call.kwargs, "callbacks", [*(callbacks or ()), callback]
    )


def _log_datasets(run: Any, train_set: Any, valid_sets: Any, valid_names: Any) -> None:
    if train_set is None:
        return
    if not isinstance(valid_sets, (list, tuple)):
        valid_sets = [valid_sets] if valid_sets is not None else []
    if isinstance(valid_names, str):
        valid_names = [valid_names]
    names = list(valid_names or [])
    train_name = None
    for i, ds in enumerate(valid_sets):
        if ds is train_set and i < len(names):
            train_name = names[i]
    found = dataset_fingerprint(train_set, train_name)
    if found is not None:
        run.log_input(found, context="training")
    for i, ds in enumerate(valid_sets):
        if ds is train_set:
            continue
        found = dataset_fingerprint(ds, names[i] if i < len(names) else f"valid_{i}")
        if found is not None:
            run.log_input(found, context="evaluation")


def _last_iteration(call: Call) -> int | None:
    callback = call.state.get("callback")
    return callback.last_iteration if callback is not None else None


def _post_train(call: Call, booster: Any) -> None:
    if call.run:
        keep = b.argument(_train_function(), call.args, call.kwargs, "keep_training_booster", False)
        _finish(call.run, booster, _options(call.config), skip_params=call.state.get("logged", ()),
                last_iteration=_last_iteration(call), snapshot=bool(keep))


# ---------------------------------------------------------------------- the scikit-learn API
def _include_estimator(cls: type) -> bool:
    return not cls.__module__.startswith("lightgbm.dask")  # Dask estimators train on workers


def _fit_function(call: Call) -> Any:
    return type(call.instance).fit


def _when_fit(call: Call) -> bool:
    fit = _fit_function(call)
    return not _has_our_callback(b.argument(fit, (call.instance, *call.args), call.kwargs, "callbacks"))


def estimator_params(estimator: Any) -> dict[str, str]:
    """An estimator's params as strings (unset ones left out; the booster fills them in)."""
    return b.loggable_params(estimator.get_params(deep=False))


def _pre_fit(call: Call) -> None:
    run = call.run
    if not run:
        return
    est = call.instance
    call.state["logged"] = b.log_estimator(run, est, estimator_params(est))
    fit = _fit_function(call)
    full_args = (est, *call.args)
    if call.config.log_datasets:
        inputs = b.Inputs()
        X = b.argument(fit, full_args, call.kwargs, "X")
        train = b.fingerprint(X, b.argument(fit, full_args, call.kwargs, "y"))
        if train is not None:
            inputs.log_input(train, context="training")
        names = b.argument(fit, full_args, call.kwargs, "eval_names") or []
        for i, (eval_X, eval_y) in enumerate(eval_pairs(fit, full_args, call.kwargs)):
            if eval_X is X:
                continue
            found = b.fingerprint(eval_X, eval_y, name=names[i] if i < len(names) else f"valid_{i}")
            if found is not None:
                inputs.log_input(found, context="evaluation")
        inputs.write_later(NAME, run)
    callbacks = b.argument(fit, full_args, call.kwargs, "callbacks")
    callback = call.state["callback"] = _AutologCallback(run, _options(call.config))
    new_args, call.kwargs = b.set_argument(fit, full_args, call.kwargs, "callbacks", [*(callbacks or ()), callback])
    call.args = new_args[1:]


def eval_pairs(fit: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """The ``(X, y)`` validation pairs of a ``fit`` call: ``eval_set``, or ``eval_X``/``eval_y``."""
    eval_set = b.argument(fit, args, kwargs, "eval_set")
    if eval_set is not None:
        pairs = [eval_set] if isinstance(eval_set, tuple) else list(eval_set)
        return [(p[0], p[1]) for p in pairs if isinstance(p, (tuple, list)) and len(p) >= 2]
    eval_X, eval_y = kwargs.get("eval_X"), kwargs.get("eval_y")
    if eval_X is None or eval_y is None:
        return []
    if isinstance(eval_X, tuple):
        return list(zip(eval_X, eval_y if isinstance(eval_y, tuple) else (eval_y,), strict=False))
    return [(eval_X, eval_y)]


def _post_fit(call: Call, result: Any) -> None:
    run = call.run
    if run:
        est = call.instance
        _finish(run, est.booster_, _options(call.config), skip_params=call.state.get("logged", ()),
                estimator=est, last_iteration=_last_iteration(call), snapshot=False)


# ---------------------------------------------------------------------- the patches
PATCHES = b.patches(
    "lightgbm", "lightgbm.engine", "lightgbm.sklearn:LGBMModel",
    train=(_pre_train, _post_train, _when_train),
    fit=(_pre_fit, _post_fit, _when_fit),
    include=_include_estimator,
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
    importance_types: Iterable[str] = IMPORTANCE_TYPES,
    log_importance_plots: bool = True,
) -> None:
    """Autolog ``lightgbm.train`` and the scikit-learn API (``LGBMClassifier`` and friends).

    Args:
        disable: stop, and restore LightGBM's functions and methods.
        exclusive: log only into runs autolog starts, never into the user's active run.
        silent: no warnings from this integration.
        log_models: save each trained model under ``model/``.
        log_datasets: record the training data's and validation sets' fingerprints.
        log_every_n_steps: log the evaluation every n iterations (default: every iteration).
        extra_tags: tags set on every run autolog starts.
        disable_for_unsupported_versions: leave an untested LightGBM version unpatched.
        importance_types: ``"split"`` and/or ``"gain"``.
        log_importance_plots: write SVG bar charts next to the importance JSON files.

    Example:
        >>> import mltrail.integrations.lightgbm as mll
        >>> mll.autolog(importance_types=["gain"])
        >>> lgb.train(params, dtrain, 200, valid_sets=[dvalid])
    """
    enable(NAME, Config(**locals()))
