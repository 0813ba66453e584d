"""The background writer behind every ``log_*`` call (DESIGN invariant 4).

The training loop's side of a metric is :meth:`RunBuffer.log_metric`: a dict lookup for the
series, two type checks, a clock read and one ``deque.append`` of a ``(step, timestamp, value)``
tuple. ``log_metrics`` with the same keys at every step appends one row ``(step, timestamp,
values)`` for all of them (see :class:`_KeySet`). ``deque.append`` and ``deque.popleft`` are
atomic under the GIL, so the loop never takes a lock and never waits for the writer, the disk or
the network; nor does it signal the writer (an ``Event.set`` per call would cost more than the
rest of the call).

One writer thread per process wakes every ``flush_interval`` seconds (or early, when it finds
many points waiting: it looks every 50 ms), drains every buffer into numpy columns (in slices,
letting the training thread run in between) and writes them all as one
:class:`~mltrail.core.store.base.WriteBatch` (one transaction). What was drained but could not
be written (disk full, read-only file, database restarting) is kept, compactly, and retried
oldest first (backing off up to a few seconds between attempts), so the order of points per
(run, key) never changes. At most ``max_pending_points`` are held: past that the newest points
are dropped and counted, and new ones are refused until the store answers again; the count is
warned once and recorded on the run (tag ``mltrail.dropped_points``). Warnings raised from here
never propagate, whatever the warning filters say: a filter that turns them into errors gets a
log record instead.

``flush()`` drains on the caller's thread under the writer's I/O lock, so it returns once
everything logged before it is durable (or the store stayed down for ``flush_timeout``).
Interpreter exit drains the queue (``atexit``; in a ``multiprocessing`` child, its exit
finalizer). A process keeps its heartbeat on the runs it owns; a run whose heartbeat stops
(SIGKILL, power loss) reads as CRASHED once its deadline passes.

After ``fork`` the child starts with empty buffers, new locks and no thread: it never writes
what the parent logged, never waits on a lock the parent's writer held at the fork, and a child
that logs gets its own writer thread (started by its first ``log_*`` call).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from itertools import chain, repeat, starmap
from typing import TYPE_CHECKING, Any

from mltrail.core.errors import ParamConflictError, RunStateError
from mltrail.core.store.base import MetricChunk, RunStart, WriteBatch
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
_time = time.time

# The writer looks this often (seconds) whether this many points are waiting, and then drains
# early instead of at its interval: it bounds the memory a fast loop holds in Python objects.
_POLL = 0.05
_DEFER_LIMIT = 1.0  # seconds a wake-up deferred for a training call waits at most
_DRAIN_AT = 20_000
# A buffer found holding this many points makes its loggers yield the GIL to the writer on
# every call until it has been drained: a loop that logs faster than the writer can convert
# (a million calls a second) slows down a little instead of growing memory without bound.
_THROTTLE_AT = 80_000
# Points taken and converted to numpy at a time. Each slice is C calls only (no bytecode runs,
# so nothing interrupts it halfway): about 5 ms of GIL at most. Between slices the training
# thread gets the GIL back if it has waited for it.
_SLICE = 32_768
_EXACT = float(2**53)  # steps and timestamps beyond this are converted element by element
_FLOAT_ONLY = frozenset([float])
_COMPACT_AFTER = 16  # small chunks of a series before they are merged
_MAX_BACKOFF = 2.0  # seconds between background retries of a failing store, at most
DROPPED_TAG = "mltrail.dropped_points"


class DataLossWarning(UserWarning):
    """mltrail could not keep everything that was logged (the count is recorded on the run)."""


class StoreUnavailableWarning(UserWarning):
    """The store could not be written; mltrail holds the data in memory and retries."""


def _warn(message: str, category: type[Warning], stacklevel: int) -> None:
    """``warnings.warn`` that can never raise into training or kill the writer thread."""
    try:
        warnings.warn(message, category, stacklevel=stacklevel + 1)
    except Exception:  # noqa: BLE001 - a filter made it an error: report it another way
        _log.warning("%s: %s", category.__name__, message)


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
    ``MLTRAIL_FLUSH_TIMEOUT`` (seconds, default 30): how long flush/end_run/exit/SIGTERM wait
    for a store that does not answer. ``MLTRAIL_HEARTBEAT_INTERVAL`` (default 10) and
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
        self.queue: deque[tuple[int, float, float]] = deque()
        self.small_chunks = 0


class _KeySet:
    """The keys of a ``log_metrics`` call that come back together, as one row per call.

    A training loop usually logs the same dict of metrics at every step; appending one
    ``(step, timestamp, values)`` row is far cheaper than a point per key, for the loop and for
    the writer (which turns the rows into a 2-D array). A key belongs to at most one live key
    set and then has no per-key queue. When a key is logged another way (``log_metric``, or a
    ``log_metrics`` whose keys overlap differently), its key set is *retired*: later calls use
    the per-key queues, and the writer drains the retired set's rows before those queues, so the
    order of every key's points is kept.
    """

    __slots__ = ("empty_drains", "keys", "retired", "rows")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.rows: deque[tuple[int, float, tuple[float, ...]]] = deque()
        self.retired = False
        self.empty_drains = 0


class RunBuffer:
    """Where one run's logged data waits for the writer. Obtain with :meth:`Writer.buffer`."""

    def __init__(self, writer: Writer, store: Store, run_id: str, *, owned: bool) -> None:
        self.writer = writer
        self.store = store
        self.run_id = run_id
        self.owned = owned
        self.series: dict[str, deque[tuple[int, float, float]]] = {}
        self._series_objs: dict[str, _Series] = {}
        self.keysets: dict[tuple[str, ...], _KeySet] = {}  # live key sets, by their keys
        self._keyset_objs: list[_KeySet] = []  # live and retired, oldest first (drain order)
        self._key_owner: dict[str, _KeySet] = {}
        self.ops: deque[tuple[str, str, str]] = deque()  # ("param"|"tag"|"deltag", key, value)
        self.params: dict[str, str] | None = None  # known params, loaded on first log_param
        self._closed = False
        self._throttled = False
        # ``closed or writer.overloaded or throttled``, kept up to date by their setters: one
        # check on the hot path.
        self.refusing = writer.overloaded
        self.dropped = 0
        self._dropped_lock = threading.Lock()
        self.last_heartbeat = 0.0
        self.start: RunStart | None = None  # the run itself, until written (Writer.start_run)

    @property
    def closed(self) -> bool:
        return self._closed

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value
        self.update_refusing()

    @property
    def throttled(self) -> bool:
        """Set by the writer while it is far behind this buffer, cleared when it has drained."""
        return self._throttled

    @throttled.setter
    def throttled(self, value: bool) -> None:
        if value != self._throttled:
            self._throttled = value
            self.update_refusing()

    # ------------------------------------------------------------------ the hot path
    def log_metric(
        self, key: str, value: Any, step: Any = None, timestamp: Any = None
    ) -> None:
        queue = self.series.get(key)
        if queue is None:
            queue = self._new_series(key)
        if type(value) is not float:
            value = validate_metric_value(key, value)
        step, timestamp = _step_and_timestamp(step, timestamp)
        if self.refusing and self._refuse(1):
            return
        queue.append((step, timestamp, value))

    def log_metrics(
        self, metrics: Mapping[str, Any], step: Any = None, timestamp: Any = None
    ) -> None:
        keys = tuple(metrics)
        keyset = self.keysets.get(keys)
        if keyset is None:
            self._log_metrics_by_key(metrics, step, timestamp, keys)
            return
        values = tuple(metrics.values())
        if set(map(type, values)) != _FLOAT_ONLY:
            values = tuple(map(validate_metric_value, keys, values))
        step, timestamp = _step_and_timestamp(step, timestamp)
        if self.refusing and self._refuse(len(values)):
            return
        keyset.rows.append((step, timestamp, values))

    def _log_metrics_by_key(
        self, metrics: Mapping[str, Any], step: Any, timestamp: Any, keys: tuple[str, ...]
    ) -> None:
        """The first call with these keys, or keys shared with other calls: a point per key."""
        step, timestamp = _step_and_timestamp(step, timestamp)
        # Validate everything before enqueueing anything: a bad entry logs nothing.
        values = [validate_metric_value(validate_key(k, "metric"), v) for k, v in metrics.items()]
        if not values:
            return
        if self.refusing and self._refuse(len(values)):
            return
        if len(set(keys)) == len(keys) and not any(
            k in self.series or k in self._key_owner for k in keys
        ):
            keyset = self._new_keyset(keys)
            keyset.rows.append((step, timestamp, tuple(values)))
            return
        series = self.series
        for key, value in zip(keys, values, strict=True):
            queue = series.get(key)
            if queue is None:
                queue = self._new_series(key)
            queue.append((step, timestamp, value))

    def _new_keyset(self, keys: tuple[str, ...]) -> _KeySet:
        keyset = _KeySet(keys)
        for key in keys:
            self._key_owner[key] = keyset
            if key not in self._series_objs:
                self._series_objs[key] = _Series(key)
        self._keyset_objs.append(keyset)
        self.keysets[keys] = keyset
        self.writer._ensure_thread()
        return keyset

    def _retire(self, keyset: _KeySet) -> None:
        keyset.retired = True
        self.keysets.pop(keyset.keys, None)
        for key in keyset.keys:
            if self._key_owner.get(key) is keyset:
                del self._key_owner[key]

    def _new_series(self, key: str) -> deque[tuple[int, float, float]]:
        validate_key(key, "metric")
        owner = self._key_owner.get(key)
        if owner is not None:
            self._retire(owner)
        obj = self._series_objs.get(key)
        if obj is None:
            obj = self._series_objs[key] = _Series(key)
        self.series[key] = obj.queue
        # Off the hot path (once per key, and once per key again in a forked child, whose
        # ``series`` starts empty): make sure this process has a writer thread.
        self.writer._ensure_thread()
        return obj.queue

    def _refuse(self, n: int) -> bool:
        """The hot path's way out, taken only while ``refusing`` is set; True: drop the points.

        A closed run raises. A writer at its memory bound drops and counts. A writer that is
        behind (``throttled``: the loop logs faster than it drains) gets the GIL for a moment,
        and the points are kept: what a loop holds in memory stays bounded.
        """
        if self._closed:
            msg = f"run {self.run_id} has ended; start or resume a run to log to it"
            raise RunStateError(msg)
        if self.writer.overloaded:
            with self._dropped_lock:
                self.dropped += n
            self.writer.warn_dropped()
            return True
        if self._throttled:
            time.sleep(0)
        return False

    def update_refusing(self) -> None:
        self.refusing = self._closed or self.writer.overloaded or self._throttled

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
        self.writer._ensure_thread()

    # ------------------------------------------------------------------ writer side
    def pending(self) -> bool:
        return (
            self.start is not None
            or bool(self.ops)
            or any(self.series.values())
            or any(k.rows for k in self._keyset_objs)
            or bool(self.dropped)
        )

    def pending_points(self) -> int:
        n = sum(map(len, self.series.values()))
        for keyset in self._keyset_objs:
            if keyset.rows:
                n += len(keyset.rows) * len(keyset.keys)
        return n

    def drain_into(self, batch: WriteBatch) -> None:
        """Move everything buffered into ``batch`` (called with the writer's I/O lock held).

        Points are taken and converted a slice at a time, so a large drain never holds the
        training thread up for long.
        """
        import numpy as np

        start = self.start
        if start is not None:  # set before anything is logged to the run: it goes first
            self.start = None
            batch.run_starts.append(start)
        ops = self.ops
        for _ in repeat(None, len(ops)):
            kind, key, value = ops.popleft()
            if kind == "param":
                batch.params.append((self.run_id, key, value))
            elif kind == "tag":
                _set_tag(batch, self.run_id, key, value)
            else:
                _delete_tag(batch, self.run_id, key)
        # Per key, the parts in logging order: key-set rows (retired sets before the live one
        # that replaced them), then the per-key queue, which only holds later points.
        parts: dict[str, list[tuple[Any, Any, Any]]] = {}
        for keyset in list(self._keyset_objs):
            rows = keyset.rows
            n = len(rows)
            if not n:
                # Forgotten after two empty drains: a thread that looked the set up just before
                # it was retired has had a whole cycle to append its row.
                if keyset.retired:
                    keyset.empty_drains += 1
                    if keyset.empty_drains >= 2:
                        self._keyset_objs.remove(keyset)
                continue
            pop_row = rows.popleft
            while n:
                m = min(n, max(1, _SLICE // len(keyset.keys)))
                taken = list(starmap(pop_row, repeat((), m)))
                steps, stamps = _steps_and_stamps(
                    np.fromiter(chain.from_iterable(r[:2] for r in taken), np.float64, 2 * m),
                    taken,
                )
                table = np.array([r[2] for r in taken], dtype=np.float64).reshape(m, len(keyset.keys))
                for j, key in enumerate(keyset.keys):
                    parts.setdefault(key, []).append((steps, stamps, table[:, j]))
                n -= m
        for key, queue in list(self.series.items()):
            n = len(queue)
            pop = queue.popleft
            while n:
                m = min(n, _SLICE)
                points = list(starmap(pop, repeat((), m)))
                # fromiter over the flattened tuples is twice as fast as np.array(points).
                table = np.fromiter(chain.from_iterable(points), np.float64, 3 * m).reshape(m, 3)
                steps, stamps = _steps_and_stamps(table[:, :2], points)
                parts.setdefault(key, []).append((steps, stamps, table[:, 2]))
                n -= m
        for key, pieces in parts.items():
            if len(pieces) == 1:
                steps, stamps, values = pieces[0]
            else:
                steps = np.concatenate([p[0] for p in pieces])
                stamps = np.concatenate([p[1] for p in pieces])
                values = np.concatenate([p[2] for p in pieces])
            batch.metrics.append(
                MetricChunk(self.run_id, key, steps, stamps, np.ascontiguousarray(values, np.float64))
            )
        self.throttled = False
        if self.dropped:
            with self._dropped_lock:
                n, self.dropped = self.dropped, 0
            self.writer._count_dropped(batch, self.run_id, n)

    def reset_after_fork(self) -> None:
        """Forget what the parent logged; a new ``series`` dict routes the child's first
        ``log_metric`` per key through :meth:`_new_series`, which starts the child's writer."""
        for obj in self._series_objs.values():
            obj.queue.clear()
        self.series = {}
        self.keysets = {}
        self._keyset_objs = []
        self._key_owner = {}
        self.ops.clear()
        # ``start`` stays: a run the parent has not written yet is written by whichever process
        # flushes first (the insert is idempotent), so the child's points never lack their run.
        self.owned = False
        self._throttled = False
        self.update_refusing()  # the writer's overload was reset before this
        self.dropped = 0
        self._dropped_lock = threading.Lock()


def _step_and_timestamp(step: Any, timestamp: Any) -> tuple[int, float | int]:
    """A call's step (default 0) and timestamp (default now, as float milliseconds), checked."""
    if step is None:
        step = 0
    elif type(step) is not int or not -0x8000000000000000 <= step <= 0x7FFFFFFFFFFFFFFF:
        step = validate_int("step", step)
    if timestamp is None:
        # Milliseconds as a float (the writer floors it): cheaper than time_ns() // 10**6.
        return step, _time() * 1000.0
    if type(timestamp) is not int or not -0x8000000000000000 <= timestamp <= 0x7FFFFFFFFFFFFFFF:
        timestamp = validate_int("timestamp", timestamp)
    return step, timestamp


def _steps_and_stamps(head: Any, taken: list[Any]) -> tuple[Any, Any]:
    """int64 steps and millisecond timestamps from the first two float columns of ``taken``.

    Timestamps taken by the hot path are float milliseconds (floored here); steps and given
    timestamps are ints, exact in float64 below 2**53 and converted one by one above it.
    """
    import numpy as np

    head = head.reshape(-1, 2)
    if np.abs(head).max() >= _EXACT:
        steps = np.array([t[0] for t in taken], dtype=np.int64)
        stamps = np.array([t[1] if type(t[1]) is int else int(t[1]) for t in taken], dtype=np.int64)
        return steps, stamps
    return head[:, 0].astype(np.int64), np.floor(head[:, 1]).astype(np.int64)


def _set_tag(batch: WriteBatch, run_id: str, key: str, value: str) -> None:
    # A batch applies sets before deletes: keep only the last word on a key.
    target = (run_id, key)
    if batch.deleted_tags:
        batch.deleted_tags[:] = [t for t in batch.deleted_tags if t != target]
    batch.tags.append((run_id, key, value))


def _delete_tag(batch: WriteBatch, run_id: str, key: str) -> None:
    target = (run_id, key)
    if batch.tags:
        batch.tags[:] = [t for t in batch.tags if t[:2] != target]
    batch.deleted_tags.append(target)


def _fold(last: WriteBatch, batch: WriteBatch) -> None:
    """Append ``batch`` to ``last`` as if both had been one batch (later words win)."""
    last.run_starts.extend(batch.run_starts)
    last.params.extend(batch.params)
    # ``batch`` itself has at most one word per tag key (sets and deletes are exclusive).
    for run_id, key in batch.deleted_tags:
        _delete_tag(last, run_id, key)
    for run_id, key, value in batch.tags:
        _set_tag(last, run_id, key, value)
    last.metrics.extend(batch.metrics)
    last.heartbeats.update(batch.heartbeats)
    for run_id in batch.run_ends:
        last.heartbeats.pop(run_id, None)  # an ended run has no heartbeat
    last.run_ends.update(batch.run_ends)
    for run_id, n in batch.dropped.items():
        last.dropped[run_id] = last.dropped.get(run_id, 0) + n


class Writer:
    """The process's background writer. Use :func:`get_writer`."""

    def __init__(self) -> None:
        self.config = WriterConfig()
        self._buffers: dict[tuple[int, str], RunBuffer] = {}
        self._registry_lock = threading.Lock()
        self._io_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._retained: list[tuple[Store, WriteBatch]] = []
        self._overloaded = False
        self._warned_store = False
        self._warned_dropped = False
        self._dropped_total: dict[str, int] = {}
        self._next_attempt = 0.0  # monotonic time of the next background write attempt
        self._backoff = 0.0
        self._deadline: float | None = None  # a hard limit on flushing, set on exit/SIGTERM
        self._pid = os.getpid()
        # Set by a signal handler that interrupted this thread's own flush: run after it.
        self.deferred: Any = None
        self._unwritten_starts: set[str] = set()  # runs started through start_run, not written yet

    @property
    def overloaded(self) -> bool:
        return self._overloaded

    @overloaded.setter
    def overloaded(self, value: bool) -> None:
        if value == self._overloaded:
            return
        self._overloaded = value
        for buf in list(self._buffers.values()):
            buf.update_refusing()

    def io_owned_by_current_thread(self) -> bool:
        return bool(self._io_lock._is_owned())  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ buffers
    def buffer(self, store: Store, run_id: str, *, owned: bool = False) -> RunBuffer:
        """Return the buffer for ``run_id`` in ``store``, creating it (and the thread) if needed."""
        if self._pid != os.getpid():
            self._after_fork()
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

    def owned_buffers(self) -> list[RunBuffer]:
        """Buffers of runs this process started and has not ended."""
        return [b for b in list(self._buffers.values()) if b.owned and not b.closed]

    def has_buffer(self, store: Store, run_id: str) -> bool:
        return (id(store), run_id) in self._buffers

    def start_run(self, buf: RunBuffer, start: RunStart) -> None:
        """Have the run created in the background, in the batch with the first data logged to it.

        Starting a run then does no I/O on the caller's thread. The writer is woken to write it
        at once, or, for a run an autologged fit started, when the fit returns (at most a
        second later: see :class:`_TrainingCalls`), so that a process killed right after is
        still found CRASHED. Reads through :class:`~mltrail.core.client.Client` flush first,
        and what goes to the store directly by run id takes it from ``Client.store_for``.
        """
        self._unwritten_starts.add(start.run_id)
        buf.start = start
        training_calls.defer(self.wake)

    def ensure_written(self, run_id: str) -> None:
        """Write the run now if it was started here and is not in the store yet."""
        if run_id in self._unwritten_starts:
            self.flush()

    def is_unwritten(self, run_id: str) -> bool:
        """Whether the run was started in this process and waits for the writer."""
        return run_id in self._unwritten_starts

    def end_run(self, store: Store, run_id: str, status: str, end_time: int) -> bool:
        """Write what was logged to a run, then its end, as the run's last batch.

        From here on ``log_*`` to the run raise. Its buffer is drained into one batch with the
        end, queued after anything already held, and flushed once: while the store is
        unavailable the batch is held and retried, and this returns False once
        ``flush_timeout`` has passed instead of raising into the training script. A run whose
        end is never written reads as CRASHED when its heartbeat deadline passes.
        """
        key = (id(store), run_id)
        buf = self._buffers.get(key)
        if buf is not None:
            buf.closed = True
            with self._registry_lock:
                self._buffers.pop(key, None)
        with self._io_lock:
            batch = WriteBatch()
            if buf is not None:
                buf.drain_into(batch)
            batch.run_ends[run_id] = (status, end_time)
            self._retain(store, batch)
        done = self.flush()
        if buf is not None and buf.pending():
            # A log_* call that passed its check just before ``closed`` was set.
            with self._io_lock:
                late = WriteBatch()
                buf.drain_into(late)
                self._retain(store, late)
            done = self.flush()
        return done

    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and not self._stop_event.is_set():
            return
        if self._pid != os.getpid():
            self._after_fork()
        # Import what the writer thread needs here, on the caller's thread: a fork that lands
        # while another thread is importing a module leaves the child that module's import
        # lock held forever.
        import numpy  # noqa: F401

        import mltrail.core.store.sql  # noqa: F401

        with self._registry_lock:
            thread = self._thread
            if thread is not None and thread.is_alive() and not self._stop_event.is_set():
                return
            self._stop_event = stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(stop,), name="mltrail-writer", daemon=True
            )
            self._thread.start()
        _register_exit_flush()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ the thread
    def _run(self, stop: threading.Event) -> None:
        interval = self.config.flush_interval
        poll = min(_POLL, interval)
        last = time.monotonic()
        while not stop.is_set():
            woken = self._wake.wait(poll)
            self._wake.clear()
            if stop.is_set():
                break
            training_calls.run_overdue()
            started = time.monotonic()
            # Fixed rate: a slow write does not stretch what a SIGKILL can lose.
            if not woken and started - last < interval and self._check_backlog() < _DRAIN_AT:
                continue
            last = started
            try:
                with self._io_lock:
                    self._cycle(force=False)
            except Exception:  # noqa: BLE001 - the writer thread must never die
                _log.exception("mltrail writer cycle failed")

    def _check_backlog(self) -> int:
        """Throttle every buffer that holds ``_THROTTLE_AT`` points; return the points waiting."""
        total = 0
        for buf in list(self._buffers.values()):
            n = buf.pending_points()
            if n >= _THROTTLE_AT:
                buf.throttled = True
            total += n
        return total

    def _cycle(self, *, force: bool = True) -> bool:
        """Drain every buffer and write; return True when nothing is left unwritten.

        Draining happens every cycle, so held data is always in compact numpy form and counted
        against the memory bound; writing a failing store is retried with a backoff unless
        ``force`` (a flush) asks for an attempt now.
        """
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
        for store, batch in by_store.values():
            if batch:
                self._retain(store, batch)
        if not self._retained:
            self._update_overload()
            return True
        if not force and now < self._next_attempt:
            return False
        done = self._write_retained()
        self._check_backlog()  # a loop that outran this cycle is throttled until the next
        return done

    def _retain(self, store: Store, batch: WriteBatch) -> None:
        if self._retained and self._retained[-1][0] is store and not self._retained[-1][1].attempted:
            # The store is failing: fold new data into the last held batch (order kept). Never
            # into one a write was tried with: that write may have landed (a connection lost
            # during COMMIT), and its retry is then skipped by the batch's token.
            _fold(self._retained[-1][1], batch)
        else:
            self._retained.append((store, batch))
        self._enforce_bound()

    def _held(self) -> int:
        return sum(b.point_count() for _, b in self._retained)

    def _enforce_bound(self) -> None:
        """Drop the newest held points beyond ``max_pending_points``, counting them per run."""
        excess = self._held() - self.config.max_pending_points
        if excess <= 0:
            return
        for _, batch in reversed(self._retained):
            while excess > 0 and batch.metrics:
                chunk = batch.metrics[-1]
                n = len(chunk.values)
                cut = min(n, excess)
                if cut == n:
                    batch.metrics.pop()
                else:
                    keep = n - cut
                    batch.metrics[-1] = MetricChunk(
                        chunk.run_id,
                        chunk.key,
                        chunk.steps[:keep],
                        chunk.timestamps[:keep],
                        chunk.values[:keep],
                    )
                self._count_dropped(batch, chunk.run_id, cut)
                excess -= cut
            if excess <= 0:
                break
        self.warn_dropped()

    def _count_dropped(self, batch: WriteBatch, run_id: str, n: int) -> None:
        """Record ``n`` lost points of ``run_id`` in ``batch``: the counter and the run's tag."""
        batch.dropped[run_id] = batch.dropped.get(run_id, 0) + n
        total = self._dropped_total[run_id] = self._dropped_total.get(run_id, 0) + n
        batch.tags[:] = [t for t in batch.tags if t[:2] != (run_id, DROPPED_TAG)]
        _set_tag(batch, run_id, DROPPED_TAG, str(total))

    def _write_retained(self) -> bool:
        while self._retained:
            store, batch = self._retained[0]
            try:
                store.write_batch(batch)
            except Exception as exc:  # noqa: BLE001 - held and retried; never raised into training
                batch.attempted = True
                self._store_failed(store, exc)
                self._backoff = min(max(self._backoff * 2, self.config.flush_interval), _MAX_BACKOFF)
                self._next_attempt = time.monotonic() + self._backoff
                self._update_overload()
                return False
            self._retained.pop(0)
            for start in batch.run_starts:
                self._unwritten_starts.discard(start.run_id)
            self._backoff = 0.0
            self._next_attempt = 0.0
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
        held = self._held()
        if not self._warned_store:
            self._warned_store = True
            _warn(
                f"mltrail could not write to the store at {store.uri} ({type(exc).__name__}: {exc}); "
                f"holding {held} points in memory and retrying. Training is not affected.",
                StoreUnavailableWarning,
                stacklevel=2,
            )
        _log.debug("store write failed; %d points held", held, exc_info=True)

    def _update_overload(self) -> None:
        self.overloaded = self._held() >= self.config.max_pending_points

    def warn_dropped(self) -> None:
        if not self._warned_dropped:
            self._warned_dropped = True
            _warn(
                "mltrail is holding its limit of unwritten points "
                f"(MLTRAIL_MAX_PENDING_POINTS={self.config.max_pending_points}) because the store "
                "cannot be written; newer points are being dropped and counted (tag "
                f"{DROPPED_TAG} on the run)",
                DataLossWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ flushing
    def flush(self, timeout: float | None = None) -> bool:
        """Write everything logged so far; return False if the store stayed unavailable."""
        if self._pid != os.getpid():
            self._after_fork()
        deadline = time.monotonic() + (self.config.flush_timeout if timeout is None else timeout)
        if self._deadline is not None:
            deadline = min(deadline, self._deadline)
        delay = 0.05
        while True:
            try:
                with self._io_lock:
                    done = self._cycle(force=True)
            except Exception:  # noqa: BLE001 - flush must not raise into training
                _log.exception("mltrail flush failed")
                done = False
            if self.deferred is not None:
                callback, self.deferred = self.deferred, None
                callback()
            if done:
                return True
            now = time.monotonic()
            if now >= deadline:
                _log.warning(
                    "mltrail: flush gave up waiting for the store; %d points still held", self._held()
                )
                return False
            time.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 2, 1.0)

    def has_pending(self) -> bool:
        return bool(self._retained) or any(b.pending() for b in list(self._buffers.values()))

    def limit_flushing(self, seconds: float) -> None:
        """From now on, every flush gives up ``seconds`` from now at the latest (exit paths)."""
        self._deadline = time.monotonic() + seconds

    def shutdown(self, timeout: float | None = None) -> None:
        self.flush(timeout)
        self._stop_event.set()
        self._wake.set()

    def _after_fork(self) -> None:
        """Start the child with nothing of the parent's: no thread, no buffered data, new locks."""
        self._pid = os.getpid()
        self._io_lock = threading.RLock()
        self._registry_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop_event = threading.Event()
        self._thread = None
        self._retained = []
        self._overloaded = False
        self._warned_store = False
        self._dropped_total = {}
        self._next_attempt = 0.0
        self._backoff = 0.0
        self._deadline = None
        self.deferred = None
        for buf in self._buffers.values():
            buf.reset_after_fork()


_writer: Writer | None = None
_writer_lock = threading.Lock()
_flush_hooks: list[Any] = []


def register_flush_hook(hook: Any) -> None:
    """Have every flush that a user asks for call ``hook()`` first (idempotent).

    For integrations with background work of their own: the hook blocks until the work queued
    so far has been handed to the writer. ``mltrail.flush()`` and the reads of
    :class:`~mltrail.core.client.Client` (``get_run``, ``search_runs``, ...) run the hooks, so
    what a user reads after an autologged call includes what that call logged. A hook may
    raise (strict autolog mode does).
    """
    if hook not in _flush_hooks:
        _flush_hooks.append(hook)


def run_flush_hooks() -> None:
    for hook in list(_flush_hooks):
        hook()


class _TrainingCalls:
    """How many training calls (an autologged ``fit``) are running now, in any thread.

    Waking a thread of ours in the middle of a millisecond-long ``fit`` costs that ``fit`` more
    than the woken work itself: the thread takes a core from the framework's own threads (a
    BLAS worker spinning on the other core) and the GIL from the ``fit``. So what a run's
    start would wake (the writer, to write the run; the environment capture) is deferred with
    :meth:`defer` until the last training call returns. The writer runs what has waited longer
    than :data:`_DEFER_LIMIT` seconds, so that a training call of hours does not hold a run's
    start back for hours.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._deferred: list[tuple[float, Callable[[], None]]] = []

    @property
    def running(self) -> int:
        return self._count

    def enter(self) -> None:
        with self._lock:
            self._count += 1

    def leave(self) -> None:
        with self._lock:
            self._count = max(0, self._count - 1)
            if self._count or not self._deferred:
                return
            due, self._deferred = self._deferred, []
        _run_deferred(due)

    def defer(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` now if no training call runs, else when the last one returns."""
        with self._lock:
            if self._count:
                self._deferred.append((time.monotonic(), fn))
                return
        fn()

    def run_overdue(self) -> None:
        """Run what has waited longer than the limit (from the writer's thread)."""
        if not self._deferred:
            return
        limit = time.monotonic() - _DEFER_LIMIT
        with self._lock:
            due = [d for d in self._deferred if d[0] <= limit]
            if not due:
                return
            self._deferred = [d for d in self._deferred if d[0] > limit]
        _run_deferred(due)

    def reset_after_fork(self) -> None:
        self.__init__()  # type: ignore[misc]  # the calls running in the parent are not the child's


def _run_deferred(due: list[tuple[float, Callable[[], None]]]) -> None:
    for _, fn in due:
        try:
            fn()
        except Exception:  # noqa: BLE001 - a wake-up must never fail the user's call
            _log.debug("deferred %r failed", fn, exc_info=True)


training_calls = _TrainingCalls()


def get_writer() -> Writer:
    global _writer
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = Writer()
    return _writer


def _flush_at_exit() -> None:
    """Drain what this process logged before it exits (Client-only scripts included)."""
    writer = _writer
    if writer is None:
        return
    try:
        if writer._pid != os.getpid():
            writer._after_fork()  # never write what a parent logged (no register_at_fork)
        writer.shutdown()
    except Exception:  # noqa: BLE001 - never fail interpreter exit
        _log.debug("flush at exit failed", exc_info=True)


_exit_flush_pid: int | None = None


def _register_exit_flush() -> None:
    """In a ``multiprocessing`` child, also drain in its exit finalizers: such a child ends with
    ``os._exit`` after them, so ``atexit`` never runs there (DataLoader workers, Pool workers)."""
    global _exit_flush_pid
    pid = os.getpid()
    if _exit_flush_pid == pid:
        return
    _exit_flush_pid = pid
    mp = sys.modules.get("multiprocessing")
    if mp is None:
        return
    try:
        if mp.parent_process() is None:
            return
        from multiprocessing import util

        util.Finalize(None, _flush_at_exit, exitpriority=100)
    except Exception:  # noqa: BLE001 - best effort; the thread still writes every interval
        _log.debug("could not register the multiprocessing exit flush", exc_info=True)


# How long a fork waits for a write in progress to finish.
_FORK_WAIT = 5.0
_fork_tls = threading.local()


def _before_fork() -> None:
    """Hold forks until the writer is between writes (at most ``_FORK_WAIT`` seconds).

    A child must not start from a moment when the writer thread was inside SQLite, libpq or an
    import: the locks held there would stay held in the child forever.
    """
    writer = _writer
    if writer is None or writer._pid != os.getpid():
        return
    lock = writer._io_lock
    if lock.acquire(timeout=_FORK_WAIT):
        _fork_tls.held = lock


def _after_fork_in_parent() -> None:
    lock = getattr(_fork_tls, "held", None)
    if lock is not None:
        _fork_tls.held = None
        lock.release()


def _after_fork_in_child() -> None:
    global _writer_lock
    _fork_tls.held = None  # the child gets new locks instead
    _writer_lock = threading.Lock()
    training_calls.reset_after_fork()
    if _writer is not None:
        _writer._after_fork()


atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
