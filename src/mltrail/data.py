"""Dataset fingerprints for ``mltrail.log_input``: ``from_numpy``, ``from_pandas``."""

from __future__ import annotations

from mltrail.core.datasets import from_any, from_numpy, from_pandas
from mltrail.core.entities import Dataset

__all__ = ["Dataset", "from_any", "from_numpy", "from_pandas"]
