"""The search grammar without a database: parsing, error positions, compiled parameters."""

from __future__ import annotations

import base64
import json
import math

import pytest
from search_fixtures import run_search

from mltrail.core.errors import InvalidInputError, SearchSyntaxError
from mltrail.core.search import (
    And,
    Comparison,
    Key,
    Literal,
    Or,
    OrderKey,
    compile_experiment_search,
    like_to_regex,
    next_page_token,
    parse_filter,
    parse_order_by,
)


def cmp(entity: str, name: str, op: str, value: object, aggregate: str | None = None) -> Comparison:
    if isinstance(value, tuple):
        lit: object = tuple(Literal(v) for v in value)
    else:
        lit = None if value is None else Literal(value)  # type: ignore[arg-type]
    return Comparison(Key(entity, name, aggregate), op, lit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.acc > 0.9", cmp("metric", "acc", ">", 0.9)),
        ("metric.acc>=1", cmp("metric", "acc", ">=", 1)),
        ("metrics.a.b = 1", cmp("metric", "a.b", "=", 1)),
        ("metrics.`val loss` < 0.3", cmp("metric", "val loss", "<", 0.3)),
        ('metrics."val-loss" <= -1e-3', cmp("metric", "val-loss", "<=", -0.001)),
        ("metrics.val-loss != +2E+3", cmp("metric", "val-loss", "!=", 2000.0)),
        ("metrics.train/loss < .5", cmp("metric", "train/loss", "<", 0.5)),
        ("metrics.x = -7", cmp("metric", "x", "=", -7)),
        ("params.\"a.b\" = 'x'", cmp("param", "a.b", "=", "x")),
        ("params.'a.b' = \"x\"", cmp("param", "a.b", "=", "x")),
        ("parameters.`a``b` = 'it''s'", cmp("param", "a`b", "=", "it's")),
        ('param.lr = "say ""hi"""', cmp("param", "lr", "=", 'say "hi"')),
        ("tags.`mltrail.user` LIKE 'a%'", cmp("tag", "mltrail.user", "LIKE", "a%")),
        ("tags.team ilike 'ML'", cmp("tag", "team", "ILIKE", "ML")),
        ("tag.team IN ('a', \"b\")", cmp("tag", "team", "IN", ("a", "b"))),
        ("tags.team not in ('a')", cmp("tag", "team", "NOT IN", ("a",))),
        ("tags.team IS NULL", cmp("tag", "team", "IS NULL", None)),
        ("tags.team is not null", cmp("tag", "team", "IS NOT NULL", None)),
        ("attributes.status = 'FAILED'", cmp("attribute", "status", "=", "FAILED")),
        ("attr.start_time > 5", cmp("attribute", "start_time", ">", 5)),
        ("run.run_id = 'abc'", cmp("attribute", "run_id", "=", "abc")),
        ("run_name LIKE 'cv-%'", cmp("attribute", "run_name", "LIKE", "cv-%")),
        ("`run name` = 'x'", cmp("attribute", "run name", "=", "x")),
        ("datasets.digest IN ('d1', 'd2')", cmp("dataset", "digest", "IN", ("d1", "d2"))),
        ("min(metrics.val_loss) < 0.3", cmp("metric", "val_loss", "<", 0.3, "min")),
        ("MAX(metrics.`a b`) >= 1", cmp("metric", "a b", ">=", 1, "max")),
        ("count(metrics.x) = 3", cmp("metric", "x", "=", 3, "count")),
        ("last(metrics.x) = 3", cmp("metric", "x", "=", 3, "last")),
        ("params.k = 'ünï 日本'", cmp("param", "k", "=", "ünï 日本")),
        ("params.k = 'a\\b'", cmp("param", "k", "=", "a\\b")),
        ("metrics.x = 99999999999999999999999", cmp("metric", "x", "=", 10**23 - 1)),
    ],
)
def test_parse_comparisons(text: str, expected: Comparison) -> None:
    assert parse_filter(text) == expected


def test_numbers_keep_their_type() -> None:
    node = parse_filter("metrics.x = 5 AND metrics.y = 5.0 AND metrics.z = 1e2")
    assert isinstance(node, And)
    values = [c.value.value for c in node.operands]  # type: ignore[union-attr]
    assert [type(v) for v in values] == [int, float, float]
    assert values == [5, 5.0, 100.0]
    assert math.isinf(parse_filter("metrics.x < 1e999").value.value)  # type: ignore[union-attr]


def test_and_binds_tighter_than_or_and_parentheses_group() -> None:
    a, b, c = (cmp("metric", k, "=", 1) for k in "abc")
    assert parse_filter("metrics.a = 1 OR metrics.b = 1 AND metrics.c = 1") == Or((a, And((b, c))))
    assert parse_filter("(metrics.a = 1 OR metrics.b = 1) AND metrics.c = 1") == And((Or((a, b)), c))
    assert parse_filter("((metrics.a = 1))") == a
    assert parse_filter("metrics.a = 1 and metrics.b = 1 AND metrics.c = 1") == And((a, b, c))


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_filter_matches_everything(text: str) -> None:
    assert parse_filter(text) == And(())


def test_positions_are_recorded() -> None:
    node = parse_filter("  params.a IN ('x', 'y')")
    assert isinstance(node, Comparison)
    assert node.key.position == 2
    assert node.op_position == 11
    assert [lit.position for lit in node.value] == [15, 20]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("metrics.a >", 11, "expected a value"),
        ("metrics.a 5", 10, "expected an operator"),
        ("foo.bar = 1", 0, "unknown entity 'foo'"),
        ("params.a = 'x", 11, "unterminated string"),
        ("metrics.`a = 1", 8, "unterminated backtick"),
        ("(metrics.a > 1", 14, "expected ')'"),
        ("metrics.a > 1)", 13, "expected AND, OR"),
        ("metrics.a > 1 AND", 17, "expected a key"),
        ("metrics.a > 1 AND OR metrics.b = 1", 18, "expected a key"),
        ("metrics.a ! 1", 10, "'!='"),
        ("metrics.a == 1", 11, "expected a value"),
        ("metrics.a = 1 # x", 14, "unexpected character '#'"),
        ("params.a IN ()", 13, "expected a value"),
        ("params.a IN ('x'", 16, "',' or ')'"),
        ("params.a IN ('x' 'y')", 17, "',' or ')'"),
        ("params.a IN 'x'", 12, "'(' after IN"),
        ("params.a NOT LIKE 'x'", 13, "expected IN after NOT"),
        ("params.a IS 'x'", 12, "expected NULL"),
        ("params.a IS NOT 'x'", 16, "expected NULL"),
        ("params.a = NULL", 11, "IS NULL"),
        ("params. = 'x'", 7, "expected a key after 'params.'"),
        ("params. 'a' = 'x'", 7, "expected a key after 'params.'"),
        ("params.\"\" = 'x'", 7, "empty key"),
        ("min(params.x) > 1", 4, "min() takes a metric"),
        ("min(metrics.x > 1", 14, "expected ')'"),
        ("metrics.a = 1x", 12, "malformed number"),
        ("metrics.a = 1.2.3", 12, "malformed number"),
        ("params.a = `x`", 11, "backticks quote keys"),
        ("metrics.a = 1\0", 13, "NUL"),
        ("params.a = 'x\0'", 13, "NUL"),
        ("AND metrics.a = 1", 0, "expected a key"),
        ("'metrics.a' = 1", 0, "expected a key"),
        ("metrics.a = 1 metrics.b = 2", 14, "expected AND, OR"),
        ("metrics.a = 1 AND ()", 19, "expected a key"),
        ("metrics.a < 'b' ; DROP TABLE runs", 16, "unexpected character ';'"),
    ],
)
def test_malformed_filters_point_at_the_offending_token(text: str, position: int, fragment: str) -> None:
    with pytest.raises(SearchSyntaxError) as info:
        parse_filter(text)
    assert info.value.position == position
    assert info.value.text == text
    assert fragment in str(info.value)


def test_error_renders_a_caret_under_the_position() -> None:
    with pytest.raises(SearchSyntaxError) as info:
        parse_filter("metrics.a > 1 AND params.b ~ 'x'")
    lines = str(info.value).splitlines()
    assert lines[0] == "unexpected character '~' at position 27:"
    assert lines[1] == "  metrics.a > 1 AND params.b ~ 'x'"
    assert lines[2] == "  " + " " * 27 + "^"


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("metrics.a = 'x'", 12, "compares numbers"),
        ("metrics.a IN (1, 'x')", 17, "compares numbers"),
        ("params.a = 1", 11, "quote the value: '1'"),
        ("tags.a IN ('x', 2.5)", 16, "quote the value"),
        ("metrics.a LIKE 'x'", 10, "LIKE is not supported for metrics.a"),
        ("min(metrics.a) ILIKE 'x'", 15, "ILIKE is not supported for min(metrics.a)"),
        ("attributes.foo = 'x'", 0, "unknown attribute 'foo'"),
        ("metrics.a > 1 AND bogus = 'x'", 18, "unknown attribute 'bogus'"),
        ("datasets.foo = 'x'", 0, "unknown dataset field 'foo'"),
        ("datasets.name IS NULL", 14, "IS NULL is not supported"),
        ("datasets.name < 'x'", 14, "< is not supported"),
        ("start_time LIKE 'x'", 11, "LIKE is not supported"),
        ("start_time = '5'", 13, "compares numbers"),
        ("status = 5", 9, "compares strings"),
    ],
)
def test_invalid_comparisons_point_at_the_offending_token(text: str, position: int, fragment: str) -> None:
    with pytest.raises(SearchSyntaxError) as info:
        run_search(text)
    assert (info.value.position, info.value.text) == (position, text)
    assert fragment in str(info.value)


def test_parse_order_by() -> None:
    assert parse_order_by(None) == ()
    assert parse_order_by(["metrics.acc DESC", "params.`a b`", "min(metrics.l) asc"]) == (
        OrderKey(Key("metric", "acc"), False),
        OrderKey(Key("param", "a b"), True),
        OrderKey(Key("metric", "l", "min"), True),
    )
    assert parse_order_by(["start_time desc"]) == (OrderKey(Key("attribute", "start_time"), False),)


@pytest.mark.parametrize(
    ("order_by", "text", "position", "fragment"),
    [
        (["metrics.a UP"], "metrics.a UP", 10, "expected ASC, DESC"),
        (["metrics.a DESC x"], "metrics.a DESC x", 15, "expected ASC, DESC"),
        ([""], "", 0, "empty order_by item"),
        (["params.a", "metrics.b ASCX"], "metrics.b ASCX", 10, "expected ASC, DESC"),
        (["DESC"], "DESC", 0, "expected a key"),
        (["metrics.a, metrics.b"], "metrics.a, metrics.b", 9, "expected ASC, DESC"),
        (["datasets.name"], "datasets.name", 0, "not supported in runs order_by"),
        (["foo"], "foo", 0, "unknown attribute 'foo'"),
    ],
)
def test_malformed_order_by(order_by: list[str], text: str, position: int, fragment: str) -> None:
    with pytest.raises(SearchSyntaxError) as info:
        run_search("", order_by)
    assert (info.value.text, info.value.position) == (text, position)
    assert fragment in str(info.value)


def test_order_by_must_be_a_list() -> None:
    with pytest.raises(SearchSyntaxError, match="list of strings"):
        run_search("", "metrics.a DESC")  # type: ignore[arg-type]
    with pytest.raises(SearchSyntaxError, match="must be a string"):
        run_search("", [3])  # type: ignore[list-item]


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage!!",
        "////",
        "é",
        _token([1, 2]),
        _token({"o": [], "id": "r", "k": [1, 2]}),  # one sort value too many
        _token({"o": [], "id": "r", "k": ["x"]}),  # start_time must be a number
        _token({"o": [], "id": "r", "k": [True]}),
        _token({"o": [], "id": 5, "k": [1]}),  # run ids are strings
        _token({"o": [], "id": "r", "k": [None]}),
        _token({"o": [], "id": "r", "k": [2**70]}),
        _token({"o": [], "id": "r"}),
        _token({"o": [["metric", None, "acc", True]], "id": "r", "k": [1.0, 1]}),
        base64.urlsafe_b64encode(b'{"o":[],"id":"r","k":[NaN]}').decode(),
        base64.urlsafe_b64encode(b"[" * 100000).decode(),
    ],
)
def test_malformed_page_tokens(token: str) -> None:
    with pytest.raises(SearchSyntaxError, match="invalid page_token"):
        run_search(page_token=token)


def test_page_token_for_another_order_by_is_refused() -> None:
    token = next_page_token(["run1", 0.5, 100], ["metrics.acc DESC"])
    run_search(order_by=["metric.acc desc"], page_token=token)  # the same order, spelt otherwise
    with pytest.raises(SearchSyntaxError, match="different order_by"):
        run_search(order_by=["metrics.acc ASC"], page_token=token)
    with pytest.raises(SearchSyntaxError, match="different order_by"):
        run_search(order_by=None, page_token=token)


def test_page_token_round_trips_the_row() -> None:
    row = ["run-ü", math.inf, None, "RUNNING", -5]
    order_by = ["metrics.a DESC", "params.p", "status"]
    query = run_search(order_by=order_by, page_token=next_page_token(row, order_by))
    # The sort values of the row are bound in order (a missing one is matched with IS NULL);
    # the page size plus one comes last.
    assert _in_order((math.inf, "RUNNING", -5, "run-ü"), query.params)
    assert query.params[-1] == 11
    # A row without the first key: only runs without it follow; the rest of the row is bound.
    row = ["run-ü", None, "x", "RUNNING", -5]
    query = run_search(order_by=order_by, page_token=next_page_token(row, order_by))
    assert _in_order(("x", "RUNNING", -5, "run-ü"), query.params)
    assert math.inf not in query.params and "NOT EXISTS" in query.sql


def _in_order(values: tuple[object, ...], params: tuple[object, ...]) -> bool:
    """Whether ``values`` occur in ``params`` in this order (others may come between)."""
    rest = iter(params)
    return all(any(p == v for p in rest) for v in values)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"view_type": 4}, "view_type"),
        ({"max_results": 0}, "max_results"),
        ({"max_results": True}, "max_results"),
        ({"dialect": "mysql"}, "dialect"),
        ({"experiment_ids": ["x"]}, "experiment id"),
        ({"now_ms": 1.5}, "now_ms"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        run_search(**kwargs)


def test_user_text_only_travels_as_parameters() -> None:
    hostile = "x'); DROP TABLE runs; --"
    quoted = hostile.replace("'", "''")
    for dialect in ("sqlite", "postgresql"):
        query = run_search(
            f"params.`{hostile}` = '{quoted}' AND tags.t LIKE '{quoted}%' AND "
            f"metrics.m > 1 AND datasets.name IN ('{quoted}')",
            [f"params.`{hostile}` DESC"],
            dialect=dialect,
        )
        assert "DROP" not in query.sql
        assert query.sql.count("?") == len(query.params)
        assert hostile in query.params
        assert "%" not in query.sql  # the store may turn ? into %s for psycopg


def test_like_is_translated_per_dialect() -> None:
    lite = run_search("params.p LIKE 'a*b?[c]%\\_x_'")
    assert "GLOB" in lite.sql and "a[*]b[?][[]c]*_x?" in lite.params
    pg = run_search("params.p LIKE 'a*b?[c]%\\_x_'", dialect="postgresql")
    assert " LIKE ? ESCAPE" in pg.sql and "a*b?[c]%\\_x_" in pg.params
    ilike = run_search("params.p ILIKE 'AbÉ%'", dialect="postgresql")
    assert "abÉ%" in ilike.params  # ASCII letters fold, others do not


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("a%", "abc", True),
        ("a%", "ba", False),
        ("a_c", "abc", True),
        ("a_c", "ac", False),
        ("a\\%", "a%", True),
        ("a\\%", "ab", False),
        ("a\\\\b", "a\\b", True),
        ("a\\", "a\\", True),
        ("%\n%", "x\ny", True),
        ("A%", "abc", False),
    ],
)
def test_like_to_regex(pattern: str, text: str, expected: bool) -> None:
    assert bool(like_to_regex(pattern).fullmatch(text)) is expected


def test_experiment_search_compiles_and_validates() -> None:
    query = compile_experiment_search(
        filter_string="name LIKE 'a%' AND tags.t = 'x'",
        order_by=["name DESC"],
        view_type=3,
        max_results=5,
        page_token=None,
        dialect="postgresql",
    )
    assert query.sql.startswith("SELECT q.experiment_id")
    assert query.params == ("a%", "t", "x", 6)
    for bad, position in [("metrics.a > 1", 0), ("params.a = 'x'", 0), ("name > 5", 7)]:
        with pytest.raises(SearchSyntaxError) as info:
            compile_experiment_search(
                filter_string=bad,
                order_by=None,
                view_type=1,
                max_results=5,
                page_token=None,
                dialect="sqlite",
            )
        assert info.value.position == position
    with pytest.raises(SearchSyntaxError, match="ordered by name"):
        compile_experiment_search(
            filter_string="",
            order_by=["tags.t"],
            view_type=1,
            max_results=5,
            page_token=None,
            dialect="sqlite",
        )
