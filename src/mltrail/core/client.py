"""``Client``: every tracking operation, addressed by explicit experiment and run ids.

Logging calls (``log_metric``, ``log_param``, ``log_batch``, ``set_tag``...) validate and
enqueue to the background writer, as the fluent API does; reads first flush what this process
logged, so a script always reads back what it wrote.

Example:
    >>> client = mltrail.Client()
    >>> run = client.create_run(experiment_id="0", run_name="manual")
    >>> client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    >>> client.set_terminated(run.info.run_id)
    >>> [m.value for m in client.get_metric_history(run.info.run_id, "loss")]
    [0.5]
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mltrail.core import images
from mltrail.core.artifacts import ArtifactRepository, repository_for
from mltrail.core.datasets import from_any
from mltrail.core.entities import (
    Dataset,
    Experiment,
    FileInfo,
    LifecycleStage,
    Metric,
    MetricHistory,
    Param,
    Run,
    RunData,
    RunStatus,
    RunTag,
    ViewType,
)
from mltrail.core.errors import (
    InvalidValueError,
    RunStateError,
)
from mltrail.core.names import generate_run_name
from mltrail.core.store import Store, WriteBatch, get_store, resolve_tracking_uri
from mltrail.core.validation import (
    MAX_BATCH_ITEMS,
    validate_experiment_name,
    validate_key,
    validate_run_name,
    validate_tag_value,
)
from mltrail.core.writer import RunBuffer, get_writer, run_flush_hooks

_TERMINAL = {s.value for s in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED)}


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


_user: str | None = None


def current_user() -> str:
    """The user running this process (read once: a passwd lookup per run costs a run's start)."""
    global _user
    if _user is None:
        try:
            import getpass

            _user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no passwd entry in some containers
            _user = os.environ.get("USER", "unknown")
    return _user


class Client:
    """Tracking operations by id, against ``tracking_uri`` (default: the one in force)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self._tracking_uri = tracking_uri
        self._artifact_uris: dict[str, str] = {}

    @property
    def tracking_uri(self) -> str:
        if self._tracking_uri is None:
            from mltrail.core import fluent

            return resolve_tracking_uri(fluent.get_tracking_uri())
        return resolve_tracking_uri(self._tracking_uri)

    @property
    def store(self) -> Store:
        return get_store(self.tracking_uri)

    def store_for(self, run_id: str) -> Store:
        """The store, holding ``run_id`` if this process started it (see ``Writer.start_run``).

        For reads and writes that go to the store directly rather than through the run's buffer.
        """
        get_writer().ensure_written(run_id)
        return self.store

    # ------------------------------------------------------------------ experiments
    def create_experiment(
        self,
        name: str,
        artifact_location: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> str:
        validate_experiment_name(name)
        clean = {validate_key(k, "tag"): validate_tag_value(k, v) for k, v in (tags or {}).items()}
        if artifact_location is not None and not isinstance(artifact_location, str):
            msg = f"artifact_location must be a str path, got {type(artifact_location).__name__}"
            raise InvalidValueError(msg)
        return self.store.create_experiment(name, artifact_location, clean)

    def get_experiment(self, experiment_id: str) -> Experiment:
        return self.store.get_experiment(str(experiment_id))

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        return self.store.get_experiment_by_name(name)

    def search_experiments(
        self,
        view_type: int = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> list[Experiment]:
        page = self.store.search_experiments(
            int(view_type), filter_string or "", order_by, _check_max(max_results), page_token
        )
        return _PagedResult(page.items, page.token)

    def delete_experiment(self, experiment_id: str) -> None:
        self.store.set_experiment_lifecycle(str(experiment_id), LifecycleStage.DELETED.value)

    def restore_experiment(self, experiment_id: str) -> None:
        self.store.set_experiment_lifecycle(str(experiment_id), LifecycleStage.ACTIVE.value)

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        self.store.rename_experiment(str(experiment_id), validate_experiment_name(new_name))

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        validate_key(key, "tag")
        self.store.set_experiment_tag(str(experiment_id), key, validate_tag_value(key, value))

    # ------------------------------------------------------------------ runs
    def create_run(
        self,
        experiment_id: str,
        start_time: int | None = None,
        tags: Mapping[str, Any] | None = None,
        run_name: str | None = None,
        *,
        parent_run_id: str | None = None,
        resume_key: str | None = None,
        owned: bool = False,
        background: bool = False,
    ) -> Run:
        """Create a RUNNING run. It is not made active; end it with :meth:`set_terminated`.

        ``background`` (``mltrail.start_run``'s way): the run row is written by the background
        writer, with the first data logged to it, so that this call does no I/O but a read of
        the experiment. It is in the store milliseconds later; reads through a Client flush.
        """
        clean = {validate_key(k, "tag"): validate_tag_value(k, v) for k, v in (tags or {}).items()}
        name = validate_run_name(run_name) if run_name is not None else clean.get("mltrail.runName")
        name = name or generate_run_name()
        clean["mltrail.runName"] = name
        clean.setdefault("mltrail.user", current_user())
        writer = get_writer()
        if parent_run_id:
            if not writer.is_unwritten(parent_run_id):  # one this process started exists
                self.store.get_run_info(parent_run_id)
            clean["mltrail.parentRunId"] = parent_run_id
        run_id = uuid.uuid4().hex
        start = self.store.prepare_run(
            experiment_id=str(experiment_id),
            run_id=run_id,
            run_name=name,
            user_id=clean["mltrail.user"],
            start_time=start_time if start_time is not None else _now_ms(),
            tags=clean,
            parent_run_id=parent_run_id,
            resume_key=resume_key,
            heartbeat_deadline=(
                _now_ms() + int(writer.config.heartbeat_timeout * 1000) if owned else None
            ),
        )
        if not background:
            self.store.write_batch(WriteBatch(run_starts=[start]))
        self._artifact_uris[run_id] = start.artifact_uri
        buf = writer.buffer(self.store, run_id, owned=owned)
        buf.params = {}
        if background:
            writer.start_run(buf, start)
        # A new run holds exactly what was just written: no need to read it back.
        return Run(info=start.info(), data=RunData(tags=dict(clean)))

    def get_run(self, run_id: str) -> Run:
        self.flush()
        return self.store.get_run(run_id)

    def update_run(self, run_id: str, status: str | None = None, name: str | None = None) -> None:
        if status is not None:
            _check_status(status)
        self.store_for(run_id).update_run(
            run_id,
            status=status,
            run_name=validate_run_name(name) if name is not None else None,
        )
        if name is not None:
            self.set_tag(run_id, "mltrail.runName", name)

    def set_terminated(
        self, run_id: str, status: str = "FINISHED", end_time: int | None = None
    ) -> None:
        """End a run: flush what was logged to it, then record its status and end time."""
        _check_status(status)
        if status not in _TERMINAL:
            msg = f"set_terminated needs a terminal status ({sorted(_TERMINAL)}), got {status!r}"
            raise InvalidValueError(msg)
        end_time = end_time if end_time is not None else _now_ms()
        writer = get_writer()
        if writer.has_buffer(self.store, run_id):
            # A run this process logged to: through the writer, after the run's data, so a
            # store that is down holds the end too (retried, warned once) rather than failing
            # the script at its last line.
            writer.end_run(self.store, run_id, status, end_time)
        else:
            self.store.update_run(run_id, status=status, end_time=end_time)  # RunNotFoundError

    def delete_run(self, run_id: str) -> None:
        self.store_for(run_id).set_run_lifecycle(run_id, LifecycleStage.DELETED.value)

    def restore_run(self, run_id: str) -> None:
        self.store_for(run_id).set_run_lifecycle(run_id, LifecycleStage.ACTIVE.value)

    def search_runs(
        self,
        experiment_ids: str | Sequence[str] | None = None,
        filter_string: str = "",
        run_view_type: int = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> list[Run]:
        if experiment_ids is None:
            experiment_ids = ["0"]
        elif isinstance(experiment_ids, (str, int)):
            experiment_ids = [str(experiment_ids)]
        self.flush()
        page = self.store.search_runs(
            [str(e) for e in experiment_ids],
            filter_string or "",
            int(run_view_type),
            _check_max(max_results),
            order_by,
            page_token,
        )
        return _PagedResult(page.items, page.token)

    # ------------------------------------------------------------------ logging
    def _buffer(self, run_id: str) -> RunBuffer:
        writer = get_writer()
        store = self.store
        buf = writer._buffers.get((id(store), run_id))
        if buf is not None and not buf.closed:
            return buf
        if not isinstance(run_id, str) or not run_id:
            msg = f"run_id must be a non-empty str, got {run_id!r}"
            raise InvalidValueError(msg)
        info = store.get_run_info(run_id)  # RunNotFoundError for an unknown id
        if info.status in _TERMINAL or info.lifecycle_stage != LifecycleStage.ACTIVE:
            msg = (
                f"run {run_id} is {info.status.lower() if info.status in _TERMINAL else 'deleted'}; "
                "logging to it is not allowed (resume it with mltrail.start_run(run_id=...))"
            )
            raise RunStateError(msg)
        self._artifact_uris[run_id] = info.artifact_uri
        return writer.buffer(store, run_id)

    def log_metric(
        self,
        run_id: str,
        key: str,
        value: float,
        timestamp: int | None = None,
        step: int | None = None,
    ) -> None:
        self._buffer(run_id).log_metric(key, value, step, timestamp)

    def log_param(self, run_id: str, key: str, value: Any) -> Any:
        self._buffer(run_id).log_params({key: value})
        return value

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        self._buffer(run_id).set_tags({key: value})

    def delete_tag(self, run_id: str, key: str) -> None:
        self._buffer(run_id).delete_tag(key)

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[Metric] = (),
        params: Iterable[Param] = (),
        tags: Iterable[RunTag] = (),
    ) -> None:
        """Log many metrics, params and tags at once; nothing is logged if any is invalid."""
        metrics, params, tags = list(metrics), list(params), list(tags)
        total = len(metrics) + len(params) + len(tags)
        if total > MAX_BATCH_ITEMS:
            msg = f"log_batch got {total} items; the limit is {MAX_BATCH_ITEMS} per call"
            raise InvalidValueError(msg)
        buf = self._buffer(run_id)
        from mltrail.core.validation import validate_int, validate_metric_value

        checked = [
            (
                validate_key(m.key, "metric"),
                validate_metric_value(m.key, m.value),
                validate_int("step", m.step),
                validate_int("timestamp", m.timestamp),
            )
            for m in metrics
        ]
        buf.log_params({p.key: p.value for p in params})
        buf.set_tags({t.key: t.value for t in tags})
        for key, value, step, ts in checked:
            buf.log_metric(key, value, step, ts)

    def log_inputs(self, run_id: str, datasets: Sequence[Any], context: str | None = None) -> None:
        info = self.store_for(run_id).get_run_info(run_id)
        converted: list[tuple[Dataset, str | None]] = []
        for item in datasets:
            ds = item if isinstance(item, Dataset) else from_any(item)
            converted.append((ds, context))
        self.store.log_inputs(run_id, info.experiment_id, converted)

    # ------------------------------------------------------------------ artifacts
    def _repo(self, run_id: str) -> ArtifactRepository:
        uri = self._artifact_uris.get(run_id)
        if uri is None:
            uri = self.store_for(run_id).get_run_info(run_id).artifact_uri
            self._artifact_uris[run_id] = uri
        return repository_for(uri)

    def get_artifact_uri(self, run_id: str, artifact_path: str | None = None) -> str:
        from mltrail.core.validation import validate_artifact_path

        root = self.store_for(run_id).get_run_info(run_id).artifact_uri
        rel = validate_artifact_path(artifact_path)
        return f"{root}/{rel}" if rel else root

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        self._repo(run_id).log_file(local_path, artifact_path or "")

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        self._repo(run_id).log_dir(local_dir, artifact_path or "")

    def log_bytes(self, run_id: str, data: bytes, artifact_file: str) -> None:
        self._repo(run_id).write_bytes(artifact_file, data)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        if not isinstance(text, str):
            msg = f"log_text expects a str, got {type(text).__name__}"
            raise InvalidValueError(msg)
        self.log_bytes(run_id, text.encode("utf-8"), artifact_file)

    def log_dict(self, run_id: str, dictionary: Any, artifact_file: str) -> None:
        ext = os.path.splitext(artifact_file)[1].lower()
        if ext in (".yaml", ".yml"):
            from mltrail.core.errors import require

            yaml: Any = require("yaml", "yaml")
            text = yaml.safe_dump(dictionary, default_flow_style=False, sort_keys=False)
        else:
            try:
                text = json.dumps(dictionary, indent=2, default=_json_default)
            except (TypeError, ValueError) as exc:
                msg = f"log_dict could not serialise the object to JSON: {exc}"
                raise InvalidValueError(msg) from exc
        self.log_text(run_id, text, artifact_file)

    def log_figure(self, run_id: str, figure: Any, artifact_file: str) -> None:
        """Save a matplotlib figure (PNG, SVG, PDF... by extension) or a plotly figure (HTML)."""
        ext = os.path.splitext(artifact_file)[1].lower().lstrip(".")
        if hasattr(figure, "savefig"):
            buf = io.BytesIO()
            figure.savefig(buf, format=ext or "png")
            self.log_bytes(run_id, buf.getvalue(), artifact_file)
        elif hasattr(figure, "to_html"):
            self.log_text(run_id, figure.to_html(), artifact_file)
        else:
            msg = f"log_figure expects a matplotlib or plotly figure, got {type(figure).__name__}"
            raise InvalidValueError(msg)

    def log_image(self, run_id: str, image: Any, artifact_file: str) -> None:
        """Save a numpy array (HxW, HxWx3, HxWx4; uint8, or floats in [0, 1]) or a PIL image."""
        self.log_bytes(run_id, images.to_png(image), artifact_file)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[FileInfo]:
        return self._repo(run_id).list(path or "")

    def download_artifacts(self, run_id: str, path: str = "", dst_path: str | None = None) -> str:
        dst = dst_path or tempfile.mkdtemp(prefix="mltrail-download-")
        return self._repo(run_id).download(path, dst)

    # ------------------------------------------------------------------ reading back
    def get_metric_history(self, run_id: str, key: str) -> MetricHistory:
        """The metric's every point, in logging order, as numpy columns (see MetricHistory)."""
        self.flush()
        return self.store.get_metric_history(run_id, key)

    def flush(self) -> None:
        """Make what this process logged (integrations' background work too) readable."""
        run_flush_hooks()
        writer = get_writer()
        if writer.has_pending():
            writer.flush()


class _PagedResult(list):  # type: ignore[type-arg]
    """A list with the ``token`` for the next page (None on the last), as MLflow's PagedList."""

    def __init__(self, items: Iterable[Any], token: str | None) -> None:
        super().__init__(items)
        self.token = token


def _check_max(max_results: int) -> int:
    if not isinstance(max_results, int) or isinstance(max_results, bool) or max_results < 1:
        msg = f"max_results must be a positive int, got {max_results!r}"
        raise InvalidValueError(msg)
    if max_results > 50_000:
        msg = f"max_results may be at most 50000, got {max_results}"
        raise InvalidValueError(msg)
    return max_results


def _check_status(status: str) -> None:
    valid = {s.value for s in RunStatus if s is not RunStatus.CRASHED}
    if status not in valid:
        msg = f"run status must be one of {sorted(valid)}, got {status!r}"
        raise InvalidValueError(msg)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
