"""Dataset fingerprints: a name, a digest, a schema, a shape and a source, never the data.

The digest hashes the array's dtype and shape and up to ``_SAMPLE_ROWS`` rows from each end,
read in place through ``memoryview`` where the array is contiguous: a fingerprint never makes a
second copy of the training data.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mltrail.core.entities import Dataset
from mltrail.core.errors import InvalidValueError

_SAMPLE_ROWS = 10_000


def _hash_array(h: Any, arr: Any) -> None:
    import numpy as np

    h.update(str(arr.dtype).encode())
    h.update(str(arr.shape).encode())
    if arr.ndim == 0 or arr.shape[0] == 0:
        if arr.size:
            h.update(np.ascontiguousarray(arr).tobytes())
        return
    n = arr.shape[0]
    parts = [arr] if n <= 2 * _SAMPLE_ROWS else [arr[:_SAMPLE_ROWS], arr[-_SAMPLE_ROWS:]]
    for part in parts:
        if part.dtype.hasobject:
            h.update(repr(part.tolist()).encode())
        elif part.flags.c_contiguous:
            h.update(memoryview(part).cast("B"))
        else:
            # Only the sampled rows are copied, never the whole array.
            h.update(np.ascontiguousarray(part).tobytes())


def _schema_of_array(arr: Any) -> dict[str, Any]:
    return {"dtype": str(arr.dtype), "shape": [-1, *arr.shape[1:]] if arr.ndim else []}


def from_numpy(
    features: Any,
    targets: Any = None,
    *,
    source: str | None = None,
    name: str | None = None,
    digest: str | None = None,
) -> Dataset:
    """Fingerprint numpy arrays.

    Example:
        >>> ds = mltrail.data.from_numpy(X_train, y_train, name="digits-train")
        >>> mltrail.log_input(ds, context="training")
    """
    import numpy as np

    if not isinstance(features, np.ndarray):
        try:
            features = np.asarray(features)
        except Exception as exc:
            msg = f"from_numpy expects array-like features, got {type(features).__name__}"
            raise InvalidValueError(msg) from exc
    h = hashlib.sha256()
    _hash_array(h, features)
    schema: dict[str, Any] = {"features": _schema_of_array(features)}
    profile: dict[str, Any] = {
        "num_rows": int(features.shape[0]) if features.ndim else 1,
        "features_shape": list(features.shape),
    }
    if targets is not None:
        targets = np.asarray(targets)
        _hash_array(h, targets)
        schema["targets"] = _schema_of_array(targets)
        profile["targets_shape"] = list(targets.shape)
    d = digest or h.hexdigest()[:16]
    return Dataset(
        name=name or f"dataset-{d[:8]}",
        digest=d,
        source_type="numpy",
        source=json.dumps({"source": source or "in-memory"}),
        schema=json.dumps(schema),
        profile=json.dumps(profile),
    )


def from_pandas(
    df: Any,
    *,
    targets: str | None = None,
    source: str | None = None,
    name: str | None = None,
    digest: str | None = None,
) -> Dataset:
    """Fingerprint a pandas DataFrame (columns, dtypes, row count, sampled content).

    Example:
        >>> mltrail.log_input(mltrail.data.from_pandas(df, targets="label"), context="training")
    """
    try:
        columns = list(df.columns)
        dtypes = [str(t) for t in df.dtypes]
        n_rows = len(df)
    except AttributeError as exc:
        msg = f"from_pandas expects a pandas DataFrame, got {type(df).__name__}"
        raise InvalidValueError(msg) from exc
    if targets is not None and targets not in columns:
        msg = f"from_pandas: targets column {targets!r} is not one of the frame's columns {columns}"
        raise InvalidValueError(msg)
    import pandas as pd

    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in columns]).encode())
    h.update(json.dumps(dtypes).encode())
    h.update(str(n_rows).encode())
    sample = df if n_rows <= 2 * _SAMPLE_ROWS else pd.concat([df.head(_SAMPLE_ROWS), df.tail(_SAMPLE_ROWS)])
    h.update(pd.util.hash_pandas_object(sample, index=False).values.tobytes())
    d = digest or h.hexdigest()[:16]
    schema = {"columns": [{"name": str(c), "type": t} for c, t in zip(columns, dtypes, strict=True)]}
    if targets is not None:
        schema["targets"] = targets  # type: ignore[assignment]
    return Dataset(
        name=name or f"dataset-{d[:8]}",
        digest=d,
        source_type="pandas",
        source=json.dumps({"source": source or "in-memory"}),
        schema=json.dumps(schema),
        profile=json.dumps({"num_rows": n_rows, "num_columns": len(columns)}),
    )


def from_any(data: Any, targets: Any = None, **kwargs: Any) -> Dataset:
    """Fingerprint numpy arrays, pandas frames, or anything with ``__array__``."""
    if isinstance(data, Dataset):
        return data
    mod = type(data).__module__
    if mod.startswith("pandas") and hasattr(data, "columns"):
        return from_pandas(data, **kwargs)
    return from_numpy(data, targets, **kwargs)
