"""Entities: the plain, frozen records the store hands back.

Names and fields follow MLflow Tracking (``run.info.run_id``, ``run.data.params``...) so that
code written for MLflow reads mltrail's records unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    import numpy as np


class RunStatus(str, enum.Enum):
    """The life of a run. ``CRASHED`` is read off a RUNNING run whose heartbeat went stale."""

    RUNNING = "RUNNING"
    SCHEDULED = "SCHEDULED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"
    CRASHED = "CRASHED"

    @classmethod
    def is_terminated(cls, status: str) -> bool:
        return status in (cls.FINISHED, cls.FAILED, cls.KILLED, cls.CRASHED)

    def __str__(self) -> str:
        return self.value


class LifecycleStage(str, enum.Enum):
    ACTIVE = "active"
    DELETED = "deleted"

    def __str__(self) -> str:
        return self.value


class ViewType(enum.IntEnum):
    """Which lifecycle stages a listing includes (MLflow's ``ViewType``)."""

    ACTIVE_ONLY = 1
    DELETED_ONLY = 2
    ALL = 3


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str = LifecycleStage.ACTIVE.value
    tags: Mapping[str, str] = field(default_factory=dict)
    creation_time: int | None = None
    last_update_time: int | None = None


@dataclass(frozen=True)
class Metric:
    key: str
    value: float
    timestamp: int
    step: int


@dataclass(frozen=True)
class Param:
    key: str
    value: str


@dataclass(frozen=True)
class RunTag:
    key: str
    value: str


@dataclass(frozen=True)
class Dataset:
    """A dataset's fingerprint: what it is, not its contents."""

    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None = None
    profile: str | None = None


@dataclass(frozen=True)
class DatasetInput:
    dataset: Dataset
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunInputs:
    dataset_inputs: Sequence[DatasetInput] = ()


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str = LifecycleStage.ACTIVE.value

    @property
    def run_uuid(self) -> str:
        return self.run_id


@dataclass(frozen=True)
class RunData:
    """Params, latest metric values and tags.

    ``metrics`` maps each key to its latest value (highest step, then latest timestamp), as in
    MLflow. ``metric_summaries`` adds each key's min, max, last step and count.
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    metric_summaries: Mapping[str, MetricSummary] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSummary:
    key: str
    last: float
    step: int
    timestamp: int
    min: float
    max: float
    count: int


@dataclass(frozen=True)
class Run:
    info: RunInfo
    data: RunData
    inputs: RunInputs = field(default_factory=RunInputs)

    @property
    def parent_run_id(self) -> str | None:
        return self.data.tags.get("mltrail.parentRunId")


@dataclass(frozen=True)
class FileInfo:
    path: str
    is_dir: bool
    file_size: int | None


class MetricHistory(Sequence[Metric]):
    """One metric's full history as numpy arrays, in the order it was logged.

    It reads as the list of :class:`Metric` that MLflow returns (``len``, indexing, iteration
    create a ``Metric`` only for the point asked for), and exposes the columns directly::

        hist = client.get_metric_history(run_id, "loss")
        hist.steps, hist.values, hist.timestamps      # numpy int64 / float64 / int64
    """

    __slots__ = ("key", "steps", "timestamps", "values")

    def __init__(
        self, key: str, steps: np.ndarray, timestamps: np.ndarray, values: np.ndarray
    ) -> None:
        self.key = key
        self.steps = steps
        self.timestamps = timestamps
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> Metric: ...
    @overload
    def __getitem__(self, index: slice) -> list[Metric]: ...
    def __getitem__(self, index: int | slice) -> Metric | list[Metric]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return Metric(
            self.key,
            float(self.values[index]),
            int(self.timestamps[index]),
            int(self.steps[index]),
        )

    def __iter__(self) -> Iterator[Metric]:
        for i in range(len(self)):
            yield self[i]

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(steps, values, timestamps)``."""
        return self.steps, self.values, self.timestamps

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            {"step": self.steps, "value": self.values, "timestamp": self.timestamps}
        )

    def __repr__(self) -> str:
        return f"MetricHistory(key={self.key!r}, points={len(self)})"
