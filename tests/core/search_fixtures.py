"""Helpers for the search tests: a schema on SQLite or PostgreSQL, runs to insert, and a
reference evaluator that says in plain Python what a search should return."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mltrail.core.search import (
    And,
    Comparison,
    Node,
    OrderKey,
    compile_experiment_search,
    compile_run_search,
    next_page_token,
    parse_order_by,
)
from mltrail.core.store.schema import MIGRATIONS, render

PG_ADMIN_DSN = os.environ.get("MLTRAIL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class RunRow:
    """A run as the tests write it; ``metrics`` maps key -> value or (last, min, max, count)."""

    run_uuid: str
    run_name: str = "run"
    experiment_id: int = 1
    user_id: str = "alice"
    status: str = "FINISHED"
    start_time: int = 0
    end_time: int | None = None
    heartbeat_deadline: int | None = None
    lifecycle_stage: str = "active"
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    inputs: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def artifact_uri(self) -> str:
        return f"file:///artifacts/{self.run_uuid}/files"

    def metric(self, key: str) -> tuple[float, float, float, int] | None:
        value = self.metrics.get(key)
        if value is None:
            return None
        if isinstance(value, tuple):
            return value
        return (value, value, value, 1)


class Db:
    """A connection to a database holding the mltrail schema, SQLite or PostgreSQL."""

    def __init__(self, dialect: str, conn: Any) -> None:
        self.dialect = dialect
        self.conn = conn
        self.holding: Sequence[RunRow] | None = None

    def load(self, runs: Sequence[RunRow]) -> None:
        """Hold exactly ``runs``; a no-op when the last load was these and nothing changed since."""
        if self.holding is not runs:
            self.reset()
            self.insert(runs)
            self.holding = runs

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.conn.execute(self._sql(sql), tuple(params)).fetchall()]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the statements inside as one transaction (one fsync, not one per statement)."""
        if self.dialect == "postgresql":
            with self.conn.transaction():
                yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def reset(self) -> None:
        """Empty every table and create experiments 1 and 2."""
        self.holding = None
        with self.transaction():
            self._reset()

    def _reset(self) -> None:
        tables = [
            "inputs",
            "datasets",
            "latest_metrics",
            "metric_chunks",
            "tags",
            "params",
            "runs",
            "experiment_tags",
            "experiments",
        ]
        for table in tables:  # DELETE beats TRUNCATE on tables this small
            self.execute(f"DELETE FROM {table}")
        self.executemany(
            "INSERT INTO experiments (experiment_id, name, artifact_location, creation_time, "
            "last_update_time) VALUES (?, ?, ?, ?, ?)",
            [(1, "one", "file:///a/1", 1, 1), (2, "two", "file:///a/2", 2, 2)],
        )

    def insert(self, runs: Sequence[RunRow]) -> None:
        """Insert the runs with their params, tags, metrics and dataset inputs."""
        self.holding = None
        with self.transaction():
            self._insert(runs)

    def _insert(self, runs: Sequence[RunRow]) -> None:
        self.executemany(
            "INSERT INTO runs (run_uuid, experiment_id, run_name, user_id, status, start_time, "
            "end_time, heartbeat_deadline, lifecycle_stage, artifact_uri) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.run_uuid,
                    r.experiment_id,
                    r.run_name,
                    r.user_id,
                    r.status,
                    r.start_time,
                    r.end_time,
                    r.heartbeat_deadline,
                    r.lifecycle_stage,
                    r.artifact_uri,
                )
                for r in runs
            ],
        )
        for table, attr in (("params", "params"), ("tags", "tags")):
            self.executemany(
                f"INSERT INTO {table} (run_uuid, key, value) VALUES (?, ?, ?)",
                [(r.run_uuid, k, v) for r in runs for k, v in getattr(r, attr).items()],
            )
        rows = []
        for r in runs:
            for key in r.metrics:
                last, low, high, count = r.metric(key)  # type: ignore[misc]
                rows.append((r.run_uuid, key, _null_nan(last), 0, 0, _null_nan(low), _null_nan(high), count))
        self.executemany(
            "INSERT INTO latest_metrics (run_uuid, key, value, step, timestamp, min_value, "
            "max_value, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        known = {row[0] for row in self.query("SELECT dataset_uuid FROM datasets")}
        datasets, inputs = [], []
        for r in runs:
            for name, digest, context in r.inputs:
                ds = f"ds-{r.experiment_id}-{name}-{digest}"
                if ds not in known:
                    known.add(ds)
                    datasets.append((ds, r.experiment_id, name, digest, "local", "file:///d"))
                inputs.append((r.run_uuid, ds, context))
        self.executemany(
            "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, source_type, "
            "source) VALUES (?, ?, ?, ?, ?, ?)",
            datasets,
        )
        self.executemany("INSERT INTO inputs (run_uuid, dataset_uuid, context) VALUES (?, ?, ?)", inputs)

    def search(
        self,
        filter_string: str = "",
        order_by: Sequence[str] | None = None,
        *,
        experiment_ids: Sequence[int] = (1,),
        view_type: int = 1,
        max_results: int = 1000,
        page_token: str | None = None,
        now_ms: int = 0,
    ) -> list[tuple[Any, ...]]:
        query = compile_run_search(
            experiment_ids=experiment_ids,
            filter_string=filter_string,
            order_by=order_by,
            view_type=view_type,
            max_results=max_results,
            page_token=page_token,
            now_ms=now_ms,
            dialect=self.dialect,
        )
        return self.query(query.sql, query.params)

    def search_ids(
        self, filter_string: str = "", order_by: Sequence[str] | None = None, **kwargs: Any
    ) -> list[str]:
        return [row[0] for row in self.search(filter_string, order_by, **kwargs)]

    def search_pages(
        self, filter_string: str = "", order_by: Sequence[str] | None = None, *, page_size: int, **kwargs: Any
    ) -> Iterator[list[str]]:
        """Yield the run ids of each page in turn."""
        token = None
        while True:
            rows = self.search(filter_string, order_by, max_results=page_size, page_token=token, **kwargs)
            assert len(rows) <= page_size + 1
            page = rows[:page_size]
            yield [row[0] for row in page]
            if len(rows) <= page_size:
                return
            token = next_page_token(page[-1], order_by)

    def search_experiments(
        self,
        filter_string: str = "",
        order_by: Sequence[str] | None = None,
        *,
        view_type: int = 1,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> list[tuple[Any, ...]]:
        query = compile_experiment_search(
            filter_string=filter_string,
            order_by=order_by,
            view_type=view_type,
            max_results=max_results,
            page_token=page_token,
            dialect=self.dialect,
        )
        return self.query(query.sql, query.params)

    def counts(self) -> dict[str, int]:
        tables = ["experiments", "runs", "params", "tags", "latest_metrics", "datasets", "inputs"]
        return {t: self.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables}


def _null_nan(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def _statements(migrations: int | None) -> Iterator[str | tuple[str, str]]:
    for migration in MIGRATIONS[:migrations]:
        yield from migration


def _sqlite(directory: Path, migrations: int | None = None) -> Iterator[Db]:
    conn = sqlite3.connect(directory / "search.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = OFF")  # a scratch database: no fsync per commit
    for stmt in _statements(migrations):
        sql = render(stmt, "sqlite")
        if sql is not None:  # None: a statement for another dialect
            conn.execute(sql)
    try:
        yield Db("sqlite", conn)
    finally:
        conn.close()


def _postgresql(migrations: int | None = None) -> Iterator[Db]:
    # The same server, variables and rules as tests/conftest.py: skip visibly when no server
    # answers, fail instead under CI or MLTRAIL_REQUIRE_POSTGRES=1.
    required = (
        os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("MLTRAIL_REQUIRE_POSTGRES") == "1"
    )
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure means: no server here
        if required:
            pytest.fail(f"PostgreSQL is required but did not answer at {PG_ADMIN_DSN}: {exc}")
        pytest.skip(f"no PostgreSQL server answers at {PG_ADMIN_DSN}: {exc}")
    name = f"mltrail_test_{uuid.uuid4().hex[:16]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = psycopg.connect(PG_ADMIN_DSN, dbname=name, autocommit=True, connect_timeout=5)
        try:
            for stmt in _statements(migrations):
                sql = render(stmt, "postgresql")
                if sql is not None:
                    conn.execute(sql)
            yield Db("postgresql", conn)
        finally:
            conn.close()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def open_db(
    dialect: str, tmp_path_factory: pytest.TempPathFactory, migrations: int | None = None
) -> Iterator[Db]:
    """Yield a database of the given dialect holding the schema; module-scoped use.

    ``migrations``: apply only the first this many (default: all), for testing an upgrade.
    """
    if dialect == "sqlite":
        yield from _sqlite(tmp_path_factory.mktemp("search"), migrations)
    else:
        yield from _postgresql(migrations)


# ---------------------------------------------------------------------------------------------
# The reference: what a search returns, by the rules of the grammar's documentation.

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def like(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """``text LIKE pattern``: % any run, _ one character, backslash escapes the next."""
    if ignore_case:
        pattern, text = pattern.translate(_ASCII_LOWER), text.translate(_ASCII_LOWER)
    regex, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            regex.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        regex.append("(?s:.*)" if c == "%" else "(?s:.)" if c == "_" else re.escape(c))
        i += 1
    return re.fullmatch("".join(regex), text) is not None


def status_of(run: RunRow, now_ms: int) -> str:
    crashed = (
        run.status == "RUNNING" and run.heartbeat_deadline is not None and run.heartbeat_deadline < now_ms
    )
    return "CRASHED" if crashed else run.status


_ATTRIBUTE_ALIASES = {"run_uuid": "run_id", "created": "start_time", "run name": "run_name"}


def attribute_of(run: RunRow, name: str, now_ms: int) -> Any:
    name = _ATTRIBUTE_ALIASES.get(name.lower(), name.lower())
    if name == "status":
        return status_of(run, now_ms)
    if name == "run_id":
        return run.run_uuid
    return getattr(run, name)


def _compare(value: Any, op: str, operand: Any) -> bool:
    if op == "=":
        return bool(value == operand)
    if op == "!=":
        return bool(value != operand)
    if op == "<":
        return bool(value < operand)
    if op == "<=":
        return bool(value <= operand)
    if op == ">":
        return bool(value > operand)
    if op == ">=":
        return bool(value >= operand)
    if op == "IN":
        return any(value == x for x in operand)
    if op == "NOT IN":
        return not any(value == x for x in operand)
    if op == "LIKE":
        return like(operand, value)
    if op == "ILIKE":
        return like(operand, value, ignore_case=True)
    raise AssertionError(op)


def matches(node: Node, run: RunRow, now_ms: int = 0) -> bool:
    """Evaluate a filter AST on a run, in plain Python."""
    if isinstance(node, And):
        return all(matches(n, run, now_ms) for n in node.operands)
    if not isinstance(node, Comparison):
        return any(matches(n, run, now_ms) for n in node.operands)
    key, op = node.key, node.op
    if isinstance(node.value, tuple):
        operand: Any = [lit.value for lit in node.value]
    else:
        operand = None if node.value is None else node.value.value
    if key.entity == "dataset":
        index = {"name": 0, "digest": 1, "context": 2}[key.name.lower()]
        return any(i[index] is not None and _compare(i[index], op, operand) for i in run.inputs)
    if key.entity == "metric":
        summary = run.metric(key.name)
        if op in ("IS NULL", "IS NOT NULL"):
            return (summary is None) == (op == "IS NULL")
        if summary is None:
            return False
        index = {None: 0, "last": 0, "min": 1, "max": 2, "count": 3}[key.aggregate]
        return _compare(summary[index], op, operand)  # NaN compares as Python says
    if key.entity == "attribute":
        value = attribute_of(run, key.name, now_ms)
    else:
        value = (run.params if key.entity == "param" else run.tags).get(key.name)
    if op in ("IS NULL", "IS NOT NULL"):
        return (value is None) == (op == "IS NULL")
    return value is not None and _compare(value, op, operand)


def sort_value(run: RunRow, order: OrderKey, now_ms: int) -> Any:
    key = order.key
    if key.entity == "attribute":
        return attribute_of(run, key.name, now_ms)
    if key.entity == "metric":
        summary = run.metric(key.name)
        if summary is None:
            return None
        value = summary[{None: 0, "last": 0, "min": 1, "max": 2, "count": 3}[key.aggregate]]
        return None if isinstance(value, float) and math.isnan(value) else value
    return (run.params if key.entity == "param" else run.tags).get(key.name)


def expected_ids(
    runs: Sequence[RunRow],
    node: Node,
    order_by: Sequence[str] | None = None,
    *,
    experiment_ids: Sequence[int] = (1,),
    view_type: int = 1,
    now_ms: int = 0,
) -> list[str]:
    """The run ids a search should return, in order."""
    stages = {1: ("active",), 2: ("deleted",), 3: ("active", "deleted")}[view_type]
    kept = [
        r
        for r in runs
        if r.experiment_id in experiment_ids and r.lifecycle_stage in stages and matches(node, r, now_ms)
    ]
    orders = parse_order_by(order_by)

    def compare(a: RunRow, b: RunRow) -> int:
        for order in orders:
            x, y = sort_value(a, order, now_ms), sort_value(b, order, now_ms)
            if (x is None and y is None) or x == y:
                continue
            if x is None:
                return 1  # missing values last, in either direction
            if y is None:
                return -1
            return (-1 if x < y else 1) * (1 if order.ascending else -1)
        if a.start_time != b.start_time:
            return -1 if a.start_time > b.start_time else 1
        return -1 if a.run_uuid < b.run_uuid else (1 if a.run_uuid > b.run_uuid else 0)

    return [r.run_uuid for r in sorted(kept, key=functools.cmp_to_key(compare))]


def run_search(filter_string: str = "", order_by: list[str] | None = None, **kw: object) -> Any:
    """``compile_run_search`` for experiment 1 on SQLite, top 10, any argument overridable."""
    args = dict(
        experiment_ids=[1],
        filter_string=filter_string,
        order_by=order_by,
        view_type=1,
        max_results=10,
        page_token=None,
        now_ms=0,
        dialect="sqlite",
    )
    args.update(kw)
    return compile_run_search(**args)  # type: ignore[arg-type]
