"""Search results as a pandas DataFrame, built column by column (mltrail.core.frames)."""

from __future__ import annotations

import math

import pytest

import mltrail
from mltrail.core.entities import Run, RunData, RunInfo
from mltrail.core.frames import BASE_COLUMNS, runs_to_pandas

pd = pytest.importorskip("pandas")


def _run(run_id: str, start: int, end: int | None, **data: dict[str, object]) -> Run:
    info = RunInfo(run_id, "7", run_id.upper(), "u", "FINISHED", start, end, f"file:///a/{run_id}")
    return Run(info, RunData(**data))  # type: ignore[arg-type]


def test_one_row_per_run_with_mlflow_columns() -> None:
    runs = [
        _run(
            "a",
            1_700_000_000_123,
            1_700_000_001_000,
            metrics={"acc": 0.5, "loss": math.nan},
            params={"lr": "0.1"},
        ),
        _run("b", 1_700_000_002_000, None, metrics={"acc": 0.75}, tags={"team": "ml"}),
    ]
    frame = runs_to_pandas(runs)
    assert list(frame.columns) == [*BASE_COLUMNS, "metrics.acc", "metrics.loss", "params.lr", "tags.team"]
    assert list(frame["run_id"]) == ["a", "b"]
    assert list(frame["experiment_id"]) == ["7", "7"]
    assert frame["start_time"][0] == pd.Timestamp("2023-11-14 22:13:20.123", tz="UTC")
    assert frame["end_time"][0] == pd.Timestamp("2023-11-14 22:13:21", tz="UTC")
    assert frame["end_time"][1] is pd.NaT
    assert str(frame["start_time"].dtype).endswith(", UTC]")
    assert str(frame["end_time"].dtype) == str(frame["start_time"].dtype)
    assert list(frame["metrics.acc"]) == [0.5, 0.75]
    assert frame["metrics.acc"].dtype == "float64"
    assert math.isnan(frame["metrics.loss"][0]) and math.isnan(frame["metrics.loss"][1])
    assert frame["params.lr"][0] == "0.1" and pd.isna(frame["params.lr"][1])
    assert pd.isna(frame["tags.team"][0]) and frame["tags.team"][1] == "ml"


def test_runs_that_never_ended_still_have_utc_end_times() -> None:
    frame = runs_to_pandas([_run("a", 1000, None), _run("b", 2000, None)])
    assert list(frame["end_time"].isna()) == [True, True]
    assert str(frame["end_time"].dtype) == str(frame["start_time"].dtype)


def test_no_runs_gives_the_base_columns() -> None:
    frame = runs_to_pandas([])
    assert list(frame.columns) == list(BASE_COLUMNS)
    assert len(frame) == 0


def test_a_searched_store_gives_the_same_frame_as_the_runs(tracking_uri: str) -> None:
    for i in range(4):
        with mltrail.start_run(run_name=f"r{i}"):
            mltrail.log_param("i", str(i))
            if i % 2:
                mltrail.log_metric("score", i / 10)
            mltrail.set_tag("even", str(i % 2 == 0))
    runs = mltrail.search_runs(order_by=["params.i"], output_format="list")
    frame = runs_to_pandas(runs)
    assert list(frame["params.i"]) == ["0", "1", "2", "3"]
    assert list(frame["tags.even"]) == ["True", "False", "True", "False"]
    scores = list(frame["metrics.score"])
    assert math.isnan(scores[0]) and scores[1] == 0.1 and math.isnan(scores[2]) and scores[3] == 0.3
    assert list(frame["run_id"]) == [r.info.run_id for r in runs]
    assert (frame["end_time"] >= frame["start_time"]).all()
