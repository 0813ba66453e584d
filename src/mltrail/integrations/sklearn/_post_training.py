"""Post-training metrics: an autologged model's evaluation, logged to the run it was trained in.

After an autologged ``fit`` the model is remembered (weakly, by identity) with its run. Its
``predict``/``predict_proba``/``predict_log_proba``/``decision_function`` results are remembered
too — the last few, with the name the caller's code gave the input (``X_test``). A
``sklearn.metrics`` function called on one of them (or on a view of one, ``proba[:, 1]``) is
logged to that run as ``<metric>_<dataset>``; ``model.score(X_test, y_test)`` as
``<Estimator>_score_<dataset>``. The same metric called again with other options is
``<metric>-2_<dataset>``; the same call again logs the next step.

The run has usually ended by then: the point is then written straight to the store by the
background thread (a training run's evaluation belongs to it), not through the run's buffer.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from typing import Any

from mltrail.autolog import Call, jobs

# id(model) -> (weak reference, run id, tracking URI); id(prediction) -> (prediction, run id, URI,
# dataset name). Predictions are kept (strongly) only for the last few calls: enough for the
# metric call that usually follows, and their identity is checked, so a reused id never matches.
_models: dict[int, tuple[Any, str, str]] = {}
_predictions: OrderedDict[int, tuple[Any, str, str, str]] = OrderedDict()
_MAX_PREDICTIONS = 16
_metric_names: dict[tuple[str, str, str], list[str]] = {}  # (run, metric, dataset) -> arg signatures
_metric_steps: dict[tuple[str, str], int] = {}


def remember_model(estimator: Any, run_id: str, uri: str) -> None:
    key = id(estimator)

    def forget(_ref: Any) -> None:
        _models.pop(key, None)

    try:
        ref = weakref.ref(estimator, forget)
    except TypeError:
        return
    _models[key] = (ref, run_id, uri)


def _tracked(instance: Any) -> tuple[str, str] | None:
    entry = _models.get(id(instance))
    if entry is None or entry[0]() is not instance:
        return None
    return entry[1], entry[2]


def want_tracked_instance(call: Call) -> bool:
    """``when`` of the predict and score patches: only models an autologged fit produced."""
    return bool(_models) and getattr(call.config, "log_post_training_metrics", True) and (
        _tracked(call.instance) is not None
    )


def post_predict(call: Call, result: Any) -> None:
    tracked = _tracked(call.instance)
    if tracked is None or result is None:
        return
    X = call.args[0] if call.args else next(iter(call.kwargs.values()), None)
    name = _caller_variable(X) or "unknown_dataset"
    # A prediction may itself be a view (``vstack(...).T``): a slice of it then has the owner
    # of the memory as its ``base``, so the owner is remembered too.
    for obj in (result, getattr(result, "base", None)):
        if obj is not None:
            _predictions[id(obj)] = (obj, tracked[0], tracked[1], name)
            _predictions.move_to_end(id(obj))
    while len(_predictions) > _MAX_PREDICTIONS:
        _predictions.popitem(last=False)


def _find_prediction(values: Any) -> tuple[str, str, str] | None:
    for value in values:
        obj = value
        for _ in range(3):  # a slice of a prediction (proba[:, 1]) is a view of it
            entry = _predictions.get(id(obj))
            if entry is not None and entry[0] is obj:
                return entry[1], entry[2], entry[3]
            obj = getattr(obj, "base", None)
            if obj is None:
                break
    return None


def want_metric(call: Call) -> bool:
    """``when`` of the metric patches: only calls given a remembered prediction."""
    if not _predictions or not getattr(call.config, "log_post_training_metrics", True):
        return False
    return _find_prediction((*call.args[:3], *call.kwargs.values())) is not None


def post_metric(call: Call, result: Any) -> None:
    found = _find_prediction((*call.args[:3], *call.kwargs.values()))
    if found is None:
        return
    value = _scalar(result)
    if value is None:
        return
    run_id, uri, dataset = found
    metric = call.patch.path
    options = {k: v for k, v in call.kwargs.items() if not _is_arraylike(v)}
    signature = repr(sorted((k, repr(v)) for k, v in options.items()))
    seen = _metric_names.setdefault((run_id, metric, dataset), [])
    if signature not in seen:
        seen.append(signature)
    index = seen.index(signature)
    base = metric if index == 0 else f"{metric}-{index + 1}"
    _log_late_metric(run_id, uri, f"{base}_{dataset}", value)


def post_score(call: Call, result: Any) -> None:
    tracked = _tracked(call.instance)
    value = _scalar(result)
    if tracked is None or value is None:
        return
    X = call.args[0] if call.args else call.kwargs.get("X")
    dataset = _caller_variable(X) or "unknown_dataset"
    _log_late_metric(tracked[0], tracked[1], f"{type(call.instance).__name__}_score_{dataset}", value)


def _is_arraylike(value: Any) -> bool:
    return (hasattr(value, "__len__") and not isinstance(value, str)) or hasattr(value, "__array__")


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        if hasattr(value, "shape") and getattr(value, "shape", None) not in ((), None):
            return None
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out


def _log_late_metric(run_id: str, uri: str, key: str, value: float) -> None:
    """Log ``key`` to ``run_id``: through the writer while the run is open, else straight to the store.

    Repeated keys get the next step. A run that has ended takes the point directly (a training
    run's evaluation belongs to it), written by the background thread.
    """
    from mltrail.core.client import Client
    from mltrail.core.errors import RunStateError
    from mltrail.core.validation import validate_key

    validate_key(key, "metric")
    step = _metric_steps.get((run_id, key), 0)
    _metric_steps[(run_id, key)] = step + 1
    client = Client(uri)
    try:
        client.log_metric(run_id, key, value, step=step)
        return
    except RunStateError:
        pass
    now = int(time.time() * 1000)

    jobs.submit("sklearn", "post_training_metric", run_id,
                lambda: jobs.write_to_ended_run(Client(uri), run_id, {key: value}, step, now))


def _caller_variable(obj: Any) -> str | None:
    from mltrail.integrations.sklearn import caller_variable

    return caller_variable(obj)


def reset() -> None:
    """Forget tracked models and predictions (test isolation)."""
    _models.clear()
    _predictions.clear()
    _metric_names.clear()
    _metric_steps.clear()
