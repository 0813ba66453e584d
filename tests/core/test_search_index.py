"""Searches that walk the first order key's index: the schema migration that adds the indexes,
the order of runs with and without the key, paging across that boundary, and that a top-N
search does not read every run."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import pytest
from search_fixtures import PG_ADMIN_DSN, Db, RunRow, expected_ids, open_db, run_search

from mltrail.core.search import next_page_token, parse_filter
from mltrail.core.store.schema import MIGRATIONS
from mltrail.core.store.sql import SqlStore

NAN = math.nan


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    yield from open_db(request.param, tmp_path_factory)


# --------------------------------------------------------------------------------------------
# Migration


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_store_at_schema_1_migrates_and_searches_by_index(
    dialect: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: os.PathLike[str]
) -> None:
    for old in open_db(dialect, tmp_path_factory, migrations=1):
        old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        old.execute("INSERT INTO schema_version (version) VALUES (1)")
        old.reset()
        runs = [
            RunRow("a", start_time=1, metrics={"acc": 0.5}, params={"p": "b"}, tags={"t": "x"}),
            RunRow("b", start_time=2, metrics={"acc": 0.9}, params={"p": "a"}),
            RunRow("c", start_time=3, metrics={"acc": NAN}),
            RunRow("d", start_time=4),
        ]
        old.insert(runs)
        assert _index_names(old) == set()
        if dialect == "sqlite":
            location = uri = old.query("PRAGMA database_list")[0][2]
        else:
            name = old.query("SELECT current_database()")[0][0]
            location = uri = f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
        store = SqlStore(uri, dialect, location, str(tmp_path))
        try:
            assert old.query("SELECT version FROM schema_version") == [(len(MIGRATIONS),)]
            assert _index_names(old) == {
                "latest_metrics_key_value",
                "latest_metrics_key_min",
                "latest_metrics_key_max",
                "params_key_value",
                "tags_key_value",
                "write_tokens_written_at",  # migration 3
            }
            # The runs written before the migration are found, in index order, the runs
            # without a value (NaN, missing) last.
            page = store.search_runs(["1"], "", 1, 3, ["metrics.acc DESC"], None)
            assert [r.info.run_id for r in page.items] == ["b", "a", "d"]
            rest = store.search_runs(["1"], "", 1, 3, ["metrics.acc DESC"], page.token)
            assert [r.info.run_id for r in rest.items] == ["c"] and rest.token is None
            assert math.isnan(rest.items[0].data.metrics["acc"])
            page = store.search_runs(["1"], "tags.t = 'x' OR params.p = 'a'", 1, 10, ["params.p"], None)
            assert [r.info.run_id for r in page.items] == ["b", "a"]
            # Opening it again changes nothing.
            SqlStore(uri, dialect, location, str(tmp_path)).close()
            assert old.query("SELECT version FROM schema_version") == [(len(MIGRATIONS),)]
        finally:
            store.close()


def _index_names(db: Db) -> set[str]:
    if db.dialect == "sqlite":
        rows = db.query("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'")
    else:
        rows = db.query("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
    old = {"runs_experiment", "runs_resume_key", "metric_chunks_series"}
    return {r[0] for r in rows if not r[0].endswith("_pkey") and not r[0].endswith("_key")} - old


# --------------------------------------------------------------------------------------------
# Order and paging when the first key drives the search

RUNS = [
    # Ties on params.p and on metrics.m; NaN (stored as NULL) and missing values of each key.
    RunRow("r01", start_time=5, params={"p": "b"}, tags={"t": "x"}, metrics={"m": (1.0, 0.5, 2.0, 3)}),
    RunRow("r02", start_time=5, params={"p": "b"}, metrics={"m": (1.0, NAN, NAN, 1)}),
    RunRow("r03", start_time=7, params={"p": "a"}, tags={"t": "y"}, metrics={"m": NAN}),
    RunRow("r04", start_time=2, tags={"t": "x"}, metrics={"m": -3.0}),
    RunRow("r05", start_time=9, params={"p": "a"}, end_time=20),
    RunRow("r06", start_time=1, params={"p": "é"}, metrics={"m": (4.0, -1.0, 4.0, 2)}, end_time=3),
    RunRow("r07", start_time=6, tags={"t": ""}, metrics={"m": 1.0}, end_time=30),
    RunRow("r08", start_time=8),
    # Not searched: another experiment and a deleted run, holding the best values of each key.
    RunRow("o01", experiment_id=2, start_time=3, params={"p": "0"}, tags={"t": "0"}, metrics={"m": 99.0}),
    RunRow("o02", lifecycle_stage="deleted", params={"p": "0"}, tags={"t": "0"}, metrics={"m": 99.0}),
]

ORDERS = [
    ["metrics.m DESC"],
    ["metrics.m ASC"],
    ["min(metrics.m)"],
    ["max(metrics.m) DESC"],
    ["count(metrics.m) DESC", "tags.t"],
    ["params.p", "metrics.m DESC"],
    ["params.p DESC", "tags.t DESC"],
    ["tags.t", "params.p DESC", "start_time"],
    ["end_time DESC"],
    ["end_time", "metrics.m"],
    ["metrics.m", "params.p", "tags.t"],
]


@pytest.mark.parametrize("order_by", ORDERS, ids=[", ".join(o) for o in ORDERS])
@pytest.mark.parametrize("filter_string", ["", "tags.t != 'y' OR params.p = 'a'", "metrics.m IS NULL"])
def test_order_and_pages_match_the_reference(db: Db, order_by: list[str], filter_string: str) -> None:
    db.load(RUNS)
    expected = expected_ids(RUNS, parse_filter(filter_string), order_by)
    assert db.search_ids(filter_string, order_by) == expected
    assert not {"o01", "o02"} & set(expected)
    for page_size in (1, 2, 3, 4, len(expected), len(expected) + 1):
        pages = list(db.search_pages(filter_string, order_by, page_size=page_size))
        assert [i for page in pages for i in page] == expected, page_size


def test_missing_values_come_last_in_both_directions(db: Db) -> None:
    db.load(RUNS)
    down = db.search_ids("", ["metrics.m DESC"])
    up = db.search_ids("", ["metrics.m ASC"])
    # NaN and missing rank alike, after every number, broken by start_time DESC then id.
    assert down == ["r06", "r07", "r01", "r02", "r04", "r05", "r08", "r03"]
    assert up == ["r04", "r07", "r01", "r02", "r06", "r05", "r08", "r03"]
    assert db.search_ids("", ["params.p"])[-3:] == ["r08", "r07", "r04"]


def test_paging_from_the_runs_without_the_key_while_runs_are_added(db: Db) -> None:
    db.reset()
    db.insert([RunRow(f"a{i}", start_time=i, metrics={"m": float(i)} if i % 2 else {}) for i in range(10)])
    rows = db.search("", ["metrics.m DESC"], max_results=6)
    assert [r[0] for r in rows[:6]] == ["a9", "a7", "a5", "a3", "a1", "a8"]
    token = next_page_token(rows[5], ["metrics.m DESC"])
    # Runs added now: with the key (they rank before the page: not shown) and without it
    # (start_time before a8's: after it, so shown; after it: not shown).
    db.insert(
        [
            RunRow("b1", start_time=100, metrics={"m": 0.5}),
            RunRow("b2", start_time=3),
            RunRow("b3", start_time=50),
        ]
    )
    rest = db.search("", ["metrics.m DESC"], max_results=10, page_token=token)
    assert [r[0] for r in rest] == ["a6", "a4", "b2", "a2", "a0"]


# --------------------------------------------------------------------------------------------
# Work done: a top-N search reads about N runs, not all of them (SQLite; counted, not timed)


def _vm_steps(db: Db, filter_string: str, order_by: list[str], page: int = 10) -> int:
    query = run_search(filter_string, order_by, max_results=page)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    db.conn.set_progress_handler(count, 100)
    try:
        rows = db.query(query.sql, query.params)
    finally:
        db.conn.set_progress_handler(None, 100)
    assert len(rows) == page + 1
    return steps[0]


TOP_N_CASES = [
    ("params.p = 'x'", ["metrics.m DESC"], "latest_metrics_key_value"),
    ("params.p = 'y' AND metrics.m < 2", ["min(metrics.m)"], "latest_metrics_key_min"),
    ("", ["max(metrics.m) DESC", "params.p"], "latest_metrics_key_max"),
    ("tags.t = 'x' AND metrics.m < 0.9", ["params.q", "metrics.m DESC"], "params_key_value"),
    ("params.p = 'x'", ["tags.u DESC"], "tags_key_value"),
    ("params.p = 'x'", ["start_time DESC"], "runs_experiment"),
]


def test_a_top_n_search_reads_a_page_not_every_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    def runs(n: int, offset: int) -> list[RunRow]:
        return [
            RunRow(
                f"r{offset + i:06d}",
                start_time=offset + i,
                params={"p": "xy"[i % 2], "q": f"{(offset + i) * 7919 % 100_000:05d}"},
                tags={"t": "xyz"[i % 3], "u": f"{(offset + i) * 104_729 % 100_000:05d}"},
                metrics={"m": ((offset + i) * 7919 % 1000) / 1000},
            )
            for i in range(n)
        ]

    for db in open_db("sqlite", tmp_path_factory):
        db.reset()
        for filter_string, order_by, index in TOP_N_CASES:
            query = run_search(filter_string, order_by)
            plan = " / ".join(row[-1] for row in db.query("EXPLAIN QUERY PLAN " + query.sql, query.params))
            assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
        db.insert(runs(500, 0))
        small = [_vm_steps(db, f, o) for f, o, _ in TOP_N_CASES]
        db.insert(runs(3500, 500))
        large = [_vm_steps(db, f, o) for f, o, _ in TOP_N_CASES]
        everything = runs(500, 0) + runs(3500, 500)
        for (filter_string, order_by, _), before, after in zip(TOP_N_CASES, small, large, strict=True):
            # Eight times the runs: a search that read them all would do about eight times the work.
            assert after < 2 * before, (filter_string, order_by, before, after)
            top = db.search_ids(filter_string, order_by, max_results=10)[:10]
            assert top == expected_ids(everything, parse_filter(filter_string), order_by)[:10]
