"""The SQL store: the embedded SQLite default and PostgreSQL, one schema, one code path.

Statements are written once with ``?`` placeholders; :class:`_Connection` rewrites them to
``%s`` for psycopg. Each thread (and each process, after a fork) opens its own connection,
because neither sqlite3 nor psycopg connections may be shared across a fork, and sqlite3's
may not be shared across threads without serialising every reader behind the writer.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mltrail.core.entities import (
    Dataset,
    DatasetInput,
    Experiment,
    LifecycleStage,
    MetricHistory,
    MetricSummary,
    Run,
    RunData,
    RunInfo,
    RunInputs,
)
from mltrail.core.errors import (
    ExperimentExistsError,
    ExperimentNotFoundError,
    MltrailError,
    RunNotFoundError,
    StoreError,
)
from mltrail.core.store.base import PagedList, RunStart, Store, WriteBatch
from mltrail.core.store.schema import MIGRATIONS, SCHEMA_VERSION_TABLE, render

_log = logging.getLogger("mltrail.store")

DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"
# A series' trailing chunks smaller than this are merged once enough of them pile up, so that a
# metric logged one point per flush still reads back from few rows (1,000,000 points logged one
# per flush end up in about 250 rows).
COMPACT_TARGET_POINTS = 4_096
_IN_CHUNK = 500  # ids per IN (...) list when loading many runs


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _status_expr(alias: str = "") -> str:
    """SQL for a run's status, reading a stale heartbeat as CRASHED."""
    p = f"{alias}." if alias else ""
    return (
        f"CASE WHEN {p}status = 'RUNNING' AND {p}heartbeat_deadline IS NOT NULL "
        f"AND {p}heartbeat_deadline < ? THEN 'CRASHED' ELSE {p}status END"
    )


class _Connection:
    """A DB-API connection with ``?`` placeholders and explicit transactions on both dialects."""

    def __init__(self, raw: Any, dialect: str, reopen: Callable[[], Any] | None = None) -> None:
        self.raw = raw
        self.dialect = dialect
        self.pid = os.getpid()
        self._sql_cache: dict[str, str] = {}
        self._reopen = reopen
        self._depth = 0  # open transactions

    def _sql(self, sql: str) -> str:
        if self.dialect == "sqlite":
            return sql
        cached = self._sql_cache.get(sql)
        if cached is None:
            cached = self._sql_cache[sql] = sql.replace("?", "%s")
        return cached

    def execute(self, sql: str, params: Sequence[Any] = (), *, binary: bool = False) -> Any:
        try:
            cur = self.raw.cursor(binary=True) if binary else self.raw.cursor()
            cur.execute(self._sql(sql), tuple(params))
        except Exception:
            if not self._may_reopen():
                raise
            # Outside a transaction every statement here is a read (writes always run in one):
            # a session that the server dropped (restart, failover) is replaced and the read
            # runs again, once.
            _log.debug("PostgreSQL connection lost; reconnecting", exc_info=True)
            old, self.raw = self.raw, self._reopen()  # type: ignore[misc]
            try:
                old.close()
            except Exception:  # noqa: BLE001 - it is dead already
                pass
            cur = self.raw.cursor(binary=True) if binary else self.raw.cursor()
            cur.execute(self._sql(sql), tuple(params))
        return cur

    def _may_reopen(self) -> bool:
        if self._reopen is None or self._depth:
            return False
        return bool(getattr(self.raw, "broken", False) or getattr(self.raw, "closed", False))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        cur = self.raw.cursor()
        cur.executemany(self._sql(sql), rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.execute(sql, params).fetchall())

    def query_binary(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Like :meth:`query`, asking PostgreSQL for binary results (bytea without hex)."""
        if self.dialect == "sqlite":
            return self.query(sql, params)
        return list(self.execute(sql, params, binary=True).fetchall())

    @contextmanager
    def transaction(self) -> Iterator[_Connection]:
        self._depth += 1
        try:
            with self._transaction():
                yield self
        finally:
            self._depth -= 1

    @contextmanager
    def _transaction(self) -> Iterator[_Connection]:
        if self.dialect == "sqlite":
            # IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
            # instead of one failing on a lock upgrade.
            self.raw.execute("BEGIN IMMEDIATE")
            try:
                yield self
                self.raw.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (disk full, I/O error); a failing ROLLBACK
                # must not hide the error that caused it. The caller discards the connection.
                if self.raw.in_transaction:
                    try:
                        self.raw.execute("ROLLBACK")
                    except Exception:  # noqa: BLE001 - reported through the original error
                        _log.debug("rollback failed", exc_info=True)
                raise
        else:
            with self.raw.transaction():
                yield self

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:  # noqa: BLE001 - closing a dead connection is not an error
            pass


def _is_transient(exc: BaseException) -> bool:
    """Whether trying again soon may succeed: a busy SQLite file, a lost or refused PostgreSQL
    connection (server restarting: AdminShutdown and friends), a serialization failure."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "locked" in text or "busy" in text
    if isinstance(exc, StoreError) and exc.__cause__ is not None:
        return _is_transient(exc.__cause__)  # could not connect: the server may be starting
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        # OperationalError covers the connection-level failures and, via
        # TransactionRollbackError, serialization failures and deadlocks.
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
    return False


def _is_lock_wait(exc: BaseException) -> bool:
    """A busy SQLite file: the connection itself is fine, only another writer is in the way."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "locked" in text or "busy" in text
    return False


# A forked child must not close what it inherited: psycopg would end the parent's session and
# SQLite may release the parent's locks. Inherited connections are kept here, unused, instead.
_INHERITED: list[_Connection] = []
_STORES: weakref.WeakSet[SqlStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Give every store fresh locks: the parent's writer may have held one at the fork."""
    for store in list(_STORES):
        store._all_lock = threading.Lock()
        _INHERITED.extend(store._all)
        store._all = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class SqlStore(Store):
    """A store on SQLite (``dialect="sqlite"``, ``location`` a file path) or PostgreSQL."""

    def __init__(self, uri: str, dialect: str, location: str, artifact_root: str) -> None:
        self.uri = uri
        self.dialect = dialect
        self.location = location
        self.artifact_root = artifact_root
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._all_lock = threading.Lock()
        self._next_token_sweep = 0  # ms; see _first_write_of
        # Active experiments a run was started in -> artifact location (see prepare_run).
        self._active_experiments: dict[int, str] = {}
        _STORES.add(self)
        self._migrate()

    # ------------------------------------------------------------------ connections
    def _connect(self) -> _Connection:
        raw: Any
        if self.dialect == "sqlite":
            raw = sqlite3.connect(
                self.location, timeout=60.0, isolation_level=None, check_same_thread=False
            )
            try:
                raw.execute("PRAGMA busy_timeout=60000")
                raw.execute("PRAGMA journal_mode=WAL")
                raw.execute("PRAGMA synchronous=NORMAL")
                raw.execute("PRAGMA foreign_keys=ON")
            except BaseException:
                raw.close()  # e.g. "database is locked" while another process sets up WAL
                raise
            return _Connection(raw, "sqlite")
        return _Connection(self._connect_postgres(), "postgresql", reopen=self._connect_postgres)

    def _connect_postgres(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.location, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            msg = f"cannot connect to PostgreSQL at {_redact(self.uri)}: {exc}"
            raise StoreError(msg) from exc

    @property
    def conn(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid():
            conn = self._connect()
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _reset_connection(self) -> None:
        """Drop this thread's connection; the next use opens a new one."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            if conn.pid == os.getpid():
                conn.close()
                with self._all_lock:
                    if conn in self._all:
                        self._all.remove(conn)

    def _retry(self, fn: Any, attempts: int = 20) -> Any:
        """Run ``fn(conn)``, retrying what a busy SQLite file or a dropped connection causes.

        After any failure other than waiting for another writer's lock the thread's connection
        is replaced: a PostgreSQL connection that lived through a server restart is dead, a
        SQLite connection opened while the file was read-only stays read-only, and one that hit
        a full disk or an I/O error may be left inside a transaction.
        """
        delay = 0.01
        for attempt in range(attempts):
            try:
                return fn(self.conn)
            except MltrailError as exc:
                if not _is_transient(exc) or attempt == attempts - 1:
                    raise
            except Exception as exc:
                if not _is_lock_wait(exc):
                    self._reset_connection()
                if not _is_transient(exc) or attempt == attempts - 1:
                    raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                if conn.pid == os.getpid():
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    # ------------------------------------------------------------------ schema
    def _schema_is_current(self) -> bool:
        """Whether the schema and the Default experiment exist already (read-only check)."""
        try:
            rows = self.conn.query(f"SELECT version FROM {SCHEMA_VERSION_TABLE}")
            if not rows or rows[0][0] != len(MIGRATIONS):
                return False
            return bool(self.conn.query("SELECT 1 FROM experiments WHERE experiment_id = 0"))
        except Exception:  # noqa: BLE001 - no schema yet (or not readable): migrate decides
            self._reset_connection()
            return False

    def _migrate(self) -> None:
        # Opening an up-to-date store takes no write lock: many processes starting at once do
        # not queue on it, and a store that is read-only for now can still be opened.
        if self._schema_is_current():
            return

        def run(conn: _Connection) -> None:
            with conn.transaction():
                if self.dialect == "postgresql":
                    # One migrator at a time across processes.
                    conn.execute("SELECT pg_advisory_xact_lock(7426110)")
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION_TABLE} (version INTEGER NOT NULL)"
                )
                rows = conn.query(f"SELECT version FROM {SCHEMA_VERSION_TABLE}")
                current = rows[0][0] if rows else 0
                if current > len(MIGRATIONS):
                    msg = (
                        f"the store at {_redact(self.uri)} has schema version {current}, newer than "
                        f"this mltrail understands ({len(MIGRATIONS)}); upgrade mltrail"
                    )
                    raise StoreError(msg)
                for statements in MIGRATIONS[current:]:
                    for statement in statements:
                        sql = render(statement, self.dialect)
                        if sql is not None:
                            conn.execute(sql)
                if not rows:
                    conn.execute(
                        f"INSERT INTO {SCHEMA_VERSION_TABLE} (version) VALUES (?)", (len(MIGRATIONS),)
                    )
                elif current < len(MIGRATIONS):
                    conn.execute(f"UPDATE {SCHEMA_VERSION_TABLE} SET version = ?", (len(MIGRATIONS),))
                t = now_ms()
                conn.execute(
                    "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage,"
                    " creation_time, last_update_time) VALUES (?, ?, ?, 'active', ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (0, DEFAULT_EXPERIMENT_NAME, _join(self.artifact_root, "0"), t, t),
                )

        self._retry(run)

    # ------------------------------------------------------------------ experiments
    def create_experiment(
        self, name: str, artifact_location: str | None, tags: dict[str, str] | None
    ) -> str:
        def run(conn: _Connection) -> str:
            with conn.transaction():
                if conn.query("SELECT 1 FROM experiments WHERE name = ?", (name,)):
                    msg = f"an experiment named {name!r} exists already"
                    raise ExperimentExistsError(msg)
                t = now_ms()
                cur = conn.execute(
                    "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time,"
                    " last_update_time) VALUES (?, ?, 'active', ?, ?) RETURNING experiment_id",
                    (name, artifact_location or "", t, t),
                )
                exp_id = str(cur.fetchone()[0])
                if not artifact_location:
                    conn.execute(
                        "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                        (_join(self.artifact_root, exp_id), int(exp_id)),
                    )
                conn.executemany(
                    "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?)",
                    [(int(exp_id), k, v) for k, v in (tags or {}).items()],
                )
                return exp_id

        result: str = self._retry(run)
        return result

    def _experiments(self, where: str, params: Sequence[Any]) -> list[Experiment]:
        conn = self.conn
        rows = conn.query(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time,"
            f" last_update_time FROM experiments WHERE {where}",
            params,
        )
        out = []
        for row in rows:
            tags = dict(
                conn.query("SELECT key, value FROM experiment_tags WHERE experiment_id = ?", (row[0],))
            )
            out.append(
                Experiment(
                    experiment_id=str(row[0]),
                    name=row[1],
                    artifact_location=row[2],
                    lifecycle_stage=row[3],
                    tags=tags,
                    creation_time=row[4],
                    last_update_time=row[5],
                )
            )
        return out

    def get_experiment(self, experiment_id: str) -> Experiment:
        found = self._experiments("experiment_id = ?", (_exp_int(experiment_id),))
        if not found:
            msg = f"no experiment with id {experiment_id!r}"
            raise ExperimentNotFoundError(msg)
        return found[0]

    def get_experiment_by_name(self, name: str) -> Experiment | None:
        found = self._experiments("name = ?", (name,))
        return found[0] if found else None

    def search_experiments(
        self,
        view_type: int,
        filter_string: str,
        order_by: Sequence[str] | None,
        max_results: int,
        page_token: str | None,
    ) -> PagedList:
        from mltrail.core import search

        query = search.compile_experiment_search(
            filter_string=filter_string,
            order_by=order_by,
            view_type=view_type,
            max_results=max_results,
            page_token=page_token,
            dialect=self.dialect,
        )
        conn = self.conn
        _tune_for_reads(conn)
        rows = conn.query(query.sql, query.params)
        page = rows[:max_results]
        token = search.next_page_token(page[-1], order_by) if len(rows) > max_results else None
        by_id = {e.experiment_id: e for e in self._experiments_by_ids([r[0] for r in page])}
        return PagedList([by_id[str(r[0])] for r in page], token)

    def _experiments_by_ids(self, ids: Sequence[Any]) -> list[Experiment]:
        out: list[Experiment] = []
        for start in range(0, len(ids), _IN_CHUNK):
            part = [int(i) for i in ids[start : start + _IN_CHUNK]]
            marks = ",".join("?" * len(part))
            out.extend(self._experiments(f"experiment_id IN ({marks})", part))
        return out

    def set_experiment_lifecycle(self, experiment_id: str, stage: str) -> None:
        self.get_experiment(experiment_id)
        self._active_experiments.pop(_exp_int(experiment_id), None)

        def run(conn: _Connection) -> None:
            with conn.transaction():
                conn.execute(
                    "UPDATE experiments SET lifecycle_stage = ?, last_update_time = ? WHERE experiment_id = ?",
                    (stage, now_ms(), _exp_int(experiment_id)),
                )
                conn.execute(
                    "UPDATE runs SET lifecycle_stage = ? WHERE experiment_id = ?",
                    (stage, _exp_int(experiment_id)),
                )

        self._retry(run)

    def rename_experiment(self, experiment_id: str, new_name: str) -> None:
        self.get_experiment(experiment_id)
        existing = self.get_experiment_by_name(new_name)
        if existing is not None and existing.experiment_id != str(experiment_id):
            msg = f"an experiment named {new_name!r} exists already"
            raise ExperimentExistsError(msg)
        self._active_experiments.pop(_exp_int(experiment_id), None)

        def run(conn: _Connection) -> None:
            with conn.transaction():
                conn.execute(
                    "UPDATE experiments SET name = ?, last_update_time = ? WHERE experiment_id = ?",
                    (new_name, now_ms(), _exp_int(experiment_id)),
                )

        self._retry(run)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.get_experiment(experiment_id)

        def run(conn: _Connection) -> None:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
                    (_exp_int(experiment_id), key, value),
                )

        self._retry(run)

    # ------------------------------------------------------------------ runs
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
        # Read once per experiment and process: a read on a connection whose cache the writer's
        # commits keep invalidating costs a short fit a tenth of a millisecond. An experiment's
        # artifact location never changes; deleting or renaming it through this store forgets
        # it here (one deleted by another process takes runs until this process reads it again).
        key = _exp_int(experiment_id)
        location = self._active_experiments.get(key)
        if location is None:
            row = self.conn.query(
                "SELECT name, artifact_location, lifecycle_stage FROM experiments WHERE experiment_id = ?",
                (key,),
            )
            if not row:
                msg = f"no experiment with id {experiment_id!r}"
                raise ExperimentNotFoundError(msg)
            name, location, stage = row[0]
            if stage != LifecycleStage.ACTIVE:
                from mltrail.core.errors import RunStateError

                msg = f"experiment {name!r} ({experiment_id}) is deleted; restore it before starting runs in it"
                raise RunStateError(msg)
            self._active_experiments[key] = location
        return RunStart(
            run_id=run_id,
            experiment_id=str(experiment_id),
            run_name=run_name,
            user_id=user_id,
            start_time=start_time,
            artifact_uri=_join(location, run_id, "artifacts"),
            parent_run_id=parent_run_id,
            resume_key=resume_key,
            heartbeat_deadline=heartbeat_deadline,
            tags=tuple(tags.items()),
        )

    _RUN_COLUMNS = (
        "run_uuid, experiment_id, run_name, user_id, {status}, start_time, end_time,"
        " artifact_uri, lifecycle_stage"
    )

    def _run_infos(self, run_ids: Sequence[str]) -> dict[str, RunInfo]:
        out: dict[str, RunInfo] = {}
        conn = self.conn
        cols = self._RUN_COLUMNS.format(status=_status_expr())
        for start in range(0, len(run_ids), _IN_CHUNK):
            part = list(run_ids[start : start + _IN_CHUNK])
            marks = ",".join("?" * len(part))
            for row in conn.query(
                f"SELECT {cols} FROM runs WHERE run_uuid IN ({marks})", (now_ms(), *part)
            ):
                out[row[0]] = RunInfo(
                    run_id=row[0],
                    experiment_id=str(row[1]),
                    run_name=row[2],
                    user_id=row[3],
                    status=row[4],
                    start_time=row[5],
                    end_time=row[6],
                    artifact_uri=row[7],
                    lifecycle_stage=row[8],
                )
        return out

    def get_run_info(self, run_id: str) -> RunInfo:
        infos = self._run_infos([run_id])
        if run_id not in infos:
            msg = f"no run with id {run_id!r}"
            raise RunNotFoundError(msg)
        return infos[run_id]

    def get_run(self, run_id: str) -> Run:
        runs = self._load_runs([run_id])
        if not runs:
            msg = f"no run with id {run_id!r}"
            raise RunNotFoundError(msg)
        return runs[0]

    def _load_runs(self, run_ids: Sequence[str]) -> list[Run]:
        """Load whole runs (info, params, latest metrics, tags, inputs) in a few queries."""
        infos = self._run_infos(run_ids)
        ids = [r for r in run_ids if r in infos]
        params: dict[str, dict[str, str]] = {r: {} for r in ids}
        tags: dict[str, dict[str, str]] = {r: {} for r in ids}
        metrics: dict[str, dict[str, float]] = {r: {} for r in ids}
        summaries: dict[str, dict[str, MetricSummary]] = {r: {} for r in ids}
        inputs: dict[str, list[DatasetInput]] = {r: [] for r in ids}
        conn = self.conn
        nan = float("nan")
        for start in range(0, len(ids), _IN_CHUNK):
            part = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(part))
            for run_id, key, value in conn.query(
                f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", part
            ):
                params[run_id][key] = value
            for run_id, key, value in conn.query(
                f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", part
            ):
                tags[run_id][key] = value
            for run_id, key, value, step, ts, lo, hi, count in conn.query(
                "SELECT run_uuid, key, value, step, timestamp, min_value, max_value, count"
                f" FROM latest_metrics WHERE run_uuid IN ({marks})",
                part,
            ):
                v = nan if value is None else float(value)
                metrics[run_id][key] = v
                summaries[run_id][key] = MetricSummary(
                    key=key,
                    last=v,
                    step=int(step),
                    timestamp=int(ts),
                    min=nan if lo is None else float(lo),
                    max=nan if hi is None else float(hi),
                    count=int(count),
                )
            for row in conn.query(
                "SELECT i.run_uuid, i.context, d.name, d.digest, d.source_type, d.source,"
                " d.dataset_schema, d.profile FROM inputs i JOIN datasets d"
                f" ON d.dataset_uuid = i.dataset_uuid WHERE i.run_uuid IN ({marks})",
                part,
            ):
                ds = Dataset(
                    name=row[2],
                    digest=row[3],
                    source_type=row[4],
                    source=row[5],
                    schema=row[6],
                    profile=row[7],
                )
                inputs[row[0]].append(
                    DatasetInput(ds, {"mltrail.data.context": row[1]} if row[1] else {})
                )
        return [
            Run(
                info=infos[r],
                data=RunData(
                    metrics=metrics[r], params=params[r], tags=tags[r], metric_summaries=summaries[r]
                ),
                inputs=RunInputs(tuple(inputs[r])),
            )
            for r in ids
        ]

    def find_run_by_resume_key(self, experiment_id: str, resume_key: str) -> RunInfo | None:
        rows = self.conn.query(
            "SELECT run_uuid FROM runs WHERE experiment_id = ? AND resume_key = ?"
            " AND lifecycle_stage = 'active' ORDER BY start_time DESC LIMIT 1",
            (_exp_int(experiment_id), resume_key),
        )
        return self.get_run_info(rows[0][0]) if rows else None

    def update_run(
        self,
        run_id: str,
        *,
        status: str | None = None,
        end_time: int | None = None,
        clear_end_time: bool = False,
        run_name: str | None = None,
        heartbeat_deadline: int | None = None,
    ) -> None:
        sets: list[str] = []
        values: list[Any] = []
        if status is not None:
            sets.append("status = ?")
            values.append(status)
        if end_time is not None:
            sets.append("end_time = ?")
            values.append(end_time)
        if clear_end_time:
            sets.append("end_time = NULL")
        if run_name is not None:
            sets.append("run_name = ?")
            values.append(run_name)
        if heartbeat_deadline is not None or status is not None:
            # A finished run has no heartbeat; a resumed one gets a fresh deadline.
            sets.append("heartbeat_deadline = ?")
            values.append(heartbeat_deadline)
        if not sets:
            return

        def run(conn: _Connection) -> None:
            with conn.transaction():
                cur = conn.execute(
                    f"UPDATE runs SET {', '.join(sets)} WHERE run_uuid = ?", (*values, run_id)
                )
                if cur.rowcount == 0:
                    msg = f"no run with id {run_id!r}"
                    raise RunNotFoundError(msg)

        self._retry(run)

    def set_run_lifecycle(self, run_id: str, stage: str) -> None:
        def run(conn: _Connection) -> None:
            with conn.transaction():
                cur = conn.execute(
                    "UPDATE runs SET lifecycle_stage = ? WHERE run_uuid = ?", (stage, run_id)
                )
                if cur.rowcount == 0:
                    msg = f"no run with id {run_id!r}"
                    raise RunNotFoundError(msg)

        self._retry(run)

    def get_params(self, run_id: str) -> dict[str, str]:
        return dict(self.conn.query("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))

    # ------------------------------------------------------------------ logged data
    def write_batch(self, batch: WriteBatch) -> None:
        if not batch:
            return
        metric_rows, latest_rows = _metric_rows(batch)

        def run(conn: _Connection) -> None:
            with conn.transaction():
                if conn.dialect == "postgresql" and not self._first_write_of(conn, batch):
                    return
                if batch.run_starts:
                    _insert_runs(conn, batch.run_starts)
                conn.executemany(
                    "INSERT INTO params (run_uuid, key, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (run_uuid, key) DO NOTHING",
                    batch.params,
                )
                conn.executemany(
                    "INSERT INTO tags (run_uuid, key, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value",
                    batch.tags,
                )
                conn.executemany(
                    "DELETE FROM tags WHERE run_uuid = ? AND key = ?", batch.deleted_tags
                )
                conn.executemany(
                    "INSERT INTO metric_chunks (run_uuid, key, n, steps, timestamps, vals)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    metric_rows,
                )
                conn.executemany(_LATEST_UPSERT, latest_rows)
                conn.executemany(
                    "UPDATE runs SET heartbeat_deadline = ? WHERE run_uuid = ? AND status = 'RUNNING'",
                    [(deadline, run_id) for run_id, deadline in batch.heartbeats.items()],
                )
                conn.executemany(
                    "UPDATE runs SET dropped_points = dropped_points + ? WHERE run_uuid = ?",
                    [(n, run_id) for run_id, n in batch.dropped.items()],
                )
                conn.executemany(
                    "UPDATE runs SET status = ?, end_time = ?, heartbeat_deadline = NULL"
                    " WHERE run_uuid = ?",
                    [(status, end, run_id) for run_id, (status, end) in batch.run_ends.items()],
                )

        # Few attempts: the writer holds the batch and retries on its own schedule, and a
        # flush() waiting on this should not sit in a long backoff here as well.
        self._retry(run, attempts=3)

    def _first_write_of(self, conn: _Connection, batch: WriteBatch) -> bool:
        """Record ``batch``'s token in the open transaction; False if it was written before.

        A PostgreSQL connection lost while COMMIT was on its way leaves the outcome unknown, and
        the batch is retried (here, and by the writer). The token, committed with the data,
        makes the retry of a batch that did land a no-op instead of a second copy of it.
        Tokens older than a day are cleared now and then.
        """
        now = now_ms()
        if now >= self._next_token_sweep:
            self._next_token_sweep = now + 3_600_000
            conn.execute("DELETE FROM write_tokens WHERE written_at < ?", (now - 86_400_000,))
        cur = conn.execute(
            "INSERT INTO write_tokens (token, written_at) VALUES (?, ?) ON CONFLICT (token) DO NOTHING",
            (batch.token, now),
        )
        return bool(cur.rowcount)

    def compact_series(self, run_id: str, key: str) -> None:
        import numpy as np

        def run(conn: _Connection) -> None:
            with conn.transaction():
                tail: list[int] = []
                for chunk_id, n in conn.query(
                    "SELECT chunk_id, n FROM metric_chunks WHERE run_uuid = ? AND key = ?"
                    " ORDER BY chunk_id DESC",
                    (run_id, key),
                ):
                    if n >= COMPACT_TARGET_POINTS:
                        break
                    tail.append(chunk_id)
                if len(tail) < 2:
                    return
                tail.reverse()
                marks = ",".join("?" * len(tail))
                rows = conn.query_binary(
                    f"SELECT steps, timestamps, vals FROM metric_chunks WHERE chunk_id IN ({marks})"
                    " ORDER BY chunk_id",
                    tail,
                )
                steps = b"".join(bytes(r[0]) for r in rows)
                stamps = b"".join(bytes(r[1]) for r in rows)
                vals = b"".join(bytes(r[2]) for r in rows)
                n_total = len(np.frombuffer(vals, dtype="<f8"))
                conn.execute(
                    "UPDATE metric_chunks SET n = ?, steps = ?, timestamps = ?, vals = ? WHERE chunk_id = ?",
                    (n_total, steps, stamps, vals, tail[0]),
                )
                conn.executemany(
                    "DELETE FROM metric_chunks WHERE chunk_id = ?", [(c,) for c in tail[1:]]
                )

        self._retry(run)

    def get_metric_history(self, run_id: str, key: str) -> MetricHistory:
        import numpy as np

        rows = self.conn.query_binary(
            "SELECT steps, timestamps, vals FROM metric_chunks WHERE run_uuid = ? AND key = ?"
            " ORDER BY chunk_id",
            (run_id, key),
        )
        if not rows:
            self.get_run_info(run_id)  # raises RunNotFoundError for a missing run
            empty_i = np.empty(0, dtype=np.int64)
            return MetricHistory(key, empty_i, empty_i.copy(), np.empty(0, dtype=np.float64))
        if len(rows) == 1:
            steps = np.frombuffer(rows[0][0], dtype="<i8")
            stamps = np.frombuffer(rows[0][1], dtype="<i8")
            values = np.frombuffer(rows[0][2], dtype="<f8")
        else:
            steps = np.frombuffer(b"".join(r[0] for r in rows), dtype="<i8")
            stamps = np.frombuffer(b"".join(r[1] for r in rows), dtype="<i8")
            values = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f8")
        return MetricHistory(key, steps, stamps, values)

    def log_inputs(
        self, run_id: str, experiment_id: str, datasets: Sequence[tuple[Dataset, str | None]]
    ) -> None:
        def run(conn: _Connection) -> None:
            with conn.transaction():
                for ds, context in datasets:
                    found = conn.query(
                        "SELECT dataset_uuid FROM datasets WHERE experiment_id = ? AND name = ? AND digest = ?",
                        (_exp_int(experiment_id), ds.name, ds.digest),
                    )
                    if found:
                        ds_id = found[0][0]
                    else:
                        ds_id = uuid.uuid4().hex
                        conn.execute(
                            "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, source_type,"
                            " source, dataset_schema, profile) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (
                                ds_id,
                                _exp_int(experiment_id),
                                ds.name,
                                ds.digest,
                                ds.source_type,
                                ds.source,
                                ds.schema,
                                ds.profile,
                            ),
                        )
                    conn.execute(
                        "INSERT INTO inputs (run_uuid, dataset_uuid, context) VALUES (?, ?, ?)"
                        " ON CONFLICT (run_uuid, dataset_uuid) DO UPDATE SET context = excluded.context",
                        (run_id, ds_id, context),
                    )

        self._retry(run)

    # ------------------------------------------------------------------ search
    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str,
        view_type: int,
        max_results: int,
        order_by: Sequence[str] | None,
        page_token: str | None,
    ) -> PagedList:
        from mltrail.core import search

        query = search.compile_run_search(
            experiment_ids=[_exp_int(e) for e in experiment_ids],
            filter_string=filter_string,
            order_by=order_by,
            view_type=int(view_type),
            max_results=max_results,
            page_token=page_token,
            now_ms=now_ms(),
            dialect=self.dialect,
        )
        rows = self.conn.query(query.sql, query.params)
        page = rows[:max_results]
        token = search.next_page_token(page[-1], order_by) if len(rows) > max_results else None
        runs = {r.info.run_id: r for r in self._load_runs([row[0] for row in page])}
        return PagedList([runs[row[0]] for row in page if row[0] in runs], token)



# SQLite connections that searched already: their read settings are made.
_READ_TUNED: weakref.WeakSet[_Connection] = weakref.WeakSet()
# Map up to this much of the database file: a search that walks an index reads pages scattered
# over the file, and mapped pages cost a memory access instead of a read() into SQLite's cache.
_MMAP_BYTES = 1 << 30


def _tune_for_reads(conn: _Connection) -> None:
    """Let a SQLite connection that searches read the database file through a memory map.

    Only connections that search get it (the writer's do not), so an I/O error on the file
    while it is mapped can only affect a search. SQLite maps less, or nothing, where the
    platform does not allow as much.
    """
    if conn.dialect != "sqlite" or conn in _READ_TUNED:
        return
    conn.raw.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
    _READ_TUNED.add(conn)


_LATEST_UPSERT = """
INSERT INTO latest_metrics (run_uuid, key, value, step, timestamp, min_value, max_value, count)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_uuid, key) DO UPDATE SET
  value = CASE WHEN excluded.step > latest_metrics.step
                 OR (excluded.step = latest_metrics.step AND excluded.timestamp >= latest_metrics.timestamp)
               THEN excluded.value ELSE latest_metrics.value END,
  timestamp = CASE WHEN excluded.step > latest_metrics.step
                 OR (excluded.step = latest_metrics.step AND excluded.timestamp >= latest_metrics.timestamp)
               THEN excluded.timestamp ELSE latest_metrics.timestamp END,
  step = CASE WHEN excluded.step > latest_metrics.step THEN excluded.step ELSE latest_metrics.step END,
  min_value = CASE WHEN latest_metrics.min_value IS NULL THEN excluded.min_value
                   WHEN excluded.min_value IS NULL THEN latest_metrics.min_value
                   WHEN excluded.min_value < latest_metrics.min_value THEN excluded.min_value
                   ELSE latest_metrics.min_value END,
  max_value = CASE WHEN latest_metrics.max_value IS NULL THEN excluded.max_value
                   WHEN excluded.max_value IS NULL THEN latest_metrics.max_value
                   WHEN excluded.max_value > latest_metrics.max_value THEN excluded.max_value
                   ELSE latest_metrics.max_value END,
  count = latest_metrics.count + excluded.count
"""


def _insert_runs(conn: _Connection, starts: Sequence[RunStart]) -> None:
    # Idempotent: a process forked before its writer wrote a run writes the run's start too
    # (its own points need the row), and whichever process comes second finds it there.
    conn.executemany(
        "INSERT INTO runs (run_uuid, experiment_id, run_name, user_id, status, start_time,"
        " heartbeat_deadline, lifecycle_stage, artifact_uri, parent_run_id, resume_key)"
        " VALUES (?, ?, ?, ?, 'RUNNING', ?, ?, 'active', ?, ?, ?) ON CONFLICT (run_uuid) DO NOTHING",
        [
            (s.run_id, _exp_int(s.experiment_id), s.run_name, s.user_id, s.start_time,
             s.heartbeat_deadline, s.artifact_uri, s.parent_run_id, s.resume_key)
            for s in starts
        ],
    )
    conn.executemany(
        "INSERT INTO tags (run_uuid, key, value) VALUES (?, ?, ?) ON CONFLICT (run_uuid, key) DO NOTHING",
        [(s.run_id, k, v) for s in starts for k, v in s.tags],
    )


def _metric_rows(batch: WriteBatch) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Pack each chunk's columns and compute its latest/min/max contribution."""
    import numpy as np

    chunk_rows = []
    latest_rows = []
    for chunk in batch.metrics:
        steps = np.ascontiguousarray(chunk.steps, dtype="<i8")
        stamps = np.ascontiguousarray(chunk.timestamps, dtype="<i8")
        values = np.ascontiguousarray(chunk.values, dtype="<f8")
        n = len(values)
        if n == 0:
            continue
        chunk_rows.append(
            (chunk.run_id, chunk.key, n, steps.tobytes(), stamps.tobytes(), values.tobytes())
        )
        last = _last_point(steps, stamps)
        finite = values[~np.isnan(values)]
        lo = float(finite.min()) if len(finite) else None
        hi = float(finite.max()) if len(finite) else None
        v = float(values[last])
        latest_rows.append(
            (
                chunk.run_id,
                chunk.key,
                None if v != v else v,
                int(steps[last]),
                int(stamps[last]),
                lo,
                hi,
                n,
            )
        )
    return chunk_rows, latest_rows


def _last_point(steps: Any, stamps: Any) -> int:
    """Index of the point that is a series' latest: highest step, then timestamp, then last
    logged. Linear (a lexsort of a large chunk costs the writer tens of milliseconds)."""
    import numpy as np

    at = np.flatnonzero(steps == steps.max())
    if len(at) > 1:
        at = at[stamps[at] == stamps[at].max()]
    return int(at[-1])


def _exp_int(experiment_id: str | int) -> int:
    try:
        return int(experiment_id)
    except (TypeError, ValueError):
        msg = f"no experiment with id {experiment_id!r}"
        raise ExperimentNotFoundError(msg) from None


def _join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts)


def _redact(uri: str) -> str:
    """Hide a password in a database URI."""
    import re

    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", uri)


def open_sqlite(path: str, artifact_root: str, uri: str) -> SqlStore:
    return SqlStore(uri, "sqlite", path, artifact_root)


def open_postgres(uri: str, artifact_root: str) -> SqlStore:
    location = uri.replace("postgresql+psycopg://", "postgresql://", 1).replace(
        "postgres://", "postgresql://", 1
    )
    return SqlStore(uri, "postgresql", location, artifact_root)

