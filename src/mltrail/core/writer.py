"""The background writer behind every ``log_*`` call (DESIGN invariant 4).

The training loop's side of a metric is :meth:`RunBuffer.log_metric`: a dict lookup for the
series, two type checks, a clock read and one ``deque.append`` of a ``(step, timestamp, value)``
tuple. ``deque.append`` and ``deque.popleft`` are atomic under the GIL, so the loop never takes
a lock and never waits for the writer, the disk or the network.

One writer thread per process wakes every ``flush_interval`` seconds (or early, when a series
holds many points), drains every buffer into numpy columns and writes them all as one
:class:`~mltrail.core.store.base.WriteBatch` (one transaction). What was drained but could not
be written (disk full, read-only file, database restarting) is kept, compactly, and retried
oldest first, so the order of points per (run, key) never changes. Past
``max_pending_points`` held in memory, new points are dropped and counted; the count is warned
once and recorded on the run.

``flush()`` drains on the caller's thread under the writer's I/O lock, so it returns once
everything logged before it is durable. A process keeps its heartbeat on the runs it owns; a run
whose heartbeat stops (SIGKILL, power loss) reads as CRASHED once its deadline passes.

After ``fork`` the child starts with empty buffers and no thread: it never writes what the
parent logged, and a child that logs gets its own writer thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Mapping
from itertools import chain, repeat
from typing import TYPE_CHECKING, Any

from mltrail.core.errors import ParamConflictError, RunStateError
from mltrail.core.store.base import MetricChunk, WriteBatch
from mltrail.core.validation import (
    validate_int,
    validate_key,
    validate_metric_value,
    validate_param_value,
    validate_tag_value,
)

if TYPE_CHECKING:
    from mltrail.core.store.base import Store

_log = logging.getLogger("mltrail.writer")
_time_ns = time.time_ns

# A series holding this many unwritten points wakes the writer early.
_WAKE_AT = 50_000
_COMPACT_AFTER = 16  # small chunks of a series before they are merged


class DataLossWarning(UserWarning):
    """mltrail could not keep everything that was logged (the count is recorded on the run)."""


class StoreUnavailableWarning(UserWarning):
    """The store could not be written; mltrail holds the data in memory and retries."""


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        _log.warning("ignoring %s=%r: not a number", name, raw)
        return default
    return value if value > 0 else default


class WriterConfig:
    """Settings read from the environment when the writer starts.

    ``MLTRAIL_FLUSH_INTERVAL`` (seconds, default 0.5): the most a SIGKILL can lose.
    ``MLTRAIL_MAX_PENDING_POINTS`` (default 5,000,000): points held while the store is down.
    ``MLTRAIL_FLUSH_TIMEOUT`` (seconds, default 30): how long flush/end_run/exit wait for a
    store that does not answer. ``MLTRAIL_HEARTBEAT_INTERVAL`` (default 10) and
    ``MLTRAIL_HEARTBEAT_TIMEOUT`` (default 60): a run whose heartbeat is older than the timeout
    reads as CRASHED.
    """

    def __init__(self) -> None:
        self.flush_interval = _env_float("MLTRAIL_FLUSH_INTERVAL", 0.5)
        self.max_pending_points = int(_env_float("MLTRAIL_MAX_PENDING_POINTS", 5_000_000))
        self.flush_timeout = _env_float("MLTRAIL_FLUSH_TIMEOUT", 30.0)
        self.heartbeat_interval = _env_float("MLTRAIL_HEARTBEAT_INTERVAL", 10.0)
        self.heartbeat_timeout = _env_float("MLTRAIL_HEARTBEAT_TIMEOUT", 60.0)


class _Series:
    __slots__ = ("key", "queue", "small_chunks")

    def __init__(self, key: str) -> None:
        self.key = key
        self.queue: deque[tuple[int, int, float]] = deque()
        self.small_chunks = 0


class RunBuffer:
    """Where one run's logged data waits for the writer. Obtain with :meth:`Writer.buffer`."""

    def __init__(self, writer: Writer, store: Store, run_id: str, *, owned: bool) -> None:
        self.writer = writer
        self.store = store
        self.run_id = run_id
        self.owned = owned
        self.series: dict[str, deque[tuple[int, int, float]]] = {}
        self._series_objs: dict[str, _Series] = {}
        self.ops: deque[tuple[str, str, str]] = deque()  # ("param"|"tag"|"deltag", key, value)
        self.params: dict[str, str] | None = None  # known params, loaded on first log_param
        self.closed = False
        self.dropped = 0
        self._dropped_lock = threading.Lock()
        self.last_heartbeat = 0.0

    # ------------------------------------------------------------------ the hot path
    def log_metric(
        self, key: str, value: Any, step: Any = None, timestamp: Any = None
    ) -> None:
        queue = self.series.get(key)
        if queue is None:
            queue = self._new_series(key)
        if type(value) is not float:
            value = validate_metric_value(key, value)
        if step is None:
            step = 0
        elif type(step) is not int or not -0x8000000000000000 <= step <= 0x7FFFFFFFFFFFFFFF:
            step = validate_int("step", step)
        if timestamp is None:
            timestamp = _time_ns() // 1_000_000
        elif type(timestamp) is not int or not -0x8000000000000000 <= timestamp <= 0x7FFFFFFFFFFFFFFF:
            timestamp = validate_int("timestamp", timestamp)
        if self.writer.overloaded or self.closed:
            self._refuse(1)
            return
        queue.append((step, timestamp, value))
        if len(queue) > _WAKE_AT:
            self.writer.wake()

    def log_metrics(
        self, metrics: Mapping[str, Any], step: Any = None, timestamp: Any = None
    ) -> None:
        if step is None:
            step = 0
        elif type(step) is not int or not -0x8000000000000000 <= step <= 0x7FFFFFFFFFFFFFFF:
            step = validate_int("step", step)
        if timestamp is None:
            timestamp = _time_ns() // 1_000_000
        elif type(timestamp) is not int or not -0x8000000000000000 <= timestamp <= 0x7FFFFFFFFFFFFFFF:
            timestamp = validate_int("timestamp", timestamp)
        series = self.series
        points = []
        for key, value in metrics.items():
            queue = series.get(key)
            if queue is None:
                queue = self._new_series(key)
            if type(value) is not float:
                value = validate_metric_value(key, value)
            points.append((queue, value))
        # Validate everything before enqueueing anything: a bad entry logs nothing.
        if self.writer.overloaded or self.closed:
            self._refuse(len(points))
            return
        for queue, value in points:
            queue.append((step, timestamp, value))
            if len(queue) > _WAKE_AT:
                self.writer.wake()

    def _new_series(self, key: str) -> deque[tuple[int, int, float]]:
        validate_key(key, "metric")
        obj = self._series_objs.get(key)
        if obj is None:
            obj = self._series_objs[key] = _Series(key)
        self.series[key] = obj.queue
        return obj.queue

    def _refuse(self, n: int) -> None:
        if self.closed:
            msg = f"run {self.run_id} has ended; start or resume a run to log to it"
            raise RunStateError(msg)
        with self._dropped_lock:
            self.dropped += n
        self.writer.warn_dropped()

    # ------------------------------------------------------------------ params and tags
    def log_params(self, params: Mapping[str, Any]) -> None:
        items = []
        known = self._known_params()
        staged: dict[str, str] = {}
        for key, value in params.items():
            validate_key(key, "param")
            text = validate_param_value(key, value)
            old = known.get(key, staged.get(key))
            if old is not None and old != text:
                msg = (
                    f"param {key!r} was already logged to run {self.run_id} with value {old!r}; "
                    f"it cannot be changed to {text!r} (params are immutable: log a new run, or a "
                    "metric or tag for values that change)"
                )
                raise ParamConflictError(msg)
            staged[key] = text
            if old is None:
                items.append(("param", key, text))
        self._check_open()
        known.update(staged)
        self.ops.extend(items)

    def _known_params(self) -> dict[str, str]:
        if self.params is None:
            self.params = self.store.get_params(self.run_id)
        return self.params

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = []
        for key, value in tags.items():
            validate_key(key, "tag")
            items.append(("tag", key, validate_tag_value(key, value)))
        self._check_open()
        self.ops.extend(items)

    def delete_tag(self, key: str) -> None:
        validate_key(key, "tag")
        self._check_open()
        self.ops.append(("deltag", key, ""))

    def _check_open(self) -> None:
        if self.closed:
            msg = f"run {self.run_id} has ended; start or resume a run to log to it"
            raise RunStateError(msg)

    # ------------------------------------------------------------------ writer side
    def pending(self) -> bool:
        return bool(self.ops) or any(self.series.values())

    def drain_into(self, batch: WriteBatch) -> None:
        """Move everything buffered into ``batch`` (called with the writer's I/O lock held)."""
        import numpy as np

        ops = self.ops
        for _ in repeat(None, len(ops)):
            kind, key, value = ops.popleft()
            if kind == "param":
                batch.params.append((self.run_id, key, value))
            elif kind == "tag":
                # A batch applies sets before deletes: keep only the last word on a key.
                target = (self.run_id, key)
                batch.deleted_tags[:] = [t for t in batch.deleted_tags if t != target]
                batch.tags.append((self.run_id, key, value))
            else:
                batch.tags[:] = [t for t in batch.tags if t[:2] != (self.run_id, key)]
                batch.deleted_tags.append((self.run_id, key))
        for key, queue in list(self.series.items()):
            n = len(queue)
            if not n:
                continue
            pop = queue.popleft
            points = [pop() for _ in repeat(None, n)]
            # fromiter over the flattened tuples is twice as fast as np.array(points).
            table = np.fromiter(chain.from_iterable(points), np.float64, 3 * n).reshape(n, 3)
            steps = table[:, 0]
            stamps = table[:, 1]
            if np.abs(steps).max() >= 2**53 or np.abs(stamps).max() >= 2**53:
                # Beyond float64's exact integers: convert exactly, element by element.
                steps_i = np.array([p[0] for p in points], dtype=np.int64)
                stamps_i = np.array([p[1] for p in points], dtype=np.int64)
            else:
                steps_i = steps.astype(np.int64)
                stamps_i = stamps.astype(np.int64)
            batch.metrics.append(
                MetricChunk(self.run_id, key, steps_i, stamps_i, np.ascontiguousarray(table[:, 2]))
            )
        if self.dropped:
            with self._dropped_lock:
                n, self.dropped = self.dropped, 0
            batch.dropped[self.run_id] = batch.dropped.get(self.run_id, 0) + n

    def reset_after_fork(self) -> None:
        for queue in self.series.values():
            queue.clear()
        self.ops.clear()
        self.owned = False
        self.dropped = 0
        self._dropped_lock = threading.Lock()


class Writer:
    """The process's background writer. Use :func:`get_writer`."""

    def __init__(self) -> None:
        self.config = WriterConfig()
        self._buffers: dict[tuple[int, str], RunBuffer] = {}
        self._registry_lock = threading.Lock()
        self._io_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._retained: list[tuple[Store, WriteBatch]] = []
        self.overloaded = False
        self._warned_store = False
        self._warned_dropped = False
        self._dropped_total: dict[str, int] = {}
        self._pid = os.getpid()
        # Set by a signal handler that interrupted this thread's own flush: run after it.
        self.deferred: Any = None

    def io_owned_by_current_thread(self) -> bool:
        return bool(self._io_lock._is_owned())  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ buffers
    def buffer(self, store: Store, run_id: str, *, owned: bool = False) -> RunBuffer:
        """Return the buffer for ``run_id`` in ``store``, creating it (and the thread) if needed."""
        key = (id(store), run_id)
        buf = self._buffers.get(key)
        if buf is None:
            with self._registry_lock:
                buf = self._buffers.get(key)
                if buf is None:
                    buf = RunBuffer(self, store, run_id, owned=owned)
                    self._buffers[key] = buf
        if owned and not buf.owned:
            buf.owned = True
        if buf.closed and owned:
            buf.closed = False
        self._ensure_thread()
        return buf

    def close_buffer(self, store: Store, run_id: str) -> None:
        """Flush and forget a run's buffer; later logging to it raises RunStateError."""
        self.flush()
        with self._registry_lock:
            buf = self._buffers.pop((id(store), run_id), None)
        if buf is not None:
            buf.closed = True

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._registry_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="mltrail-writer", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.config.flush_interval)
            self._wake.clear()
            if self._stop:
                break
            try:
                with self._io_lock:
                    self._cycle()
            except Exception:  # noqa: BLE001 - the writer thread must never die
                _log.exception("mltrail writer cycle failed")

    def _cycle(self) -> bool:
        """Drain every buffer and write; return True when nothing is left unwritten."""
        now = time.monotonic()
        by_store: dict[int, tuple[Store, WriteBatch]] = {}
        for buf in list(self._buffers.values()):
            entry = by_store.get(id(buf.store))
            if entry is None:
                entry = by_store[id(buf.store)] = (buf.store, WriteBatch())
            batch = entry[1]
            buf.drain_into(batch)
            if buf.owned and now - buf.last_heartbeat >= self.config.heartbeat_interval:
                buf.last_heartbeat = now
                batch.heartbeats[buf.run_id] = (
                    _time_ns() // 1_000_000 + int(self.config.heartbeat_timeout * 1000)
                )
            if batch.dropped.get(buf.run_id):
                total = self._dropped_total.get(buf.run_id, 0) + batch.dropped[buf.run_id]
                self._dropped_total[buf.run_id] = total
                batch.tags.append((buf.run_id, "mltrail.dropped_points", str(total)))
        for store, batch in by_store.values():
            if batch:
                self._retain(store, batch)
        return self._write_retained()

    def _retain(self, store: Store, batch: WriteBatch) -> None:
        if self._retained and self._retained[-1][0] is store:
            # The store is failing: fold new data into the last held batch (order kept).
            last = self._retained[-1][1]
            last.params.extend(batch.params)
            last.tags.extend(batch.tags)
            last.deleted_tags.extend(batch.deleted_tags)
            last.metrics.extend(batch.metrics)
            last.heartbeats.update(batch.heartbeats)
            for run_id, n in batch.dropped.items():
                last.dropped[run_id] = last.dropped.get(run_id, 0) + n
        else:
            self._retained.append((store, batch))

    def _write_retained(self) -> bool:
        while self._retained:
            store, batch = self._retained[0]
            try:
                store.write_batch(batch)
            except Exception as exc:  # noqa: BLE001 - held and retried; never raised into training
                self._store_failed(store, exc)
                self._update_overload()
                return False
            self._retained.pop(0)
            if self._warned_store:
                _log.warning("mltrail: the store at %s is writable again", store.uri)
                self._warned_store = False
            self._after_write(store, batch)
        self._update_overload()
        return True

    def _after_write(self, store: Store, batch: WriteBatch) -> None:
        from mltrail.core.store.sql import COMPACT_TARGET_POINTS

        for chunk in batch.metrics:
            buf = self._buffers.get((id(store), chunk.run_id))
            if buf is None:
                continue
            series = buf._series_objs.get(chunk.key)
            if series is None:
                continue
            if len(chunk.values) >= COMPACT_TARGET_POINTS:
                series.small_chunks = 0
                continue
            series.small_chunks += 1
            if series.small_chunks >= _COMPACT_AFTER:
                try:
                    store.compact_series(chunk.run_id, chunk.key)
                    series.small_chunks = 1
                except Exception:  # noqa: BLE001 - compaction is an optimisation only
                    _log.debug("compaction of %s/%s failed", chunk.run_id, chunk.key, exc_info=True)

    def _store_failed(self, store: Store, exc: BaseException) -> None:
        held = sum(b.point_count() for _, b in self._retained)
        if not self._warned_store:
            self._warned_store = True
            warnings.warn(
                f"mltrail could not write to the store at {store.uri} ({type(exc).__name__}: {exc}); "
                f"holding {held} points in memory and retrying. Training is not affected.",
                StoreUnavailableWarning,
                stacklevel=2,
            )
        _log.debug("store write failed; %d points held", held, exc_info=True)

    def _update_overload(self) -> None:
        held = sum(b.point_count() for _, b in self._retained)
        self.overloaded = held >= self.config.max_pending_points

    def warn_dropped(self) -> None:
        if not self._warned_dropped:
            self._warned_dropped = True
            warnings.warn(
                "mltrail is holding its limit of unwritten points "
                f"(MLTRAIL_MAX_PENDING_POINTS={self.config.max_pending_points}) because the store "
                "cannot be written; newer points are being dropped and counted (tag "
                "mltrail.dropped_points on the run)",
                DataLossWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ flushing
    def flush(self, timeout: float | None = None) -> bool:
        """Write everything logged so far; return False if the store stayed unavailable."""
        if self._pid != os.getpid():
            self._after_fork()
        deadline = time.monotonic() + (self.config.flush_timeout if timeout is None else timeout)
        delay = 0.05
        while True:
            with self._io_lock:
                done = self._cycle()
            if self.deferred is not None:
                callback, self.deferred = self.deferred, None
                callback()
            if done:
                return True
            if time.monotonic() >= deadline:
                held = sum(b.point_count() for _, b in self._retained)
                _log.warning(
                    "mltrail: flush gave up after waiting for the store; %d points still held", held
                )
                return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def has_pending(self) -> bool:
        return bool(self._retained) or any(b.pending() for b in list(self._buffers.values()))

    def shutdown(self, timeout: float | None = None) -> None:
        self.flush(timeout)
        self._stop = True
        self._wake.set()

    def _after_fork(self) -> None:
        """Start the child with nothing of the parent's: no thread, no buffered data, new locks."""
        self._pid = os.getpid()
        self._io_lock = threading.RLock()
        self._registry_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._retained = []
        self.overloaded = False
        self._dropped_total = {}
        for buf in self._buffers.values():
            buf.reset_after_fork()


_writer: Writer | None = None
_writer_lock = threading.Lock()


def get_writer() -> Writer:
    global _writer
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = Writer()
    return _writer


def _after_fork_in_child() -> None:
    global _writer_lock
    _writer_lock = threading.Lock()
    if _writer is not None:
        _writer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
