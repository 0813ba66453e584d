"""mltrail: zero-effort experiment tracking for machine learning.

The fluent API keeps MLflow Tracking's names and meanings, so moving over is an import change::

    import mltrail

    mltrail.set_experiment("digits")
    with mltrail.start_run(run_name="baseline"):
        mltrail.log_params({"lr": 0.01, "epochs": 10})
        for step in range(10):
            mltrail.log_metric("loss", 1 / (step + 1), step=step)

Importing ``mltrail`` loads no ML framework, no SQL driver and no numpy/pandas: every public
name below is resolved lazily, on first use, through the module ``__getattr__``.
"""

from __future__ import annotations

import sys

# Not ``typing.TYPE_CHECKING``: importing typing (or logging, or importlib) here would cost
# ``import mltrail`` milliseconds; type checkers treat this name the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

_FLUENT = "mltrail.core.fluent"
_LAZY: dict[str, str] = {
    # fluent API
    **{
        name: _FLUENT
        for name in (
            "ActiveRun",
            "active_run",
            "create_experiment",
            "delete_experiment",
            "delete_tag",
            "disable_system_metrics_logging",
            "enable_system_metrics_logging",
            "end_run",
            "flush",
            "get_artifact_uri",
            "get_experiment",
            "get_experiment_by_name",
            "get_run",
            "get_tracking_uri",
            "last_active_run",
            "log_artifact",
            "log_artifacts",
            "log_dict",
            "log_figure",
            "log_image",
            "log_input",
            "log_metric",
            "log_metrics",
            "log_param",
            "log_params",
            "log_text",
            "search_experiments",
            "search_runs",
            "set_experiment",
            "set_tag",
            "set_tags",
            "set_tracking_uri",
            "start_run",
        )
    },
    "Client": "mltrail.core.client",
    "MlflowClient": "mltrail.core.client",
    # entities
    **{
        name: "mltrail.core.entities"
        for name in (
            "Dataset",
            "Experiment",
            "FileInfo",
            "Metric",
            "MetricHistory",
            "Param",
            "Run",
            "RunData",
            "RunInfo",
            "RunStatus",
            "RunTag",
            "ViewType",
        )
    },
    # errors
    **{
        name: "mltrail.core.errors"
        for name in (
            "MltrailError",
            "InvalidInputError",
            "InvalidKeyError",
            "InvalidValueError",
            "PathTraversalError",
            "ParamConflictError",
            "NotFoundError",
            "RunNotFoundError",
            "ExperimentNotFoundError",
            "RunStateError",
            "ExperimentExistsError",
            "SearchSyntaxError",
            "StoreError",
            "UnsupportedTrackingURIError",
            "MissingDependencyError",
        )
    },
    "autolog": "mltrail.autolog",
    "autolog_status": "mltrail.autolog",
    "AutologWarning": "mltrail.autolog",
}
_SUBMODULES = {"data", "autolog", "integrations", "core", "cli", "sklearn", "torch", "lightning",
               "keras", "xgboost", "lightgbm"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        attr = "Client" if name == "MlflowClient" else name
        __import__(module)
        value = getattr(sys.modules[module], attr)
        globals()[name] = value  # later lookups skip this function (the hot path stays fast)
        return value
    if name in _SUBMODULES:
        target = f"mltrail.integrations.{name}" if name in {
            "sklearn", "torch", "lightning", "keras", "xgboost", "lightgbm"
        } else f"mltrail.{name}"
        __import__(target)
        return sys.modules[target]
    msg = f"module 'mltrail' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from mltrail.core.client import Client as Client
    from mltrail.core.client import Client as MlflowClient  # noqa: F401
    from mltrail.core.entities import *  # noqa: F403
    from mltrail.core.errors import *  # noqa: F403
    from mltrail.core.fluent import *  # noqa: F403
