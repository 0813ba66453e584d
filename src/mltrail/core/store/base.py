"""The store interface: a small, batch-shaped surface.

A store keeps experiments, runs and everything logged to them. Writes of logged data arrive as
one :class:`WriteBatch` that may carry params, tags and metric chunks for many runs at once, so
the background writer turns thousands of ``log_*`` calls into one transaction, and a later HTTP
store can send the same batch as one request.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from mltrail.core.entities import (
        Dataset,
        Experiment,
        MetricHistory,
        Run,
        RunInfo,
    )


@dataclass
class MetricChunk:
    """Points of one (run, key) in logging order: int64 steps, int64 ms timestamps, float64 values."""

    run_id: str
    key: str
    steps: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class RunStart:
    """A new run, as its first batch writes it (before anything logged to it)."""

    run_id: str
    experiment_id: str
    run_name: str
    user_id: str
    start_time: int
    artifact_uri: str
    parent_run_id: str | None
    resume_key: str | None
    heartbeat_deadline: int | None
    tags: tuple[tuple[str, str], ...]

    def info(self) -> RunInfo:
        from mltrail.core.entities import RunInfo, RunStatus

        return RunInfo(
            run_id=self.run_id,
            experiment_id=self.experiment_id,
            run_name=self.run_name,
            user_id=self.user_id,
            status=RunStatus.RUNNING.value,
            start_time=self.start_time,
            end_time=None,
            artifact_uri=self.artifact_uri,
        )


@dataclass
class WriteBatch:
    """Everything one flush writes, in one transaction."""

    run_starts: list[RunStart] = field(default_factory=list)  # written first
    params: list[tuple[str, str, str]] = field(default_factory=list)  # run_id, key, value
    tags: list[tuple[str, str, str]] = field(default_factory=list)
    deleted_tags: list[tuple[str, str]] = field(default_factory=list)
    metrics: list[MetricChunk] = field(default_factory=list)
    heartbeats: dict[str, int] = field(default_factory=dict)  # run_id -> deadline (ms)
    dropped: dict[str, int] = field(default_factory=dict)  # run_id -> points dropped
    # run_id -> (terminal status, end time in ms), written after everything else in the batch
    run_ends: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Written with the batch where a lost connection can leave a COMMIT's outcome unknown
    # (PostgreSQL): a retry of a batch that was in fact written finds its token and does nothing.
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempted: bool = False  # a write of it failed; nothing more is folded into it

    def __bool__(self) -> bool:
        return bool(
            self.run_starts
            or self.params
            or self.tags
            or self.deleted_tags
            or self.metrics
            or self.heartbeats
            or self.dropped
            or self.run_ends
        )

    def point_count(self) -> int:
        return sum(len(c.values) for c in self.metrics)


@dataclass(frozen=True)
class PagedList:
    items: Sequence[Any]
    token: str | None


class Store(abc.ABC):
    """Where experiments and runs live. Implementations: :class:`~mltrail.core.store.sql.SqlStore`."""

    uri: str
    artifact_root: str

    # experiments
    @abc.abstractmethod
    def create_experiment(
        self, name: str, artifact_location: str | None, tags: dict[str, str] | None
    ) -> str: ...

    @abc.abstractmethod
    def get_experiment(self, experiment_id: str) -> Experiment: ...

    @abc.abstractmethod
    def get_experiment_by_name(self, name: str) -> Experiment | None: ...

    @abc.abstractmethod
    def search_experiments(
        self,
        view_type: int,
        filter_string: str,
        order_by: Sequence[str] | None,
        max_results: int,
        page_token: str | None,
    ) -> PagedList: ...

    @abc.abstractmethod
    def set_experiment_lifecycle(self, experiment_id: str, stage: str) -> None: ...

    @abc.abstractmethod
    def rename_experiment(self, experiment_id: str, new_name: str) -> None: ...

    @abc.abstractmethod
    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None: ...

    # runs
    @abc.abstractmethod
    def prepare_run(
        self,
        *,
        experiment_id: str,
        run_id: str,
        run_name: str,
        user_id: str,
        start_time: int,
        tags: dict[str, str],
        parent_run_id: str | None,
        resume_key: str | None,
        heartbeat_deadline: int | None,
    ) -> RunStart:
        """Check that a run can start in the experiment; return what writing it takes.

        Nothing is written: the run exists once a :class:`WriteBatch` carrying the returned
        start is written (:meth:`create_run`, or the background writer with the run's data).
        """

    def create_run(self, **run: Any) -> RunInfo:
        """Create a run now (:meth:`prepare_run`'s keywords)."""
        start = self.prepare_run(**run)
        self.write_batch(WriteBatch(run_starts=[start]))
        return start.info()

    @abc.abstractmethod
    def get_run(self, run_id: str) -> Run: ...

    @abc.abstractmethod
    def get_run_info(self, run_id: str) -> RunInfo: ...

    @abc.abstractmethod
    def find_run_by_resume_key(self, experiment_id: str, resume_key: str) -> RunInfo | None: ...

    @abc.abstractmethod
    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        end_time: int | None = None,
        clear_end_time: bool = False,
        run_name: str | None = None,
        heartbeat_deadline: int | None = None,
    ) -> None: ...

    @abc.abstractmethod
    def set_run_lifecycle(self, run_id: str, stage: str) -> None: ...

    @abc.abstractmethod
    def get_params(self, run_id: str) -> dict[str, str]: ...

    @abc.abstractmethod
    def write_batch(self, batch: WriteBatch) -> None:
        """Write everything in ``batch`` in one transaction, or nothing."""

    @abc.abstractmethod
    def get_metric_history(self, run_id: str, key: str) -> MetricHistory: ...

    @abc.abstractmethod
    def log_inputs(
        self, run_id: str, experiment_id: str, datasets: Sequence[tuple[Dataset, str | None]]
    ) -> None: ...

    @abc.abstractmethod
    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str,
        view_type: int,
        max_results: int,
        order_by: Sequence[str] | None,
        page_token: str | None,
    ) -> PagedList: ...

    def compact_series(self, run_id: str, key: str) -> None:  # noqa: B027 - optional
        """Merge a series' small chunks; optional (the default does nothing)."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections; optional."""
