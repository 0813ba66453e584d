"""XGBoost: a training callback, and autolog of ``xgboost.train`` and the scikit-learn API.

What is captured for each training:

* params: those passed (``params`` of ``xgboost.train``; ``get_params()`` of an estimator),
  the call's own (``num_boost_round``, ``early_stopping_rounds``, ``maximize``), and every
  default the booster settled on, read from ``Booster.save_config()`` (``max_depth=6``,
  ``eta=0.3``, ``tree_method=auto``...);
* metrics: ``<eval set>-<metric>`` (``validation_0-logloss``) for every eval set and metric at
  ``step=iteration``; under early stopping ``best_iteration`` (0-based, as XGBoost counts),
  ``best_score`` and ``stopped_iteration``;
* artifacts: ``feature_importance.json`` (``{type: {feature: score}}``) and a bar chart per type
  in ``feature_importance.svg``, for ``weight``, ``gain``, ``cover``, ``total_gain`` and
  ``total_cover``; the model under
  ``model/`` (UBJSON by default, or JSON) with ``mltrail_model.json``, which
  :func:`load_model` reads to load it back as the class that was trained;
* inputs: the training data's and eval sets' fingerprints: ``num_row``, ``num_col``, feature
  names and types and sampled labels of a ``DMatrix``; numpy, pandas or scipy.sparse ``X``/``y``
  of an estimator's ``fit``.

Where it hooks in:

* ``xgboost.train`` (patched as ``xgboost.train`` and ``xgboost.training.train``): the pre step
  logs the params and inputs and adds an :class:`MLTrailCallback` to ``callbacks``, which logs
  each iteration's evaluation as training runs; the post step logs the rest.
* ``XGBModel.fit`` and every subclass that defines its own ``fit`` (``XGBClassifier``,
  ``XGBRanker``, the random-forest classes, user subclasses; ``XGBRegressor`` inherits
  ``XGBModel.fit``): one run per outermost ``fit`` — the ``train`` it calls inside is part of
  it, and the scikit-learn integration leaves these classes to this one. An estimator gives no
  way to pass a callback to one ``fit`` without changing its params, so its per-iteration
  metrics are read from ``evals_result()`` when ``fit`` returns, each at its own step.
* A user who passes an :class:`MLTrailCallback` (to ``train`` or in an estimator's
  ``callbacks``) gets that callback's logging and autolog stays out of the call.

Everything costly happens once, after the last iteration: the config read, importances (C++
calls), the model bytes (``save_raw``) and an SVG chart drawn with string formatting (no
matplotlib import). The per-iteration work is one dict of floats handed to the background
writer.

Tested versions: XGBoost 2.0 through 3.x (``mltrail.autolog.registry``).

Example:
    >>> import mltrail, xgboost as xgb
    >>> mltrail.autolog()
    >>> booster = xgb.train({"max_depth": 3}, dtrain, 200, evals=[(dvalid, "valid")],
    ...                     early_stopping_rounds=10)
    >>> mltrail.last_active_run().data.metrics["best_iteration"]
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mltrail.autolog import NO_RUN, AutologConfig, Call, enable, jobs, safely
from mltrail.core.errors import InvalidValueError
from mltrail.integrations import _boosting as b

if TYPE_CHECKING:
    from mltrail.core.entities import Dataset

NAME = "xgboost"
IMPORTANCE_TYPES: tuple[str, ...] = ("weight", "gain", "cover", "total_gain", "total_cover")
MODEL_FORMATS: tuple[str, ...] = ("ubj", "json")
MODEL_ARTIFACT_PATH = "model"

_log = logging.getLogger("mltrail.integrations.xgboost")


@dataclass(frozen=True)
class Config(AutologConfig):
    """XGBoost's options on top of the common ones.

    Attributes:
        importance_types: the importance types logged; empty for none.
        model_format: ``"ubj"`` (UBJSON, XGBoost's default) or ``"json"``.
        log_importance_plots: also write the importances as SVG bar charts.
    """

    importance_types: tuple[str, ...] = IMPORTANCE_TYPES
    model_format: str = "ubj"
    log_importance_plots: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "importance_types", _check_importance_types(self.importance_types))
        _check_model_format(self.model_format)


def _check_importance_types(types: Iterable[str]) -> tuple[str, ...]:
    return b.check_importance_types(types, IMPORTANCE_TYPES, "XGBoost")


def _check_model_format(fmt: str) -> None:
    if fmt not in MODEL_FORMATS:
        msg = f"model_format must be one of {list(MODEL_FORMATS)}, got {fmt!r}"
        raise InvalidValueError(msg)


# ---------------------------------------------------------------------- pure helpers
_CONFIG_SKIP = frozenset({"learner_model_param", "hist_train_param"})  # model state, debugging
_CONFIG_STATE = frozenset({"num_trees"})  # counted, not set


def config_params(config_json: str) -> dict[str, str]:
    """Every param a booster trained with, from ``Booster.save_config()``, as strings.

    Reads the ``*_param`` sections of the learner (generic, learner, booster, tree, objective
    params) and ``num_class``, leaving out model state (``num_trees``, ``base_score``),
    debugging knobs and empty values; ``eval_metric`` comes from the metrics the learner
    evaluated.
    """
    import json

    learner = json.loads(config_json).get("learner", {})
    out: dict[str, str] = {}

    def walk(node: Any, section: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, (dict, list)):
                    walk(value, key)
                elif (
                    section.endswith("_param")
                    and section not in _CONFIG_SKIP
                    and key not in _CONFIG_STATE
                    and key not in out
                ):
                    text = b.short_number(str(value))
                    if text:
                        out[key] = text
        elif isinstance(node, list):
            for item in node:
                walk(item, section)

    walk(learner, "")
    num_class = learner.get("learner_model_param", {}).get("num_class", "0")
    if num_class not in ("", "0"):
        out.setdefault("num_class", str(num_class))
    metrics = [str(m["name"]) for m in learner.get("metrics", ()) if isinstance(m, dict) and m.get("name")]
    if metrics:
        out.setdefault("eval_metric", metrics[0] if len(metrics) == 1 else str(metrics))
    return out


def iteration_metrics(evals_log: Mapping[str, Mapping[str, Sequence[Any]]], keys: b.MetricKeys) -> dict[str, float]:
    """The latest value of every (eval set, metric) in XGBoost's ``evals_log``.

    ``xgboost.cv`` reports ``(mean, std)`` pairs: the mean goes under the key, the standard
    deviation under ``<key>-std``.
    """
    out: dict[str, float] = {}
    for data_name, per_metric in evals_log.items():
        for metric_name, values in per_metric.items():
            if not values:
                continue
            value = values[-1]
            key = keys(data_name, metric_name)
            if isinstance(value, tuple):
                out[key] = float(value[0])
                out[key + "-std"] = float(value[1])
            else:
                out[key] = float(value)
    return out


def training_summary(booster: Any) -> dict[str, float]:
    """``best_iteration``, ``best_score`` and ``stopped_iteration`` where early stopping set them."""
    best = booster.attr("best_iteration")
    if best is None:
        return {}
    out = {"best_iteration": float(int(best)), "stopped_iteration": float(booster.num_boosted_rounds() - 1)}
    score = booster.attr("best_score")
    if score is not None:
        out["best_score"] = b.finite_or_nan(score)
    return out


def importances(booster: Any, types: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{importance type: {feature: score}}``; a type the booster cannot give is left out."""
    out: dict[str, dict[str, Any]] = {}
    for kind in types:
        try:
            scores = booster.get_score(importance_type=kind)
        except Exception:  # noqa: BLE001 - e.g. gblinear has only "weight"; XGBoostError, ValueError
            _log.debug("no %s importance for this booster", kind, exc_info=True)
            continue
        out[kind] = {str(k): (list(v) if isinstance(v, (list, tuple)) else float(v)) for k, v in scores.items()}
    return out


def dmatrix_dataset(dmatrix: Any, name: str | None = None) -> Dataset:
    """A fingerprint of a ``DMatrix``: its shape, feature names and types, sampled labels."""
    labels = dmatrix.get_label()
    return b.described_dataset(
        kind=f"xgboost.{type(dmatrix).__name__}",
        name=name,
        num_rows=int(dmatrix.num_row()),
        num_columns=int(dmatrix.num_col()),
        feature_names=dmatrix.feature_names,
        feature_types=dmatrix.feature_types,
        labels=labels if len(labels) else None,
    )


def train_call_params(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The params of one ``xgboost.train(params, dtrain, num_boost_round=10, *, ...)`` call."""
    params = b.pairs_to_dict(args[0] if args else kwargs.get("params"))
    params["num_boost_round"] = args[2] if len(args) > 2 else kwargs.get("num_boost_round", 10)
    for name in ("early_stopping_rounds", "maximize"):
        if kwargs.get(name) is not None:
            params[name] = kwargs[name]
    for name in ("obj", "custom_metric", "feval"):
        if kwargs.get(name) is not None:
            params[name] = kwargs[name]  # logged by function name
    return params


def _xgboost_class(cls: type) -> type:
    """The nearest class defined by XGBoost itself (what load_model will instantiate)."""
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] == "xgboost":
            return klass
    return cls


# ---------------------------------------------------------------------- logging a trained model
def _options(config: AutologConfig) -> b.Options:
    return b.options(config, IMPORTANCE_TYPES)


def _finish(
    run: Any, booster: Any, opts: b.Options, *, skip_params: Iterable[str] = (), estimator: Any = None
) -> None:
    """Log what a finished training left: default params, summary, importances, the model.

    What reads the booster happens now, on the caller's thread (the config, the importances,
    the model's bytes: a couple of milliseconds for a few hundred trees), since the user may
    use the booster again at once. Writing the files — and an estimator's own file, made from
    a private copy of the booster — happens in the background.
    """
    b.log_params_tolerant(run, b.loggable_params(config_params(booster.save_config()), skip=skip_params))
    summary = training_summary(booster)
    if summary:
        run.log_metrics(summary)
    steps: list[tuple[str, Any]] = []
    if opts.importance_types:
        found, plots = importances(booster, opts.importance_types), opts.log_importance_plots
        steps.append(("importances", lambda sink: b.log_importances(sink, found, plots=plots)))
    if opts.log_models:
        fmt = opts.model_format
        raw = bytes(booster.save_raw(raw_format=fmt))
        rounds = int(booster.num_boosted_rounds())
        # The estimator's state now (a refit replaces its attributes, it does not change them).
        state = dict(vars(estimator)) if estimator is not None else None
        cls = type(estimator) if estimator is not None else type(booster)
        steps.append(("model", lambda sink: _log_model(sink, raw, rounds, cls, state, fmt)))
    b.later(NAME, run, steps)


def _log_model(run: Any, raw: bytes, rounds: int, cls: type, state: dict[str, Any] | None, fmt: str) -> None:
    import xgboost

    filename = f"model.{fmt}"
    data = None
    if state is not None:
        # The estimator's own save_model keeps its scikit-learn attributes with the trees: run
        # it on a copy holding a copy of the booster, so that the user's objects are not touched.
        clone = object.__new__(cls)
        clone.__dict__.update(state)
        clone._Booster = xgboost.Booster(model_file=bytearray(raw))
        try:
            data = b.saved_with(clone.save_model, filename)
        except TypeError:
            # XGBoost 2.x with scikit-learn >= 1.6 cannot tell the estimator type
            # (`_estimator_type` undefined): the estimator's save_model fails for the user too.
            _log.debug("estimator save_model failed; logging the booster instead", exc_info=True)
    if data is None:
        data = raw
        cls = xgboost.Booster
    cls = _xgboost_class(cls)
    meta = {
        "flavor": NAME,
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        "model_file": filename,
        "model_format": fmt,
        "xgboost_version": xgboost.__version__,
        "num_boosted_rounds": rounds,
    }
    b.log_model_files(run, MODEL_ARTIFACT_PATH, {filename: data}, meta)


def load_model(run_id: str, artifact_path: str = MODEL_ARTIFACT_PATH) -> Any:
    """Load the model a run logged: a ``Booster``, or the estimator class that was fitted.

    Example:
        >>> clf = mltrail.xgboost.load_model(run.info.run_id)   # an XGBClassifier
        >>> clf.predict(X_test)
    """
    import xgboost

    local, meta = b.fetch_model(run_id, artifact_path, NAME)
    path = os.path.join(local, os.path.basename(str(meta.get("model_file", "model.ubj"))))
    cls = _model_class(str(meta.get("model_class", "xgboost.core.Booster")))
    if issubclass(cls, xgboost.Booster):
        booster = cls()
        booster.load_model(path)
        return booster
    model = cls()
    model.load_model(path)
    return model


def _model_class(qualified: str) -> type:
    import xgboost
    from xgboost.sklearn import XGBModel

    module, _, qualname = qualified.rpartition(".")
    if module.split(".")[0] != "xgboost":
        msg = f"model class {qualified!r} is not an XGBoost class; refusing to import it"
        raise InvalidValueError(msg)
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, (xgboost.Booster, XGBModel))):
        msg = f"model class {qualified!r} is neither a Booster nor an XGBoost estimator"
        raise InvalidValueError(msg)
    return obj


# ---------------------------------------------------------------------- the callback
def _define_callback() -> type:
    from xgboost.callback import TrainingCallback

    class MLTrailCallback(TrainingCallback):  # type: ignore[misc]
        """Log an XGBoost training into an mltrail run: params, metrics, importances, model.

        Pass it in ``callbacks`` of ``xgboost.train`` (or of an estimator). It logs into the
        run given by ``run_id``, else the active run, else a run it starts and ends when
        training ends. Each iteration's evaluation is logged at ``step=iteration``; after the
        last iteration it logs the booster's params (defaults included), ``best_iteration`` /
        ``best_score`` under early stopping, feature importances and the model. With
        ``mltrail.autolog()`` on as well, the call is left to this callback (nothing is logged
        twice). A callback object can be reused for several trainings.

        Args:
            run_id: the run to log into (default: the active run, or a new one).
            log_models: save the model (``model/``), loadable with :func:`load_model`.
            model_format: ``"ubj"`` or ``"json"``.
            importance_types: importance types to log (``weight``, ``gain``, ``cover``,
                ``total_gain``, ``total_cover``).
            log_importance_plots: also write SVG bar charts of the importances.
            log_every_n_steps: log the evaluation every n iterations.

        Example:
            >>> from mltrail.integrations.xgboost import MLTrailCallback
            >>> with mltrail.start_run():
            ...     xgb.train(params, dtrain, 100, evals=[(dvalid, "valid")],
            ...               callbacks=[MLTrailCallback()])
        """

        def __init__(
            self,
            run_id: str | None = None,
            *,
            log_models: bool = True,
            model_format: str = "ubj",
            importance_types: Iterable[str] = IMPORTANCE_TYPES,
            log_importance_plots: bool = True,
            log_every_n_steps: int = 1,
        ) -> None:
            super().__init__()
            _check_model_format(model_format)
            self.run_id = run_id
            self.options = b.Options(
                log_models=bool(log_models),
                model_format=model_format,
                importance_types=_check_importance_types(importance_types),
                log_importance_plots=bool(log_importance_plots),
                log_every_n_steps=b.check_every_n(log_every_n_steps),
            )
            self._reset()

        def _reset(self) -> None:
            self._run: Any = NO_RUN
            self._started: Any = None
            self._keys = b.MetricKeys()
            self._evals_log: Any = None  # XGBoost's history dict, updated in place each iteration
            self._last_epoch = -1
            self._epoch_offset = 0

        # A callback sits in an estimator's params: clone() deep-copies it and pickling an
        # estimator pickles it. Only the options travel; the run is resolved per training.
        def __getstate__(self) -> dict[str, Any]:
            return {"run_id": self.run_id, "options": self.options}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state)
            self._reset()

        def before_training(self, model: Any) -> Any:
            self._reset()
            safely(NAME, "before_training", self._open)
            return model

        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            if self._run and evals_log:
                if self._evals_log is None:  # entry j of each history list is epoch j + offset
                    first = next(iter(next(iter(evals_log.values())).values()))
                    self._epoch_offset = epoch - (len(first) - 1)
                self._evals_log, self._last_epoch = evals_log, epoch
                if epoch % self.options.log_every_n_steps == 0:
                    safely(NAME, "after_iteration", self._log_iteration, epoch, evals_log)
            return False

        def after_training(self, model: Any) -> Any:
            safely(NAME, "after_training", self._close, model)
            return model

        def _open(self) -> None:
            import xgboost

            collective = getattr(xgboost, "collective", None)
            if collective is not None and collective.get_rank() != 0:
                return  # distributed training: rank zero logs for everyone
            self._run, self._started = b.resolve_run(self.run_id, NAME)

        def _log_iteration(self, epoch: int, evals_log: Any) -> None:
            self._run.log_metrics(iteration_metrics(evals_log, self._keys), step=epoch)

        def _catch_up(self) -> None:
            """Log the iterations after the last one this callback saw.

            XGBoost 2.x keeps callbacks in a set and stops asking them at the first that says
            "stop": when early stopping runs before this callback, the last iteration's
            evaluation is in the history but was never shown to it.
            """
            history = self._evals_log
            if not self._run or not history:
                return
            series = [(self._keys(d, m), v) for d, per in history.items() for m, v in per.items() if v]
            if not series:
                return
            total = max(len(v) for _, v in series)
            for j in range(self._last_epoch - self._epoch_offset + 1, total):
                step = j + self._epoch_offset
                if step % self.options.log_every_n_steps == 0:
                    self._run.log_metrics(
                        {k: float(v[j][0] if isinstance(v[j], tuple) else v[j]) for k, v in series if j < len(v)},
                        step=step,
                    )

        def _close(self, model: Any) -> None:
            try:
                import xgboost

                self._catch_up()
                if self._run and isinstance(model, xgboost.Booster):
                    _finish(self._run, model, self.options)
            finally:
                if self._started is not None:
                    jobs.flush(run_id=self._started.info.run_id)  # its files, before its end
                b.end_started(self._started)
                self._started = None

    class _AutologCallback(MLTrailCallback):
        """The callback autolog adds: it logs iterations into the call's run; post does the rest."""

        def __init__(self, run: Any, opts: b.Options) -> None:
            TrainingCallback.__init__(self)
            self.run_id = None
            self.options = opts
            self._reset()
            self._run = run

        def __getstate__(self) -> dict[str, Any]:
            return {"run_id": None, "options": self.options}

        def before_training(self, model: Any) -> Any:
            return model

        def after_training(self, model: Any) -> Any:
            safely(NAME, "after_training", self._catch_up)
            return model

    for cls in (MLTrailCallback, _AutologCallback):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__  # pickle finds it as a module attribute
    globals()["_AutologCallback"] = _AutologCallback
    return MLTrailCallback


def _callback_classes() -> tuple[type, ...]:
    """The callback class if it exists (an instance can only exist if it does)."""
    cls = globals().get("MLTrailCallback")
    return (cls,) if cls is not None else ()


def _has_our_callback(callbacks: Any) -> bool:
    return b.has_callback(callbacks, _callback_classes())


def __getattr__(name: str) -> Any:
    # The callback subclasses XGBoost's TrainingCallback: define it when first asked for, so
    # that importing this module (mltrail.xgboost.autolog before `import xgboost`) imports
    # no XGBoost.
    if name in ("MLTrailCallback", "_AutologCallback"):
        cls = globals().get("MLTrailCallback") or _define_callback()
        globals()["MLTrailCallback"] = cls
        return globals()[name]
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


# ---------------------------------------------------------------------- xgboost.train
def _when_train(call: Call) -> bool:
    return not _has_our_callback(call.kwargs.get("callbacks"))


def _pre_train(call: Call) -> None:
    run = call.run
    if not run:
        return
    opts = _options(call.config)
    params = b.loggable_params(train_call_params(call.args, call.kwargs))
    b.log_params_tolerant(run, params)
    call.state["logged"] = set(params)
    if call.config.log_datasets:
        dtrain = call.args[1] if len(call.args) > 1 else call.kwargs.get("dtrain")
        inputs = b.Inputs()
        _log_dmatrices(inputs, dtrain, call.kwargs.get("evals"))
        inputs.write_later(NAME, run)
    callback = __getattr__("_AutologCallback")(run, opts)
    call.kwargs["callbacks"] = [*(call.kwargs.get("callbacks") or ()), callback]


def _log_dmatrices(run: Any, dtrain: Any, evals: Any) -> None:
    if dtrain is None:
        return
    train_name = None
    for dmatrix, name in evals or ():
        if dmatrix is dtrain:
            train_name = str(name)
    run.log_input(dmatrix_dataset(dtrain, train_name), context="training")
    for dmatrix, name in evals or ():
        if dmatrix is not dtrain:
            run.log_input(dmatrix_dataset(dmatrix, str(name)), context="evaluation")


def _post_train(call: Call, booster: Any) -> None:
    if call.run:
        _finish(call.run, booster, _options(call.config), skip_params=call.state.get("logged", ()))


# ---------------------------------------------------------------------- the scikit-learn API
def _include_estimator(cls: type) -> bool:
    # Dask and Spark estimators train on workers through their own entry points.
    return not cls.__module__.startswith(("xgboost.dask", "xgboost.spark"))


def _when_fit(call: Call) -> bool:
    return not _has_our_callback(getattr(call.instance, "callbacks", None))


def estimator_params(estimator: Any) -> dict[str, str]:
    """An estimator's params as strings (unset ones left out; the booster fills them in)."""
    params = dict(estimator.get_params(deep=False))
    params.pop("callbacks", None)
    if params.get("n_estimators") is None and hasattr(estimator, "get_num_boosting_rounds"):
        params["n_estimators"] = estimator.get_num_boosting_rounds()
    return b.loggable_params(params)


def _pre_fit(call: Call) -> None:
    run = call.run
    if not run:
        return
    est = call.instance
    call.state["logged"] = b.log_estimator(run, est, estimator_params(est))
    if call.config.log_datasets:
        fit = type(est).fit
        X = b.argument(fit, (est, *call.args), call.kwargs, "X")
        y = b.argument(fit, (est, *call.args), call.kwargs, "y")
        inputs = b.Inputs()
        _log_arrays(inputs, X, y, call.kwargs.get("eval_set"))
        inputs.write_later(NAME, run)


def _log_arrays(run: Any, X: Any, y: Any, eval_set: Any) -> None:
    train = b.fingerprint(X, y)
    if train is not None:
        run.log_input(train, context="training")
    for i, pair in enumerate(eval_set or ()):
        if not isinstance(pair, (tuple, list)) or len(pair) < 2 or pair[0] is X:
            continue
        ds = b.fingerprint(pair[0], pair[1], name=f"validation_{i}")
        if ds is not None:
            run.log_input(ds, context="evaluation")


def log_evals_result(run: Any, evals_result: Mapping[str, Mapping[str, Sequence[Any]]], *, first_step: int = 0, every: int = 1) -> None:
    """Log an ``evals_result()`` dict: one ``log_metrics`` per iteration, at its own step."""
    keys = b.MetricKeys()
    series = [(keys(d, m), values) for d, per in evals_result.items() for m, values in per.items() if values]
    if not series:
        return
    rounds = max(len(values) for _, values in series)
    for i in range(rounds):
        step = first_step + i
        if step % every:
            continue
        run.log_metrics({key: float(values[i]) for key, values in series if i < len(values)}, step=step)


def _post_fit(call: Call, result: Any) -> None:
    run = call.run
    if not run:
        return
    est = call.instance
    booster = est.get_booster()
    opts = _options(call.config)
    evals = getattr(est, "evals_result_", None)
    if evals:
        rounds = max(len(v) for per in evals.values() for v in per.values())
        first = max(0, int(booster.num_boosted_rounds()) - rounds)
        log_evals_result(run, evals, first_step=first, every=opts.log_every_n_steps)
    _finish(run, booster, opts, skip_params=call.state.get("logged", ()), estimator=est)


# ---------------------------------------------------------------------- the patches
PATCHES = b.patches(
    "xgboost", "xgboost.training", "xgboost.sklearn:XGBModel",
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
    model_format: str = "ubj",
    log_importance_plots: bool = True,
) -> None:
    """Autolog ``xgboost.train`` and the scikit-learn API (``XGBClassifier`` and friends).

    Args:
        disable: stop, and restore XGBoost's functions and methods.
        exclusive: log only into runs autolog starts, never into the user's active run.
        silent: no warnings from this integration.
        log_models: save each trained model under ``model/``.
        log_datasets: record the training data's and eval sets' fingerprints.
        log_every_n_steps: log the evaluation every n iterations (default: every iteration).
        extra_tags: tags set on every run autolog starts.
        disable_for_unsupported_versions: leave an untested XGBoost version unpatched.
        importance_types: the feature-importance types to log.
        model_format: ``"ubj"`` or ``"json"``.
        log_importance_plots: write SVG bar charts next to the importance JSON files.

    Example:
        >>> import mltrail.integrations.xgboost as mlx
        >>> mlx.autolog(model_format="json", importance_types=["gain"])
        >>> XGBClassifier(n_estimators=200).fit(X, y, eval_set=[(X_val, y_val)])
    """
    enable(NAME, Config(**locals()))
