"""Runs as columns: the pandas DataFrame of ``search_runs(output_format="pandas")``.

The frame is built one column at a time from plain lists and arrays: the timestamps of all runs
are converted in one call, each ``metrics.``/``params.``/``tags.`` column is one pass over the
runs. (Building it row by row, with a pandas conversion per run, took a minute for 100,000 runs.)
pandas and numpy are imported when a frame is made, never by ``import mltrail``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mltrail.core.entities import Run

__all__ = ["BASE_COLUMNS", "runs_to_pandas"]

BASE_COLUMNS = ("run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time")
"""The first columns, in order; then ``metrics.*``, ``params.*`` and ``tags.*``, each sorted."""


def runs_to_pandas(runs: Sequence[Run]) -> Any:
    """Return one row per run, with MLflow's columns.

    ``start_time`` and ``end_time`` are UTC timestamps (``NaT`` for a run that has not ended);
    a run without a metric has NaN in its column, one without a param or tag has None.

    Example:
        >>> frame = runs_to_pandas(mltrail.search_runs(output_format="list"))
        >>> frame[["run_id", "metrics.acc"]].sort_values("metrics.acc")
    """
    import numpy as np
    import pandas as pd

    infos = [run.info for run in runs]
    n = len(infos)
    start = np.fromiter((i.start_time for i in infos), dtype=np.int64, count=n)
    # A float array holds the missing end times as NaN, which becomes NaT; millisecond epoch
    # times are far below 2**53, so the float conversion is exact.
    end = np.fromiter((i.end_time if i.end_time else np.nan for i in infos), dtype=np.float64, count=n)
    columns: dict[str, Any] = {
        "run_id": [i.run_id for i in infos],
        "experiment_id": [i.experiment_id for i in infos],
        "status": [i.status for i in infos],
        "artifact_uri": [i.artifact_uri for i in infos],
        "start_time": pd.to_datetime(start, unit="ms", utc=True),
        "end_time": pd.to_datetime(end, unit="ms", utc=True),
    }
    datas = [run.data for run in runs]
    groups: tuple[tuple[str, list[Mapping[str, Any]], Any], ...] = (
        ("metrics.", [d.metrics for d in datas], np.nan),
        ("params.", [d.params for d in datas], None),
        ("tags.", [d.tags for d in datas], None),
    )
    for prefix, maps, missing in groups:
        keys: set[str] = set()
        for m in maps:
            keys.update(m)
        for key in sorted(keys):
            values = [m.get(key, missing) for m in maps]
            columns[prefix + key] = np.array(values, dtype=np.float64) if missing is np.nan else values
    return pd.DataFrame(columns, columns=list(columns), index=pd.RangeIndex(n))
