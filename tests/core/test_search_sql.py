"""Run and experiment searches executed on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from search_fixtures import Db, RunRow, expected_ids, like, open_db

from mltrail.core.errors import SearchSyntaxError
from mltrail.core.search import (
    And,
    Comparison,
    Key,
    Literal,
    Node,
    Or,
    next_page_token,
    parse_filter,
)

NOW = 10_000
NAN = math.nan


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    yield from open_db(request.param, tmp_path_factory)


RUNS = [
    RunRow(
        "run1",
        "alpha",
        user_id="alice",
        status="FINISHED",
        start_time=1000,
        end_time=2000,
        params={"model": "rf", "lr": "0.1", "a.b": "x"},
        tags={"team": "ml", "mltrail.note": "it's"},
        metrics={"acc": (0.9, 0.5, 0.95, 10), "val loss": (0.2, 0.1, 0.4, 3)},
        inputs=[("mnist", "d1", "train")],
    ),
    RunRow(
        "run2",
        "beta",
        user_id="bob",
        status="FAILED",
        start_time=2000,
        end_time=3000,
        params={"model": "xgb", "lr": "0.01"},
        tags={"team": "ds"},
        metrics={"acc": 0.8, "val loss": (0.35, 0.25, 0.5, 2)},
        inputs=[("cifar", "d2", "eval"), ("mnist", "d3", None)],
    ),
    RunRow(
        "run3",
        "cv-1",
        user_id="alice",
        status="RUNNING",
        heartbeat_deadline=100,
        start_time=3000,
        params={"model": "rf"},
        tags={"team": "ML"},
        metrics={"acc": (NAN, 0.7, 0.7, 1), "loss": 5.0},
    ),
    RunRow("run4", "cv-2", user_id="Ünïcode", status="RUNNING", start_time=4000, metrics={"a.b": 1.0}),
    RunRow(
        "run5",
        "gamma%_",
        status="KILLED",
        start_time=1000,
        end_time=1500,
        params={"model": "r%f", "note": "50%_off"},
        metrics={"acc": -1e3},
    ),
    RunRow(
        "run6",
        "delta",
        lifecycle_stage="deleted",
        start_time=5000,
        params={"model": "rf"},
        metrics={"acc": 0.99},
    ),
    RunRow("run7", "other", experiment_id=2, start_time=500, params={"model": "rf"}),
    RunRow(
        "run8",
        "Éclair",
        status="RUNNING",
        heartbeat_deadline=10**12,
        start_time=6000,
        params={"path": "a\\b"},
        tags={"team": "ÉQUIPE"},
    ),
]
NAMES = {r.run_uuid: r.run_name for r in RUNS}
ACTIVE = {"alpha", "beta", "cv-1", "cv-2", "gamma%_", "Éclair"}


@pytest.fixture
def runs(db: Db) -> Db:
    db.load(RUNS)  # the tests using it only read
    return db


FILTERS: list[tuple[str, set[str]]] = [
    ("", ACTIVE),
    ("params.model = 'rf'", {"alpha", "cv-1"}),
    ('params.model = "rf"', {"alpha", "cv-1"}),
    ("params.model != 'rf'", {"beta", "gamma%_"}),
    ("params.model IS NULL", {"cv-2", "Éclair"}),
    ("params.model IS NOT NULL", {"alpha", "beta", "cv-1", "gamma%_"}),
    ("params.model < 'rf'", {"gamma%_"}),  # '%' sorts before 'f'
    ("params.model >= 'rf'", {"alpha", "cv-1", "beta"}),
    ("params.lr = '0.1'", {"alpha"}),
    ("params.\"a.b\" = 'x'", {"alpha"}),
    ("params.`a.b` = 'x'", {"alpha"}),
    ("params.'a.b' = 'x'", {"alpha"}),
    ("params.a.b = 'x'", {"alpha"}),
    ("params.model LIKE 'r%f'", {"alpha", "cv-1", "gamma%_"}),
    ("params.model LIKE 'r\\%f'", {"gamma%_"}),
    ("params.model LIKE 'R%'", set()),
    ("params.model ILIKE 'R%'", {"alpha", "cv-1", "gamma%_"}),
    ("params.note LIKE '50\\%\\_%'", {"gamma%_"}),
    ("params.note LIKE '50_\\_off'", {"gamma%_"}),
    ("params.path = 'a\\b'", {"Éclair"}),
    ("params.path LIKE 'a\\\\b'", {"Éclair"}),
    ("params.path LIKE 'a_b'", {"Éclair"}),
    ("params.model IN ('rf', 'xgb')", {"alpha", "cv-1", "beta"}),
    ("params.model NOT IN ('rf', 'nothing')", {"beta", "gamma%_"}),
    ("metrics.acc > 0.85", {"alpha"}),
    ("metrics.acc >= 0.8", {"alpha", "beta"}),
    ("metrics.acc < 0", {"gamma%_"}),
    ("metrics.acc = 0.9", {"alpha"}),
    ("metrics.acc != 0.9", {"beta", "cv-1", "gamma%_"}),  # NaN != 0.9, as in Python
    ("metrics.acc IN (0.9, 0.8)", {"alpha", "beta"}),
    ("metrics.acc NOT IN (0.9)", {"beta", "cv-1", "gamma%_"}),
    ("metrics.acc IS NULL", {"cv-2", "Éclair"}),  # a NaN metric exists
    ("metrics.acc IS NOT NULL", {"alpha", "beta", "cv-1", "gamma%_"}),
    ("metrics.acc > -1e3", {"alpha", "beta"}),
    ("metrics.acc >= -1E+3", {"alpha", "beta", "gamma%_"}),
    ("metrics.acc > -1000", {"alpha", "beta"}),
    ("metrics.`val loss` < 0.3", {"alpha"}),
    ('metrics."val loss" < 0.3', {"alpha"}),
    ("metrics.a.b = 1", {"cv-2"}),
    ("metrics.loss = 5", {"cv-1"}),
    ("min(metrics.`val loss`) < 0.3", {"alpha", "beta"}),
    ("max(metrics.acc) > 0.9", {"alpha"}),
    ("max(metrics.acc) >= 0.7", {"alpha", "beta", "cv-1"}),
    ("count(metrics.acc) >= 10", {"alpha"}),
    ("count(metrics.acc) = 1", {"beta", "cv-1", "gamma%_"}),
    ("count(metrics.acc) IS NULL", {"cv-2", "Éclair"}),
    ("last(metrics.acc) = 0.8", {"beta"}),
    ("tags.team = 'ml'", {"alpha"}),
    ("tags.team LIKE 'm%'", {"alpha"}),
    ("tags.team LIKE 'M%'", {"cv-1"}),
    ("tags.team ILIKE 'ml'", {"alpha", "cv-1"}),
    ("tags.team ILIKE 'équipe'", set()),  # ILIKE folds ASCII letters only, on both databases
    ("tags.team ILIKE 'Équipe'", {"Éclair"}),
    ("tags.team = 'ml' OR tags.team = 'ds'", {"alpha", "beta"}),
    ("tags.team IN ('ml', 'ds')", {"alpha", "beta"}),
    ("tags.team NOT IN ('ml')", {"beta", "cv-1", "Éclair"}),
    ("tags.`mltrail.note` = 'it''s'", {"alpha"}),
    ('tags.`mltrail.note` = "it\'s"', {"alpha"}),
    ("tags.missing != 'x'", set()),
    ("run_name LIKE 'cv-%'", {"cv-1", "cv-2"}),
    ("attributes.run_name = 'beta'", {"beta"}),
    ("run_name LIKE 'gamma\\%\\_'", {"gamma%_"}),
    ("run_name LIKE 'gamma\\_%'", set()),
    ("run_name LIKE 'gamma_%'", {"gamma%_"}),
    ("run_name ILIKE 'ÉCLAIR'", {"Éclair"}),
    ("run_name = 'Éclair'", {"Éclair"}),
    ("run_name > 'cv-2'", {"gamma%_", "Éclair"}),
    ("status = 'CRASHED'", {"cv-1"}),
    ("status = 'RUNNING'", {"cv-2", "Éclair"}),
    ("attributes.status IN ('FINISHED', 'FAILED')", {"alpha", "beta"}),
    ("status != 'RUNNING'", {"alpha", "beta", "cv-1", "gamma%_"}),
    ("status LIKE '%ED'", {"alpha", "beta", "cv-1", "gamma%_"}),
    ("start_time > 1000", {"beta", "cv-1", "cv-2", "Éclair"}),
    ("start_time = 1000", {"alpha", "gamma%_"}),
    ("created >= 4000", {"cv-2", "Éclair"}),
    ("attributes.start_time IN (1000, 3000)", {"alpha", "gamma%_", "cv-1"}),
    ("start_time < 1500.5", {"alpha", "gamma%_"}),
    ("end_time IS NULL", {"cv-1", "cv-2", "Éclair"}),
    ("end_time < 2500", {"alpha", "gamma%_"}),
    ("end_time != 2000", {"beta", "gamma%_"}),
    ("run_id = 'run2'", {"beta"}),
    ("attributes.run_id IN ('run1', 'run3')", {"alpha", "cv-1"}),
    ("user_id = 'alice'", {"alpha", "cv-1", "gamma%_", "Éclair"}),
    ("user_id = 'Ünïcode'", {"cv-2"}),
    ("artifact_uri LIKE '%/run2/%'", {"beta"}),
    ("datasets.name = 'mnist'", {"alpha", "beta"}),
    ("datasets.digest IN ('d1', 'd2')", {"alpha", "beta"}),
    ("datasets.context = 'eval'", {"beta"}),
    ("datasets.context != 'eval'", {"alpha"}),
    ("datasets.name != 'mnist'", {"beta"}),
    ("datasets.name LIKE 'c%' AND datasets.digest = 'd3'", {"beta"}),
    ("params.model = 'rf' OR params.model = 'xgb' AND metrics.acc > 0.85", {"alpha", "cv-1"}),
    ("(params.model = 'rf' OR params.model = 'xgb') AND metrics.acc > 0.85", {"alpha"}),
    ("params.model = 'rf' and metrics.acc > 0.5", {"alpha"}),
    ("(status = 'CRASHED' OR (tags.team = 'ds' AND end_time > 0)) AND user_id != 'x'", {"cv-1", "beta"}),
]


@pytest.mark.parametrize(("filter_string", "expected"), FILTERS)
def test_filters(runs: Db, filter_string: str, expected: set[str]) -> None:
    ids = runs.search_ids(filter_string, now_ms=NOW)
    assert {NAMES[i] for i in ids} == expected
    # The reference evaluator agrees, so the property-based test below checks the real thing.
    assert set(ids) == set(expected_ids(RUNS, parse_filter(filter_string), now_ms=NOW))


def test_view_type_and_experiments(runs: Db) -> None:
    names = lambda **kw: {NAMES[i] for i in runs.search_ids("", **kw)}  # noqa: E731
    assert names(view_type=2) == {"delta"}
    assert names(view_type=3) == ACTIVE | {"delta"}
    assert names(experiment_ids=[2]) == {"other"}
    assert names(experiment_ids=[1, 2], view_type=3) == set(NAMES.values())
    assert names(experiment_ids=[]) == set()
    assert names(experiment_ids=[99]) == set()


def test_crashed_depends_on_the_clock(runs: Db) -> None:
    assert runs.search_ids("status = 'CRASHED'", now_ms=100) == []
    assert runs.search_ids("status = 'CRASHED'", now_ms=101) == ["run3"]
    assert runs.search_ids("status = 'CRASHED'", now_ms=10**13) == ["run8", "run3"]


ORDERS: list[tuple[list[str] | None, list[str]]] = [
    (None, ["Éclair", "cv-2", "cv-1", "beta", "alpha", "gamma%_"]),
    (["metrics.acc DESC"], ["alpha", "beta", "gamma%_", "Éclair", "cv-2", "cv-1"]),
    (["metrics.acc ASC"], ["gamma%_", "beta", "alpha", "Éclair", "cv-2", "cv-1"]),
    (["metrics.acc"], ["gamma%_", "beta", "alpha", "Éclair", "cv-2", "cv-1"]),
    (["params.model ASC", "metrics.acc DESC"], ["gamma%_", "alpha", "cv-1", "beta", "Éclair", "cv-2"]),
    (["params.model DESC", "metrics.acc ASC"], ["beta", "alpha", "cv-1", "gamma%_", "Éclair", "cv-2"]),
    (["start_time ASC"], ["alpha", "gamma%_", "beta", "cv-1", "cv-2", "Éclair"]),
    (["attributes.start_time DESC"], ["Éclair", "cv-2", "cv-1", "beta", "alpha", "gamma%_"]),
    (["min(metrics.`val loss`) ASC"], ["alpha", "beta", "Éclair", "cv-2", "cv-1", "gamma%_"]),
    (["max(metrics.acc) DESC"], ["alpha", "beta", "cv-1", "gamma%_", "Éclair", "cv-2"]),
    (["count(metrics.acc) DESC", "run_name"], ["alpha", "beta", "cv-1", "gamma%_", "cv-2", "Éclair"]),
    (["status DESC", "end_time"], ["Éclair", "cv-2", "gamma%_", "alpha", "beta", "cv-1"]),
    (["status", "end_time DESC"], ["cv-1", "beta", "alpha", "gamma%_", "Éclair", "cv-2"]),
    (["run_name DESC"], ["Éclair", "gamma%_", "cv-2", "cv-1", "beta", "alpha"]),
    (["tags.team"], ["cv-1", "beta", "alpha", "Éclair", "cv-2", "gamma%_"]),
    (["end_time DESC"], ["beta", "alpha", "gamma%_", "Éclair", "cv-2", "cv-1"]),
]


@pytest.mark.parametrize(("order_by", "expected"), ORDERS)
def test_order_by(runs: Db, order_by: list[str] | None, expected: list[str]) -> None:
    rows = runs.search("", order_by, now_ms=NOW)
    assert [NAMES[row[0]] for row in rows] == expected
    assert expected_ids(RUNS, And(()), order_by, now_ms=NOW) == [row[0] for row in rows]
    assert all(len(row) == 2 + len(order_by or ()) for row in rows)


def test_rows_carry_the_sort_values(runs: Db) -> None:
    rows = runs.search(
        "params.model = 'rf'", ["metrics.acc DESC", "status", "count(metrics.acc)"], now_ms=NOW
    )
    assert rows == [("run1", 0.9, "FINISHED", 10, 1000), ("run3", None, "CRASHED", 1, 3000)]


@pytest.mark.parametrize("order_by", [o for o, _ in ORDERS])
def test_pages_cover_every_run_once(runs: Db, order_by: list[str] | None) -> None:
    everything = runs.search_ids("", order_by, now_ms=NOW)
    for page_size in (1, 2, 3, 5, 6, 7):
        pages = list(runs.search_pages("", order_by, page_size=page_size, now_ms=NOW))
        assert [i for page in pages for i in page] == everything
        assert all(len(page) == page_size for page in pages[:-1])
        assert len(pages) == max(1, math.ceil(6 / page_size))


@pytest.mark.parametrize(
    "order_by", [None, ["metrics.m DESC"], ["params.p", "start_time ASC"], ["tags.t DESC"]]
)
def test_paging_is_stable_while_runs_are_added(db: Db, order_by: list[str] | None) -> None:
    db.reset()

    def make(i: int, prefix: str) -> RunRow:
        return RunRow(
            f"{prefix}{i:03d}",
            start_time=(i * 7) % 5,
            params={"p": f"v{i % 4}"} if i % 3 else {},
            tags={"t": f"t{i % 5}"} if i % 2 else {},
            metrics={"m": float(i % 6) if i % 5 else NAN} if i % 7 else {},
        )

    original = [make(i, "a") for i in range(40)]
    db.insert(original)
    seen: list[str] = []
    for n, page in enumerate(db.search_pages("", order_by, page_size=6)):
        seen += page
        # New runs land everywhere in the order, before and after the cursor.
        db.insert([make(n * 10 + j, f"n{n}-") for j in range(3)])
    assert len(seen) == len(set(seen))
    assert {i for i in seen if i.startswith("a")} == {r.run_uuid for r in original}
    # The original runs come in their order, whatever was added around them.
    assert [i for i in seen if i.startswith("a")] == expected_ids(original, And(()), order_by)


def test_experiment_search(db: Db) -> None:
    db.reset()
    db.executemany(
        "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
        "creation_time, last_update_time) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (3, "cv-run", "a", "active", 5, 50),
            (4, "Prod", "a", "active", 5, 10),
            (5, "gone", "a", "deleted", 7, 7),
            (6, "it's", "a", "active", 3, 60),
        ],
    )
    db.executemany(
        "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?)",
        [(3, "team", "ml"), (4, "team", "ds"), (6, "a.b", "x")],
    )

    def ids(filter_string: str = "", order_by: list[str] | None = None, **kw: Any) -> list[int]:
        return [row[0] for row in db.search_experiments(filter_string, order_by, **kw)]

    assert ids() == [3, 4, 6, 2, 1]  # creation_time DESC, then experiment_id ASC
    assert ids(view_type=2) == [5]
    assert ids(view_type=3) == [5, 3, 4, 6, 2, 1]
    assert ids("name = 'Prod'") == [4]
    assert ids("attributes.name LIKE 'p%'") == []
    assert ids("name ILIKE 'p%'") == [4]
    assert ids('name = "it\'s"') == [6]
    assert ids("tags.team = 'ml' OR tags.team = 'ds'") == [3, 4]
    assert ids("tags.`a.b` = 'x'") == [6]
    assert ids("tags.team IS NULL") == [6, 2, 1]
    assert ids("creation_time = 5 AND last_update_time > 20") == [3]
    assert ids("", ["name"]) == [4, 3, 6, 1, 2]
    assert ids("", ["last_update_time DESC"]) == [6, 3, 4, 2, 1]
    assert ids("", ["experiment_id DESC"]) == [6, 4, 3, 2, 1]
    assert ids("", ["creation_time", "name DESC"]) == [1, 2, 6, 3, 4]
    for order_by in (None, ["name"], ["creation_time", "name DESC"]):
        seen, token = [], None
        while True:
            rows = db.search_experiments("", order_by, max_results=2, page_token=token)
            seen += [row[0] for row in rows[:2]]
            if len(rows) <= 2:
                break
            token = next_page_token(rows[1], order_by)
        assert seen == ids("", order_by)


# ---------------------------------------------------------------------------------------------
# Hostile input: it matches literally or is refused, and never reaches the SQL text.

HOSTILE = [
    "'; DROP TABLE runs; --",
    '"; DROP TABLE runs; --',
    "`; DROP TABLE runs; --",
    "' OR '1'='1",
    '" OR "1"="1',
    "` OR 1=1 --",
    "%",
    "_",
    "%%",
    "\\",
    "\\%",
    "a\\",
    "?",
    "%s",
    "$1",
    ":name",
    "--",
    "/*",
    "*/",
    ";",
    "ü日本語🚀",
    "\u202e\u0301",
    "[*]",
    "*",
    ")",
    "(",
    ",",
    " ",
    "NULL",
    "AND",
    "1=1",
    "''",
    "\0",
    "a\0b",
    "",
]


def _q(text: str, quote: str = "'") -> str:
    return quote + text.replace(quote, quote * 2) + quote


def test_hostile_strings(db: Db) -> None:
    db.reset()
    stored = [s for s in HOSTILE if s and "\0" not in s]
    runs = [
        RunRow(f"h{i:02d}", s, params={s: s}, tags={"t": s}, metrics={s: float(i)}, start_time=i)
        for i, s in enumerate(stored)
    ]
    db.insert(runs)
    before = db.counts()

    def attempt(
        filter_string: str = "", order_by: list[str] | None = None, page_token: str | None = None
    ) -> None:
        try:
            got = db.search_ids(filter_string, order_by, page_token=page_token)
        except SearchSyntaxError:
            return
        assert got == expected_ids(runs, parse_filter(filter_string), order_by)

    for i, s in enumerate(HOSTILE):
        valid = "\0" not in s
        for quote in ("'", '"'):
            literal = [
                f"tags.t = {_q(s, quote)}",
                f"run_name IN ({_q(s, quote)}, 'zz')",
                f"tags.t LIKE {_q(s, quote)}",
                f"tags.t ILIKE {_q(s, quote)}",
                f"params.{_q(s, quote)} != 'zz'",
                f"params.{_q(s, '`')} = {_q(s, quote)}",
                f"metrics.{_q(s, '`')} >= 0",
            ]
            for text in literal:
                empty_key = s == "" and ("params." in text or "metrics." in text)
                if not valid or empty_key:
                    with pytest.raises(SearchSyntaxError):
                        db.search_ids(text)
                    continue
                got = db.search_ids(text)
                assert got == expected_ids(runs, parse_filter(text)), text
        if valid and s:
            assert db.search_ids(f"tags.t = {_q(s)}") == [r.run_uuid for r in runs if r.tags["t"] == s]
            expected_like = [r.run_uuid for r in reversed(runs) if like(s, r.tags["t"])]
            assert db.search_ids(f"tags.t LIKE {_q(s)}") == expected_like
        # Raw, unquoted, at every position of the grammar.
        for text in (
            f"{s} = 'x'",
            f"params.{s} = 'x'",
            f"tags.t {s} 'x'",
            f"tags.t = {s}",
            f"tags.t = 'x' {s}",
            f"({s})",
            f"tags.t IN ({s})",
            f"{s}(metrics.m) > 1",
            s,
        ):
            attempt(text)
        for order_by in ([s], [f"params.{_q(s, '`')} DESC"], [f"tags.t {s}"], [f"{s}(metrics.x)"]):
            attempt("", order_by)
        if s:
            with pytest.raises(SearchSyntaxError):
                db.search_ids("", page_token=s)
        with pytest.raises(SearchSyntaxError):
            db.search_ids("", page_token=next_page_token([s, i], None)[:-2] + s)
    assert db.counts() == before
    assert db.search_ids("", max_results=1000, view_type=3) == [r.run_uuid for r in reversed(runs)]


# ---------------------------------------------------------------------------------------------
# Property: SQL on either database returns what the reference evaluator computes.

P_KEYS = ["a", "b.c", "d e"]
T_KEYS = ["t", "u-v"]
M_KEYS = ["m", "n.o"]
STRINGS = ["", "x", "X", "xy", "a%b", "a_b", "é", "É", "Z", "x'y", "10", "9"]
PATTERNS = ["%", "x%", "%b", "a\\%b", "a_b", "_", "X%", "é%", "É%", "%y", "\\_"]
FLOATS = [0.0, 1.0, -1.0, 0.5, 2.5, 1e10, -1e-5, NAN, NAN, NAN, math.inf, -math.inf]
NUMBERS = [0, 1, -1, 0.5, 2.5, 1e10, 3, -1e-5]

text_values = st.sampled_from(STRINGS)


def _optional(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values)


_metric = st.tuples(
    st.sampled_from(FLOATS), st.sampled_from(FLOATS), st.sampled_from(FLOATS), st.integers(1, 4)
)
_input = st.tuples(
    st.sampled_from(["mnist", "cifar"]),
    st.sampled_from(["d1", "d2"]),
    st.sampled_from([None, "train", "eval"]),
)
# One run as a flat tuple: few, cheap draws keep generation fast.
_run = st.tuples(
    st.sampled_from(["r", "cv-1", "CV-2", "é", "x"]),
    st.sampled_from(["RUNNING", "FINISHED", "FAILED"]),
    st.sampled_from([None, 50, 500]),
    st.sampled_from([0, 10, 20]),
    st.sampled_from([None, 5, 15]),
    st.sampled_from(["active", "active", "active", "deleted"]),
    st.tuples(*[_optional(text_values)] * len(P_KEYS)),
    st.tuples(*[_optional(text_values)] * len(T_KEYS)),
    st.tuples(*[_optional(_metric)] * len(M_KEYS)),
    st.tuples(_optional(_input), _optional(_input)),
)


def _build_runs(specs: list[tuple[Any, ...]]) -> list[RunRow]:
    runs = []
    for i, (name, status, deadline, start, end, stage, params, tags, metrics, inputs) in enumerate(specs):
        unique_inputs = {(x[0], x[1]): x for x in inputs if x is not None}
        runs.append(
            RunRow(
                f"r{i}",
                run_name=name,
                status=status,
                heartbeat_deadline=deadline,
                start_time=start,
                end_time=end,
                lifecycle_stage=stage,
                params={k: v for k, v in zip(P_KEYS, params, strict=True) if v is not None},
                tags={k: v for k, v in zip(T_KEYS, tags, strict=True) if v is not None},
                metrics={k: v for k, v in zip(M_KEYS, metrics, strict=True) if v is not None},
                inputs=list(unique_inputs.values()),
            )
        )
    return runs


def run_rows() -> st.SearchStrategy[list[RunRow]]:
    return st.lists(_run, min_size=1, max_size=6).map(_build_runs)


def _render_key(key: Key, style: int) -> str:
    prefix = {
        "metric": "metrics",
        "param": "params",
        "tag": "tags",
        "attribute": "attributes",
        "dataset": "datasets",
    }[key.entity]
    if style == 0 and " " not in key.name:
        text = f"{prefix}.{key.name}"
    else:
        text = f"{prefix}." + (_q(key.name, "`") if style < 2 else _q(key.name, '"'))
    return f"{key.aggregate}({text})" if key.aggregate else text


def _render_value(value: object, style: int) -> str:
    if isinstance(value, str):
        return _q(value, "'" if style % 2 else '"')
    return repr(value)


@st.composite
def comparisons(draw: st.DrawFn) -> tuple[Comparison, str]:
    kind = draw(
        st.sampled_from(["param", "tag", "metric", "metric", "status", "run_name", "time", "dataset"])
    )
    string_ops = ["=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"]
    number_ops = ["=", "!=", "<", "<=", ">", ">=", "IN", "NOT IN", "IS NULL", "IS NOT NULL"]
    values: st.SearchStrategy[Any] = text_values
    if kind in ("param", "tag"):
        keys = P_KEYS if kind == "param" else T_KEYS
        key = Key(kind, draw(st.sampled_from(keys)))
        ops = string_ops
    elif kind == "metric":
        agg = draw(st.sampled_from([None, "min", "max", "last", "count"]))
        key = Key("metric", draw(st.sampled_from(M_KEYS)), agg)
        ops, values = number_ops, st.sampled_from(NUMBERS)
    elif kind == "status":
        key = Key("attribute", "status")
        ops = ["=", "!=", "IN", "NOT IN", "LIKE"]
        values = st.sampled_from(["RUNNING", "CRASHED", "FINISHED", "FAILED", "%ED"])
    elif kind == "run_name":
        key = Key("attribute", "run_name")
        ops = string_ops
        values = st.sampled_from(["r", "cv-1", "CV-2", "é", "cv%", "x", "C%", "_"])
    elif kind == "time":
        key = Key("attribute", draw(st.sampled_from(["start_time", "end_time"])))
        ops, values = number_ops, st.sampled_from([0, 5, 10, 15, 20, 12.5])
    else:
        key = Key("dataset", draw(st.sampled_from(["name", "digest", "context"])))
        ops = ["=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"]
        values = st.sampled_from(["mnist", "cifar", "d1", "d2", "train", "eval", "%n%", "D%"])
    op = draw(st.sampled_from(ops))
    if op in ("LIKE", "ILIKE") and kind in ("param", "tag", "run_name"):
        values = st.sampled_from(PATTERNS)
    style = draw(st.integers(0, 3))
    key_text = _render_key(key, style)
    if kind in ("status", "run_name", "time") and style % 2:
        key_text = key.name  # bare attribute names
    if op in ("IS NULL", "IS NOT NULL"):
        return Comparison(key, op, None), f"{key_text} {op}"
    if op in ("IN", "NOT IN"):
        items = draw(st.lists(values, min_size=1, max_size=3))
        rendered = ", ".join(_render_value(v, style) for v in items)
        return (Comparison(key, op, tuple(Literal(v) for v in items)), f"{key_text} {op} ({rendered})")
    value = draw(values)
    return Comparison(key, op, Literal(value)), f"{key_text} {op} {_render_value(value, style)}"


def _combine(children: st.SearchStrategy[tuple[Node, str]]) -> st.SearchStrategy[tuple[Node, str]]:
    def build(kind: str, items: list[tuple[Node, str]]) -> tuple[Node, str]:
        node = (And if kind == "AND" else Or)(tuple(n for n, _ in items))
        return node, "(" + f" {kind} ".join(text for _, text in items) + ")"

    return st.builds(build, st.sampled_from(["AND", "OR"]), st.lists(children, min_size=2, max_size=3))


filters = st.recursive(comparisons(), _combine, max_leaves=5)
order_keys = st.sampled_from(
    [
        "metrics.m",
        "min(metrics.m)",
        "count(metrics.`n.o`)",
        "params.a",
        "params.`d e`",
        "tags.t",
        "start_time",
        "end_time",
        "status",
        "run_name",
        "max(metrics.n.o)",
    ]
)
order_bys = st.one_of(
    st.none(),
    st.lists(st.tuples(order_keys, st.sampled_from(["", " ASC", " DESC"])).map("".join), max_size=3),
)


def _strip(node: Node) -> Node:
    """Flatten nested And/Or the way the parser does, for comparing trees."""
    if isinstance(node, Comparison):
        return node
    flat: list[Node] = []
    for op in node.operands:
        op = _strip(op)
        flat.extend(op.operands if type(op) is type(node) else [op])  # type: ignore[union-attr]
    return type(node)(tuple(flat))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    runs=run_rows(),
    trees=st.lists(filters, min_size=1, max_size=4),
    order_by=order_bys,
    view_type=st.sampled_from([1, 1, 2, 3]),
    page_size=st.integers(1, 4),
)
def test_sql_agrees_with_the_reference(
    db: Db,
    runs: list[RunRow],
    trees: list[tuple[Node, str]],
    order_by: list[str] | None,
    view_type: int,
    page_size: int,
) -> None:
    db.reset()
    db.insert(runs)
    # Several filters per set of runs: inserting is what costs, querying is cheap.
    for node, text in trees:
        assert _strip(parse_filter(text)) == _strip(node)
        expected = expected_ids(runs, node, order_by, view_type=view_type, now_ms=100)
        assert db.search_ids(text, order_by, view_type=view_type, now_ms=100) == expected, text
    node, text = trees[0]
    expected = expected_ids(runs, node, order_by, view_type=view_type, now_ms=100)
    pages = db.search_pages(text, order_by, page_size=page_size, view_type=view_type, now_ms=100)
    assert [i for page in pages for i in page] == expected
