"""The exceptions mltrail raises.

Every error mltrail raises on purpose derives from :class:`MltrailError`::

    MltrailError
    ├── InvalidInputError          bad key, value, path or argument (invariant 5)
    │   ├── InvalidKeyError
    │   ├── InvalidValueError
    │   ├── PathTraversalError
    │   └── ParamConflictError     a param logged again with a different value
    ├── NotFoundError              a run, experiment or artifact that does not exist
    │   ├── RunNotFoundError
    │   └── ExperimentNotFoundError
    ├── RunStateError              logging to a finished or deleted run; a run already active
    ├── ExperimentExistsError
    ├── SearchSyntaxError          a malformed filter or order_by string (carries the position)
    ├── StoreError                 the store could not be reached or written
    │   └── UnsupportedTrackingURIError
    └── MissingDependencyError     an optional package is needed: names the extra to install

Messages name the offending value and, where there is one, the fix.
"""

from __future__ import annotations


class MltrailError(Exception):
    """Base class of every error mltrail raises on purpose."""


class InvalidInputError(MltrailError, ValueError):
    """An argument mltrail cannot accept."""


class InvalidKeyError(InvalidInputError):
    """A param, metric or tag key that is empty, too long or malformed."""


class InvalidValueError(InvalidInputError):
    """A value of the wrong type or size."""


class PathTraversalError(InvalidInputError):
    """An artifact path that would escape the run's artifact directory."""


class ParamConflictError(InvalidInputError):
    """A param logged again with a different value."""


class NotFoundError(MltrailError, LookupError):
    """Something addressed by id or name does not exist."""


class RunNotFoundError(NotFoundError):
    """No run has the given id."""


class ExperimentNotFoundError(NotFoundError):
    """No experiment has the given id or name."""


class RunStateError(MltrailError):
    """The run is in a state that does not allow the operation."""


class ExperimentExistsError(MltrailError):
    """An experiment of that name exists already."""


class SearchSyntaxError(InvalidInputError):
    """A malformed filter or order_by string.

    Attributes:
        text: the string that was parsed.
        position: the 0-based offset of the offending token.
    """

    def __init__(self, message: str, text: str = "", position: int = -1) -> None:
        if position >= 0:
            pointer = " " * position + "^"
            message = f"{message} at position {position}:\n  {text}\n  {pointer}"
        super().__init__(message)
        self.text = text
        self.position = position


class StoreError(MltrailError):
    """The store could not be reached or written."""


class UnsupportedTrackingURIError(StoreError):
    """A tracking URI whose scheme mltrail does not serve."""


class MissingDependencyError(MltrailError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is required for this; install it with: pip install 'mltrail[{extra}]'"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``extra``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], extra) from exc
