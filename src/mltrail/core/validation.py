"""Validation of what users log (DESIGN invariant 5).

Everything here runs on the caller's thread before anything is enqueued, so a bad value is
reported where it was logged and never reaches the store half-written. The checks on the metric
hot path are arranged so that the common case (a key seen before, a float value) costs a dict
lookup and a type check.
"""

from __future__ import annotations

import math
import posixpath
import re
from typing import Any

from mltrail.core.errors import (
    InvalidKeyError,
    InvalidValueError,
    PathTraversalError,
)

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_RUN_NAME_LENGTH = 250
MAX_EXPERIMENT_NAME_LENGTH = 500
MAX_BATCH_ITEMS = 100_000
# int64 bounds for steps and timestamps, which are stored as int64.
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# Letters, digits, and _ - . space / : as MLflow allows; no control characters, no backslash.
_KEY_RE = re.compile(r"^[\w\-. /:]+$")


_valid_keys: set[str] = set()  # keys that passed: the same few hundred come back every run
_VALID_KEYS_KEPT = 20_000


def validate_key(key: object, kind: str) -> str:
    """Return ``key`` if it is a valid ``kind`` ("metric", "param", "tag") key, else raise."""
    if type(key) is str and key in _valid_keys:
        return key
    if not isinstance(key, str):
        msg = f"{kind} key must be a str, got {type(key).__name__}: {key!r}"
        raise InvalidKeyError(msg)
    if not key:
        msg = f"{kind} key must not be empty"
        raise InvalidKeyError(msg)
    if len(key) > MAX_KEY_LENGTH:
        msg = f"{kind} key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}: {key[:40]!r}..."
        raise InvalidKeyError(msg)
    if not _KEY_RE.match(key):
        msg = (
            f"{kind} key {key!r} contains a character that is not allowed; keys may hold "
            "letters, digits, '_', '-', '.', ' ', '/' and ':'"
        )
        raise InvalidKeyError(msg)
    if key.startswith("/") or ".." in key.split("/") or key.strip() != key:
        msg = (
            f"{kind} key {key!r} is not allowed: keys must not start with '/', contain a '..' "
            "segment, or begin or end with a space"
        )
        raise InvalidKeyError(msg)
    if type(key) is str and len(_valid_keys) < _VALID_KEYS_KEPT:
        _valid_keys.add(key)
    return key


def validate_metric_value(key: str, value: object) -> float:
    """Return ``value`` as a float; NaN and ±inf are legal."""
    cls = type(value)
    if cls is float:
        return value  # type: ignore[return-value]
    if cls is int:
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, (str, bytes, bool)) or value is None or not hasattr(value, "__float__"):
        msg = (
            f"metric {key!r} must be a real number (int, float or a numeric scalar), "
            f"got {type(value).__name__}: {value!r:.80}"
        )
        raise InvalidValueError(msg)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        msg = f"metric {key!r} must be a single real number, got {type(value).__name__}: {value!r:.80}"
        raise InvalidValueError(msg) from exc


def validate_int(name: str, value: object) -> int:
    """Return ``value`` as an int64 step or timestamp."""
    if type(value) is not int:
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            msg = f"{name} must be an integer, got {type(value).__name__}: {value!r:.80}"
            raise InvalidValueError(msg)
        value = value.__index__()  # type: ignore[attr-defined]
    if not _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
        msg = f"{name} {value} does not fit in 64 bits"
        raise InvalidValueError(msg)
    return value  # type: ignore[return-value]


def stringify(value: Any) -> str:
    """Turn a param or tag value into the string that is stored (as MLflow does, via ``str``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return str(value)


def validate_param_value(key: str, value: Any) -> str:
    text = stringify(value)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        msg = (
            f"param {key!r} value is {len(text)} characters long; the limit is "
            f"{MAX_PARAM_VALUE_LENGTH}. Log long values as an artifact (log_text/log_dict) instead"
        )
        raise InvalidValueError(msg)
    return text


def validate_tag_value(key: str, value: Any) -> str:
    text = stringify(value)
    if len(text) > MAX_TAG_VALUE_LENGTH:
        msg = f"tag {key!r} value is {len(text)} characters long; the limit is {MAX_TAG_VALUE_LENGTH}"
        raise InvalidValueError(msg)
    return text


def validate_run_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        msg = f"run_name must be a non-empty str, got {name!r}"
        raise InvalidValueError(msg)
    if len(name) > MAX_RUN_NAME_LENGTH:
        msg = f"run_name is {len(name)} characters long; the limit is {MAX_RUN_NAME_LENGTH}"
        raise InvalidValueError(msg)
    return name


def validate_experiment_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        msg = f"experiment name must be a non-empty str, got {name!r}"
        raise InvalidValueError(msg)
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        msg = f"experiment name is {len(name)} characters long; the limit is {MAX_EXPERIMENT_NAME_LENGTH}"
        raise InvalidValueError(msg)
    return name


def validate_artifact_path(path: str | None, what: str = "artifact_path") -> str:
    """Normalise a relative artifact path; reject anything that escapes the run's directory.

    Returns "" for the artifact root.
    """
    if path is None or path in ("", "."):
        return ""
    if not isinstance(path, str):
        msg = f"{what} must be a str, got {type(path).__name__}"
        raise InvalidValueError(msg)
    if "\x00" in path:
        msg = f"{what} {path!r} contains a NUL character"
        raise PathTraversalError(msg)
    unified = path.replace("\\", "/")
    if unified.startswith("/") or re.match(r"^[A-Za-z]:", unified):
        msg = f"{what} {path!r} is absolute; artifact paths are relative to the run's artifact root"
        raise PathTraversalError(msg)
    if ".." in unified.split("/"):
        msg = f"{what} {path!r} contains '..'; artifact paths may not leave the run's artifact root"
        raise PathTraversalError(msg)
    normalised = posixpath.normpath(unified)
    return "" if normalised == "." else normalised
