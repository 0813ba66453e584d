"""Search: MLflow's filter grammar, parsed to an AST and compiled to one parameterised SQL query.

A filter is comparisons joined by ``AND``/``OR`` (``AND`` binds tighter) with parentheses::

    metrics.acc > 0.9 AND params.model = 'rf'
    (tags.team = 'ml' OR tags.team = "ds") AND attributes.status != 'FAILED'
    run_name LIKE 'cv-%' AND metrics.`val loss` < 0.3 AND params."a.b" IN ('1', '2')
    min(metrics.val_loss) < 0.3 AND count(metrics.loss) >= 100
    datasets.name = 'mnist' AND end_time IS NULL

Keys are ``<entity>.<key>``; everything after the first dot is the key (``metrics.a.b`` is the
metric ``a.b``), or the key is quoted with ``"``, ``'`` or backticks right after the dot. A bare
name is an attribute (``run_name``, ``status``...). Metric values are numbers and compare
numerically; params, tags, string attributes and dataset fields compare as strings (by code
point, the same on SQLite and PostgreSQL). ``LIKE`` is case-sensitive; ``ILIKE`` folds ASCII
letters only, on both databases; in both, ``%`` and ``_`` are wildcards and a backslash makes the
next character literal.

A comparison on a param, tag or metric matches only runs that have that key: ``params.x != 'a'``
skips runs without ``x``; ``params.x IS NULL`` finds them. A NaN metric (stored as NULL in
``latest_metrics``) compares as NaN does in Python: every comparison is false except ``!=`` and
``NOT IN``, which are true.

The compiled SQL uses ``?`` placeholders only; keys and values are always bound parameters, so
user text never becomes SQL text. Pages are keyset-paginated: the page token carries the
sort-key values of the last row returned, so paging stays stable while runs are being added.

A run search walks its first order key in order rather than sorting every matching run: for
a metric (last, min or max), a param or a tag it reads that key's ``(key, value)`` index from
the first value on, tests the filter on each run it meets, and stops once the page is full;
for ``start_time`` it reads the runs' ``(experiment_id, start_time)`` index. The other order
keys only break ties within a group of equal first values. Runs without a value for the first
key come last and are looked for only when the runs with one did not fill the page. So a top-N
search costs about N over the share of runs the filter keeps, whatever the number of runs; a
filter that keeps very few runs makes the walk long (it then reads the whole index once).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mltrail.core.errors import InvalidInputError, SearchSyntaxError

__all__ = [
    "And",
    "Comparison",
    "Key",
    "Literal",
    "Node",
    "Or",
    "OrderKey",
    "SqlQuery",
    "compile_experiment_search",
    "compile_run_search",
    "like_to_regex",
    "next_page_token",
    "parse_filter",
    "parse_order_by",
]

# --------------------------------------------------------------------------------------------
# AST


@dataclass(frozen=True)
class Key:
    """What a comparison or an order_by item looks at.

    Attributes:
        entity: ``"metric"``, ``"param"``, ``"tag"``, ``"attribute"`` or ``"dataset"``.
        name: the key (``"val loss"``), attribute name or dataset field, as written.
        aggregate: ``"min"``, ``"max"``, ``"last"`` or ``"count"`` for ``min(metrics.x)``...
        position: offset of the key in the parsed text (not part of equality).
    """

    entity: str
    name: str
    aggregate: str | None = None
    position: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Literal:
    """A value: a ``str`` for a quoted string, an ``int`` or ``float`` for a number."""

    value: str | int | float
    position: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Comparison:
    """``key op value``; ``value`` is a tuple for ``IN``/``NOT IN`` and None for ``IS [NOT] NULL``."""

    key: Key
    op: str
    value: Literal | tuple[Literal, ...] | None
    op_position: int = field(default=0, compare=False)


@dataclass(frozen=True)
class And:
    """All operands hold. ``And(())`` is the empty filter and matches everything."""

    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """At least one operand holds."""

    operands: tuple[Node, ...]


Node = Comparison | And | Or
"""A filter AST node."""


@dataclass(frozen=True)
class OrderKey:
    """One order_by item: a key and its direction."""

    key: Key
    ascending: bool = True


@dataclass(frozen=True)
class SqlQuery:
    """One SQL statement with ``?`` placeholders and the parameters to bind, in order."""

    sql: str
    params: tuple[Any, ...]


# --------------------------------------------------------------------------------------------
# Tokenizer

_ENTITIES = {
    "metric": "metric",
    "metrics": "metric",
    "param": "param",
    "params": "param",
    "parameter": "param",
    "parameters": "param",
    "tag": "tag",
    "tags": "tag",
    "attribute": "attribute",
    "attributes": "attribute",
    "attr": "attribute",
    "run": "attribute",
    "dataset": "dataset",
    "datasets": "dataset",
}
_AGGREGATES = ("min", "max", "last", "count")
_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "LIKE", "ILIKE", "IS", "NULL", "ASC", "DESC"})
_COMPARATORS = ("=", "!=", "<", "<=", ">", ">=")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_IDENT_EXTRA = frozenset("_.-/")


@dataclass(frozen=True)
class _Token:
    kind: str  # ident, string, backtick, number, op, lparen, rparen, comma, eof
    text: str  # identifier or operator as written; a string's content without its quotes
    position: int
    end: int
    number: int | float = 0


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\0":
            raise SearchSyntaxError("a NUL character is not allowed", text, i)
        if c.isspace():
            i += 1
        elif c in "'\"`":
            j, chunks = i + 1, []
            while True:
                k = text.find(c, j)
                if k < 0:
                    what = "backtick" if c == "`" else "string"
                    raise SearchSyntaxError(f"unterminated {what} (close it with {c})", text, i)
                chunks.append(text[j:k])
                if k + 1 < n and text[k + 1] == c:  # a doubled quote stands for itself
                    chunks.append(c)
                    j = k + 2
                    continue
                break
            nul = text.find("\0", i, k)
            if nul >= 0:
                raise SearchSyntaxError("a NUL character is not allowed", text, nul)
            body = "".join(chunks)
            tokens.append(_Token("backtick" if c == "`" else "string", body, i, k + 1))
            i = k + 1
        elif c in "(),":
            kind = {"(": "lparen", ")": "rparen", ",": "comma"}[c]
            tokens.append(_Token(kind, c, i, i + 1))
            i += 1
        elif c in "=!<>":
            two = text[i : i + 2]
            if two in ("!=", "<=", ">="):
                tokens.append(_Token("op", two, i, i + 2))
                i += 2
            elif c == "!":
                raise SearchSyntaxError("unexpected '!' (did you mean '!='?)", text, i)
            else:
                tokens.append(_Token("op", c, i, i + 1))
                i += 1
        elif (m := _NUMBER.match(text, i)) is not None and (c.isdigit() or c in "+-."):
            end = m.end()
            if end < n and (text[end].isalnum() or text[end] in "_."):
                raise SearchSyntaxError("malformed number", text, i)
            tokens.append(_Token("number", m.group(), i, end, _number(m.group())))
            i = end
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in _IDENT_EXTRA):
                j += 1
            tokens.append(_Token("ident", text[i:j], i, j))
            i = j
        else:
            raise SearchSyntaxError(f"unexpected character {c!r}", text, i)
    tokens.append(_Token("eof", "", n, n))
    return tokens


def _number(text: str) -> int | float:
    if not any(ch in text for ch in ".eE"):
        try:
            return int(text)
        except ValueError:  # longer than int() accepts: as large as a float gets
            pass
    return float(text)


# --------------------------------------------------------------------------------------------
# Parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def error(self, message: str, position: int) -> SearchSyntaxError:
        return SearchSyntaxError(message, self.text, position)

    def keyword(self, word: str, tok: _Token | None = None) -> bool:
        tok = tok or self.peek()
        return tok.kind == "ident" and tok.text.upper() == word

    def expect(self, kind: str, what: str) -> _Token:
        tok = self.peek()
        if tok.kind != kind:
            raise self.error(f"expected {what}", tok.position)
        return self.take()

    def filter(self) -> Node:
        if self.peek().kind == "eof":
            return And(())
        node = self.disjunction()
        tok = self.peek()
        if tok.kind != "eof":
            raise self.error("expected AND, OR or the end of the filter", tok.position)
        return node

    def disjunction(self) -> Node:
        items = [self.conjunction()]
        while self.keyword("OR"):
            self.take()
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self) -> Node:
        items = [self.primary()]
        while self.keyword("AND"):
            self.take()
            items.append(self.primary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def primary(self) -> Node:
        if self.peek().kind == "lparen":
            self.take()
            node = self.disjunction()
            tok = self.peek()
            if tok.kind != "rparen":
                raise self.error("expected ')'", tok.position)
            self.take()
            return node
        return self.comparison()

    def key(self) -> Key:
        tok = self.peek()
        if tok.kind == "ident" and "." in tok.text:
            prefix, _, rest = tok.text.partition(".")
            entity = _ENTITIES.get(prefix.lower())
            if entity is None:
                raise self.error(
                    f"unknown entity {prefix!r}; expected metrics., params., tags., attributes. or datasets.",
                    tok.position,
                )
            self.take()
            if not rest:
                quoted = self.peek()
                if quoted.kind not in ("string", "backtick") or quoted.position != tok.end:
                    raise self.error(f"expected a key after {tok.text!r}", tok.end)
                self.take()
                rest = quoted.text
                if not rest:
                    raise self.error("empty key", quoted.position)
            return Key(entity, rest, None, tok.position)
        if tok.kind == "ident" and tok.text.upper() not in _KEYWORDS:
            self.take()
            if self.peek().kind == "lparen" and tok.text.lower() in _AGGREGATES:
                self.take()
                inner = self.key()
                if inner.entity != "metric" or inner.aggregate is not None:
                    raise self.error(
                        f"{tok.text.lower()}() takes a metric, e.g. {tok.text.lower()}(metrics.loss)",
                        inner.position,
                    )
                self.expect("rparen", "')'")
                return Key("metric", inner.name, tok.text.lower(), tok.position)
            return Key("attribute", tok.text, None, tok.position)
        if tok.kind == "backtick" and tok.text:
            self.take()
            return Key("attribute", tok.text, None, tok.position)
        raise self.error(
            "expected a key such as metrics.acc, params.lr, tags.team or attributes.status",
            tok.position,
        )

    def comparison(self) -> Comparison:
        key = self.key()
        tok = self.peek()
        if tok.kind == "op":
            self.take()
            return Comparison(key, tok.text, self.literal(), tok.position)
        if self.keyword("LIKE") or self.keyword("ILIKE"):
            self.take()
            return Comparison(key, tok.text.upper(), self.literal(), tok.position)
        if self.keyword("IN"):
            self.take()
            return Comparison(key, "IN", self.literal_list(), tok.position)
        if self.keyword("NOT"):
            self.take()
            if not self.keyword("IN"):
                raise self.error("expected IN after NOT", self.peek().position)
            self.take()
            return Comparison(key, "NOT IN", self.literal_list(), tok.position)
        if self.keyword("IS"):
            self.take()
            op = "IS NULL"
            if self.keyword("NOT"):
                self.take()
                op = "IS NOT NULL"
            if not self.keyword("NULL"):
                raise self.error("expected NULL", self.peek().position)
            self.take()
            return Comparison(key, op, None, tok.position)
        raise self.error(
            "expected an operator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS NULL, IS NOT NULL)",
            tok.position,
        )

    def literal(self) -> Literal:
        tok = self.peek()
        if tok.kind == "string":
            self.take()
            return Literal(tok.text, tok.position)
        if tok.kind == "number":
            self.take()
            return Literal(tok.number, tok.position)
        if self.keyword("NULL"):
            raise self.error("compare with NULL using IS NULL or IS NOT NULL", tok.position)
        if tok.kind == "backtick":
            raise self.error("backticks quote keys; quote values with ' or \"", tok.position)
        raise self.error("expected a value (a quoted string or a number)", tok.position)

    def literal_list(self) -> tuple[Literal, ...]:
        self.expect("lparen", "'(' after IN")
        items = [self.literal()]
        while self.peek().kind == "comma":
            self.take()
            items.append(self.literal())
        self.expect("rparen", "',' or ')'")
        return tuple(items)

    def order_key(self) -> OrderKey:
        if self.peek().kind == "eof":
            raise self.error("empty order_by item", 0)
        key = self.key()
        ascending = True
        if self.keyword("ASC") or self.keyword("DESC"):
            ascending = self.take().text.upper() == "ASC"
        tok = self.peek()
        if tok.kind != "eof":
            raise self.error("expected ASC, DESC or the end of the order_by item", tok.position)
        return OrderKey(key, ascending)


def parse_filter(text: str) -> Node:
    """Parse a filter string into its AST.

    Args:
        text: the filter, e.g. ``"metrics.acc > 0.9 AND params.model = 'rf'"``. An empty or
            blank string gives ``And(())``, which matches everything.

    Returns:
        The AST: :class:`Comparison` leaves under :class:`And` / :class:`Or` nodes.

    Raises:
        SearchSyntaxError: the text is malformed; ``position`` points at the offending token.

    Example:
        >>> parse_filter("metrics.`val loss` < 0.3").key.name
        'val loss'
    """
    if not isinstance(text, str):
        raise SearchSyntaxError(f"a filter must be a string, not {type(text).__name__}")
    return _Parser(text).filter()


def parse_order_by(order_by: Sequence[str] | None) -> tuple[OrderKey, ...]:
    """Parse order_by items such as ``"metrics.acc DESC"`` or ``"min(metrics.loss)"``.

    Raises:
        SearchSyntaxError: an item is malformed; the error carries that item and the position.
    """
    if order_by is None:
        return ()
    if isinstance(order_by, str):
        raise SearchSyntaxError("order_by must be a list of strings, e.g. ['metrics.acc DESC']")
    keys = []
    for item in order_by:
        if not isinstance(item, str):
            raise SearchSyntaxError(f"an order_by item must be a string, not {item!r}")
        keys.append(_Parser(item).order_key())
    return tuple(keys)


# --------------------------------------------------------------------------------------------
# SQL building blocks


@dataclass(frozen=True)
class _Param:
    value: Any


def _sql(*parts: str | _Param | SqlQuery) -> SqlQuery:
    """Concatenate SQL text, parameters (each becomes one ``?``) and fragments, in order."""
    text: list[str] = []
    params: list[Any] = []
    for part in parts:
        if isinstance(part, str):
            text.append(part)
        elif isinstance(part, _Param):
            text.append("?")
            params.append(part.value)
        else:
            text.append(part.sql)
            params.extend(part.params)
    return SqlQuery("".join(text), tuple(params))


def _join(sep: str, frags: Sequence[SqlQuery]) -> SqlQuery:
    parts: list[str | SqlQuery] = []
    for i, frag in enumerate(frags):
        if i:
            parts.append(sep)
        parts.append(frag)
    return _sql(*parts)


def _placeholders(values: Sequence[Any]) -> SqlQuery:
    return _join(", ", [_sql(_Param(v)) for v in values])


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _like_items(pattern: str) -> list[tuple[str, str]]:
    """Split a LIKE pattern into ("lit", char), ("any", "") and ("one", "") items."""
    items: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            items.append(("lit", pattern[i + 1]))
            i += 2
            continue
        items.append(("any", "") if c == "%" else ("one", "") if c == "_" else ("lit", c))
        i += 1
    return items


def like_to_regex(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """Return the regex that matches what ``LIKE pattern`` (or ``ILIKE``) matches here."""
    if ignore_case:
        pattern = pattern.translate(_ASCII_LOWER)
    out = []
    for kind, char in _like_items(pattern):
        out.append(".*" if kind == "any" else "." if kind == "one" else re.escape(char))
    return re.compile("".join(out), re.DOTALL)


def _like_escaped(pattern: str) -> str:
    """The pattern for ``LIKE ? ESCAPE '\\'``: wildcards kept, literals escaped."""
    out = []
    for kind, char in _like_items(pattern):
        if kind == "any":
            out.append("%")
        elif kind == "one":
            out.append("_")
        else:
            out.append("\\" + char if char in "%_\\" else char)
    return "".join(out)


def _like_glob(pattern: str) -> str:
    """The same pattern for SQLite's case-sensitive ``GLOB``."""
    out = []
    for kind, char in _like_items(pattern):
        if kind == "any":
            out.append("*")
        elif kind == "one":
            out.append("?")
        else:
            out.append("[" + char + "]" if char in "*?[" else char)
    return "".join(out)


_INT64 = 2**63


def _bind_number(value: int | float, kind: str) -> int | float:
    if kind == "int" and isinstance(value, int) and -_INT64 <= value < _INT64:
        return value
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


# --------------------------------------------------------------------------------------------
# Compiler

# Keys of a search scope: attribute name -> (SQL expression, kind), kind "text" or "int".
_STATUS_SQL = (
    "(CASE WHEN r.status = 'RUNNING' AND r.heartbeat_deadline IS NOT NULL "
    "AND r.heartbeat_deadline < ? THEN 'CRASHED' ELSE r.status END)"
)
_RUN_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "run_id": ("r.run_uuid", "text"),
    "run_name": ("r.run_name", "text"),
    "status": (_STATUS_SQL, "text"),
    "user_id": ("r.user_id", "text"),
    "artifact_uri": ("r.artifact_uri", "text"),
    "start_time": ("r.start_time", "int"),
    "end_time": ("r.end_time", "int"),
}
_RUN_ATTRIBUTE_ALIASES = {"run_uuid": "run_id", "run name": "run_name", "created": "start_time"}
_EXPERIMENT_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "name": ("e.name", "text"),
    "experiment_id": ("e.experiment_id", "int"),
    "creation_time": ("e.creation_time", "int"),
    "last_update_time": ("e.last_update_time", "int"),
}
_DATASET_FIELDS = {"name": "d.name", "digest": "d.digest", "context": "i.context"}
_METRIC_COLUMNS = {None: "value", "last": "value", "min": "min_value", "max": "max_value", "count": "count"}
_STRING_OPS = ("=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN")
_NULL_OPS = ("IS NULL", "IS NOT NULL")


@dataclass(frozen=True)
class _SortColumn:
    expr: SqlQuery  # evaluated inside the inner query (alias r or e)
    kind: str  # "text", "int" or "float"
    ascending: bool
    nullable: bool


def _collated(expr: SqlQuery, kind: str, dialect: str) -> SqlQuery:
    """``expr`` ordered by code point: PostgreSQL needs the "C" collation for that."""
    if kind == "text" and dialect == "postgresql":
        return _sql(expr, ' COLLATE "C"')
    return expr


@dataclass(frozen=True)
class _Driver:
    """The first order key as a search walks it: in index order, stopping once a page is full.

    ``source`` is the FROM clause (the key's own table joined to ``runs r``, or ``runs r``
    alone), ``link`` the join and key condition, ``value`` the sort value read from the source.
    Runs for which the key has no value (``missing``; None when every run has one) come after
    all others; ``present`` says a row of the source has a value (None: it always does).
    """

    source: str
    link: SqlQuery | None
    value: SqlQuery
    present: SqlQuery | None
    missing: SqlQuery | None


class _Compiler:
    def __init__(self, scope: str, dialect: str, now_ms: int, text: str, run_ref: str = "r.run_uuid") -> None:
        self.scope = scope  # "run" or "experiment"
        self.dialect = dialect
        self.now_ms = now_ms
        self.text = text
        # What params, tags, metrics and datasets in a filter are matched against. A search
        # that walks a key's own table names that table's run_uuid, so that SQLite tests the
        # filter before it looks the run up.
        self.run_ref = run_ref

    def error(self, message: str, position: int) -> SearchSyntaxError:
        return SearchSyntaxError(message, self.text, position)

    # -- keys --------------------------------------------------------------------------------

    def attribute(self, key: Key) -> tuple[SqlQuery, str]:
        name = key.name.lower()
        if self.scope == "run":
            name = _RUN_ATTRIBUTE_ALIASES.get(name, name)
            table = _RUN_ATTRIBUTES
        else:
            table = _EXPERIMENT_ATTRIBUTES
        if name not in table:
            valid = ", ".join(sorted(table))
            raise self.error(f"unknown attribute {key.name!r}; expected one of {valid}", key.position)
        expr, kind = table[name]
        if name == "status":  # CRASHED is computed against the caller's clock
            head, _, tail = expr.partition("?")
            return _sql(head, _Param(self.now_ms), tail), kind
        return _sql(expr), kind

    def check_entity(self, key: Key, *, ordering: bool) -> None:
        allowed: tuple[str, ...] = ("metric", "param", "tag", "attribute")
        if self.scope == "run" and not ordering:
            allowed += ("dataset",)
        if self.scope == "experiment":
            allowed = ("tag", "attribute")
        if key.entity not in allowed:
            where = "order_by" if ordering else "filters"
            what = "runs" if self.scope == "run" else "experiments"
            raise self.error(f"{key.entity} keys are not supported in {what} {where}", key.position)

    def sort_column(self, order: OrderKey) -> _SortColumn:
        key = order.key
        self.check_entity(key, ordering=True)
        if key.entity == "attribute":
            expr, kind = self.attribute(key)
            nullable = expr.sql == "r.end_time"
            return _SortColumn(expr, kind, order.ascending, nullable)
        if key.entity == "metric":
            column = _METRIC_COLUMNS[key.aggregate]
            expr = _sql(
                f"(SELECT m.{column} FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = ",
                _Param(key.name),
                ")",
            )
            kind = "int" if key.aggregate == "count" else "float"
            return _SortColumn(expr, kind, order.ascending, True)
        table, owner = self.key_table(key)
        expr = _sql(f"(SELECT t.value FROM {table} t WHERE {owner} AND t.key = ", _Param(key.name), ")")
        return _SortColumn(expr, "text", order.ascending, True)

    def driver(self, order: OrderKey) -> _Driver:
        """Where the first order key's values come from when the search walks them in order."""
        key = order.key
        self.check_entity(key, ordering=True)
        if key.entity == "attribute":
            expr, kind = self.attribute(key)
            if expr.sql == "r.end_time":
                return _Driver(
                    "runs r", None, expr, _sql("r.end_time IS NOT NULL"), _sql("r.end_time IS NULL")
                )
            return _Driver("runs r", None, self.collated(expr, kind), None, None)
        link = _sql("o.key = ", _Param(key.name), " AND r.run_uuid = o.run_uuid")
        if key.entity == "metric":
            column = _METRIC_COLUMNS[key.aggregate]
            missing = _sql(
                "NOT EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = ",
                _Param(key.name),
                f" AND m.{column} IS NOT NULL)",
            )
            return _Driver(
                "latest_metrics o CROSS JOIN runs r",
                link,
                _sql(f"o.{column}"),
                _sql(f"o.{column} IS NOT NULL"),
                missing,
            )
        table, owner = self.key_table(key)
        missing = _sql(
            f"NOT EXISTS (SELECT 1 FROM {table} t WHERE {owner} AND t.key = ", _Param(key.name), ")"
        )
        return _Driver(
            f"{table} o CROSS JOIN runs r",
            link,
            self.collated(_sql("o.value"), "text"),
            None,
            missing,
        )

    def collated(self, expr: SqlQuery, kind: str) -> SqlQuery:
        return _collated(expr, kind, self.dialect)

    def key_table(self, key: Key) -> tuple[str, str]:
        if self.scope == "experiment":
            return "experiment_tags", "t.experiment_id = e.experiment_id"
        return ("params" if key.entity == "param" else "tags"), f"t.run_uuid = {self.run_ref}"

    # -- filters -----------------------------------------------------------------------------

    def node(self, node: Node) -> SqlQuery:
        if isinstance(node, Comparison):
            return self.comparison(node)
        if not node.operands:
            return _sql("1 = 1")
        sep = " AND " if isinstance(node, And) else " OR "
        return _sql("(", _join(sep, [self.node(op) for op in node.operands]), ")")

    def values(self, cmp: Comparison, kind: str) -> list[Any]:
        literals = cmp.value if isinstance(cmp.value, tuple) else [cmp.value]
        out: list[Any] = []
        for lit in literals:
            assert lit is not None
            if kind == "text":
                if not isinstance(lit.value, str):
                    raise self.error(
                        f"{_describe(cmp.key)} compares strings; quote the value: '{lit.value}'", lit.position
                    )
                out.append(lit.value)
            else:
                if isinstance(lit.value, str):
                    raise self.error(
                        f"{_describe(cmp.key)} compares numbers; write the value unquoted", lit.position
                    )
                out.append(_bind_number(lit.value, kind))
        return out

    def check_op(self, cmp: Comparison, allowed: Sequence[str]) -> None:
        if cmp.op not in allowed:
            raise self.error(
                f"{cmp.op} is not supported for {_describe(cmp.key)}; use one of {', '.join(allowed)}",
                cmp.op_position,
            )

    def predicate(self, expr: SqlQuery, cmp: Comparison, kind: str) -> SqlQuery:
        """``expr op value(s)`` for a non-null comparison operator."""
        values = self.values(cmp, kind)
        op = cmp.op
        if op in ("IN", "NOT IN"):
            return _sql(expr, f" {op} (", _placeholders(values), ")")
        if op in ("LIKE", "ILIKE"):
            pattern = values[0]
            if op == "ILIKE":
                lowered = _Param(_like_escaped(pattern.translate(_ASCII_LOWER)))
                if self.dialect == "postgresql":  # lower() under "C" folds ASCII only, as SQLite
                    return _sql("lower(", expr, ' COLLATE "C") LIKE ', lowered, " ESCAPE '\\'")
                return _sql("lower(", expr, ") LIKE ", lowered, " ESCAPE '\\'")
            if self.dialect == "postgresql":
                return _sql(expr, " LIKE ", _Param(_like_escaped(pattern)), " ESCAPE '\\'")
            return _sql(expr, " GLOB ", _Param(_like_glob(pattern)))
        sql_op = "<>" if op == "!=" else op
        if kind == "text" and op not in ("=", "!=") and self.dialect == "postgresql":
            return _sql(expr, f' COLLATE "C" {sql_op} ', _Param(values[0]))
        return _sql(expr, f" {sql_op} ", _Param(values[0]))

    def comparison(self, cmp: Comparison) -> SqlQuery:
        key = cmp.key
        self.check_entity(key, ordering=False)
        if key.entity == "attribute":
            expr, kind = self.attribute(key)
            if kind == "text":
                self.check_op(cmp, _STRING_OPS + _NULL_OPS)
            else:
                self.check_op(cmp, (*_COMPARATORS, "IN", "NOT IN", *_NULL_OPS))
            if cmp.op in _NULL_OPS:
                return _sql(expr, " ", cmp.op)
            return self.predicate(expr, cmp, kind)
        if key.entity == "dataset":
            column = _DATASET_FIELDS.get(key.name.lower())
            if column is None:
                raise self.error(
                    f"unknown dataset field {key.name!r}; expected name, digest or context", key.position
                )
            self.check_op(cmp, ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"))
            return _sql(
                "EXISTS (SELECT 1 FROM inputs i JOIN datasets d ON d.dataset_uuid = "
                f"i.dataset_uuid WHERE i.run_uuid = {self.run_ref} AND ",
                self.predicate(_sql(column), cmp, "text"),
                ")",
            )
        if key.entity == "metric":
            self.check_op(cmp, (*_COMPARATORS, "IN", "NOT IN", *_NULL_OPS))
            column = f"m.{_METRIC_COLUMNS[key.aggregate]}"
            head = _sql(
                f"EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_uuid = {self.run_ref} AND m.key = ",
                _Param(key.name),
            )
            if cmp.op in _NULL_OPS:
                return _sql("NOT " if cmp.op == "IS NULL" else "", head, ")")
            kind = "int" if key.aggregate == "count" else "float"
            cond = self.predicate(_sql(column), cmp, kind)
            if cmp.op in ("!=", "NOT IN") and key.aggregate != "count":
                cond = _sql(f"({column} IS NULL OR ", cond, ")")  # NaN differs from everything
            return _sql(head, " AND ", cond, ")")
        # params and tags
        self.check_op(cmp, _STRING_OPS + _NULL_OPS)
        table, owner = self.key_table(key)
        head = _sql(f"EXISTS (SELECT 1 FROM {table} t WHERE {owner} AND t.key = ", _Param(key.name))
        if cmp.op in _NULL_OPS:
            return _sql("NOT " if cmp.op == "IS NULL" else "", head, ")")
        return _sql(head, " AND ", self.predicate(_sql("t.value"), cmp, "text"), ")")


def _describe(key: Key) -> str:
    name = {
        "metric": "metrics",
        "param": "params",
        "tag": "tags",
        "attribute": "attributes",
        "dataset": "datasets",
    }[key.entity]
    text = f"{name}.{key.name}"
    return f"{key.aggregate}({text})" if key.aggregate else text


# --------------------------------------------------------------------------------------------
# Paging and the final statement


def _fingerprint(orders: Sequence[OrderKey]) -> list[list[Any]]:
    return [[o.key.entity, o.key.aggregate, o.key.name, o.ascending] for o in orders]


def next_page_token(row: Sequence[Any], order_by: Sequence[str] | None) -> str:
    """Return the token for the page after ``row``, the last row returned by a search query.

    Args:
        row: the row as the compiled query returned it (id first, then the sort-key values).
        order_by: the order_by the query was compiled with.
    """
    orders = parse_order_by(order_by)
    payload = {"o": _fingerprint(orders), "id": row[0], "k": list(row[1:])}
    raw = json.dumps(payload, separators=(",", ":")).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_token(
    token: str,
    orders: Sequence[OrderKey],
    columns: Sequence[_SortColumn],
    id_kind: str,
    dialect: str,
) -> list[Any]:
    def bad(why: str) -> SearchSyntaxError:
        return SearchSyntaxError(f"invalid page_token: {why}", token, 0)

    if not isinstance(token, str) or len(token) > 65536:
        raise bad("not a token returned by this search")
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        data = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError):
        raise bad("not a token returned by this search") from None
    if not isinstance(data, dict) or not isinstance(data.get("k"), list) or "id" not in data:
        raise bad("not a token returned by this search")
    if data.get("o") != _fingerprint(orders):
        raise bad("it was made for a different order_by")
    keys = data["k"]
    if len(keys) != len(columns):
        raise bad("it was made for a different search")
    values = [*keys, data["id"]]
    kinds = [(c.kind, c.nullable) for c in columns] + [(id_kind, False)]
    for value, (kind, nullable) in zip(values, kinds, strict=True):
        if value is None:
            if not nullable:
                raise bad("a sort value is missing")
        elif kind == "text":
            if not isinstance(value, str):
                raise bad("a sort value has the wrong type")
            if dialect == "postgresql" and "\0" in value:
                raise bad("a sort value holds a NUL character")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a sort value has the wrong type")
        elif isinstance(value, float) and math.isnan(value):
            raise bad("a sort value is NaN")
        elif kind == "int" and not (isinstance(value, int) and -_INT64 <= value < _INT64):
            raise bad("a sort value is out of range")
    return values


_NULL_OF_KIND = {
    "text": "CAST(NULL AS TEXT)",
    "int": "CAST(NULL AS BIGINT)",
    "float": "CAST(NULL AS DOUBLE PRECISION)",
}


def _keyset(items: Sequence[tuple[SqlQuery, _SortColumn]], values: Sequence[Any]) -> SqlQuery:
    """The rows after the one whose sort values are ``values``, in the order of ``items``."""

    def after(i: int) -> SqlQuery:
        expr, col = items[i]
        value = values[i]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = _bind_number(value, col.kind)
        if value is None:
            equal, later = _sql(expr, " IS NULL"), None
        else:
            later = _sql(expr, f" {'>' if col.ascending else '<'} ", _Param(value))
            if col.nullable:
                later = _sql("(", later, " OR ", expr, " IS NULL)")
            equal = _sql(expr, " = ", _Param(value))
        if i == len(items) - 1:
            return later if later is not None else _sql("1 = 0")
        rest = _sql(equal, " AND ", after(i + 1))
        if later is None:
            return _sql("(", rest, ")")
        return _sql("(", later, " OR (", rest, "))")

    return after(0)


def _compile(
    *,
    table: str,
    alias: str,
    id_column: str,
    id_kind: str,
    where: Sequence[SqlQuery],
    columns: Sequence[_SortColumn],
    orders: Sequence[OrderKey],
    page_token: str | None,
    max_results: int,
    dialect: str,
) -> SqlQuery:
    names = [f"k{i}" for i in range(len(columns))]
    select = [_sql(f"{alias}.{id_column} AS {id_column}")]
    select += [_sql(col.expr, f" AS {name}") for col, name in zip(columns, names, strict=True)]
    inner = _sql("SELECT ", _join(", ", select), f" FROM {table} {alias} WHERE ", _join(" AND ", where))

    # The total order: each key with missing values last, then the id ascending.
    everything = [*zip(names, columns, strict=True), (id_column, _SortColumn(_sql(""), id_kind, True, False))]

    def ref(name: str, col: _SortColumn) -> str:
        collate = ' COLLATE "C"' if col.kind == "text" and dialect == "postgresql" else ""
        return f"q.{name}{collate}"

    order_sql = []
    for name, col in everything:
        if col.nullable:
            order_sql.append(f"CASE WHEN q.{name} IS NULL THEN 1 ELSE 0 END")
        order_sql.append(f"{ref(name, col)} {'ASC' if col.ascending else 'DESC'}")

    parts: list[str | SqlQuery | _Param] = [
        "SELECT ",
        ", ".join(["q." + id_column] + [f"q.{n}" for n in names]),
        " FROM (",
        inner,
        ") q",
    ]
    if page_token:
        values = _decode_token(page_token, orders, columns, id_kind, dialect)
        parts += [" WHERE ", _keyset([(_sql(ref(name, col)), col) for name, col in everything], values)]
    parts += [" ORDER BY ", ", ".join(order_sql), " LIMIT ", _Param(max_results + 1)]
    return _sql(*parts)


def _compile_runs(
    *,
    where: Sequence[SqlQuery],
    where_driven: Sequence[SqlQuery],
    driver: _Driver,
    columns: Sequence[_SortColumn],
    orders: Sequence[OrderKey],
    page_token: str | None,
    max_results: int,
    dialect: str,
) -> SqlQuery:
    """The run search, walking the first sort key in order so that it stops after a page.

    The runs that have a value for the first key come first, read from ``driver`` in its order
    (an index on the key and value when there is one; the remaining keys only break ties, so
    the database sorts each group of equal first values and stops once the page is full).
    The runs without a value come after them, and are looked for only when the first part did
    not fill the page. Both parts are one statement. ``where_driven`` is the filter as part one
    tests it (on the walked table's run ids where it can), ``where`` as part two does.
    """
    limit = max_results + 1
    first, rest = columns[0], columns[1:]
    tail = [(_collated(c.expr, c.kind, dialect), c) for c in rest]
    tail.append((_collated(_sql("r.run_uuid"), "text", dialect), _SortColumn(_sql(""), "text", True, False)))
    values = _decode_token(page_token, orders, columns, "text", dialect) if page_token else None

    def arm(
        head: SqlQuery | None, conditions: list[SqlQuery], group: int | None, guard: SqlQuery | None = None
    ) -> SqlQuery:
        """SELECT run_uuid, k0..kn [, g] with ``head`` as k0 (None: no value) in sort order."""
        k0 = head if head is not None else _sql(_NULL_OF_KIND[first.kind])
        if head is None and first.kind == "text" and dialect == "postgresql":
            k0 = _sql(k0, ' COLLATE "C"')
        select = [_sql(tail[-1][0], " AS run_uuid"), _sql(k0, " AS k0")]
        select += [_sql(expr, f" AS k{i}") for i, (expr, _) in enumerate(tail[:-1], 1)]
        if group is not None:
            select.append(_sql(f"{group} AS g"))
        order = [f"2 {'ASC' if first.ascending else 'DESC'}"] if head is not None else []
        for i, (_, col) in enumerate(tail[:-1], 3):
            order.append(f"{i} {'ASC' if col.ascending else 'DESC'}{' NULLS LAST' if col.nullable else ''}")
        order.append("1 ASC")
        source = _sql(driver.source if head is not None else "runs r")
        if guard is not None:
            source = guard
        return _sql(
            "SELECT ",
            _join(", ", select),
            " FROM ",
            source,
            " WHERE ",
            _join(" AND ", conditions),
            f" ORDER BY {', '.join(order)} LIMIT ",
            _Param(limit),
        )

    # Part one: the runs with a value for the first key, unless the page starts after them.
    head: SqlQuery | None = None
    if values is None or values[0] is not None:
        conditions = [c for c in (driver.link, driver.present) if c is not None] + list(where_driven)
        if values is not None:
            # The bound alone lets the database start the index walk at the token.
            first_value = _bind_number(values[0], first.kind) if first.kind != "text" else values[0]
            conditions.append(
                _sql(driver.value, f" {'>=' if first.ascending else '<='} ", _Param(first_value))
            )
            present = _SortColumn(first.expr, first.kind, first.ascending, False)
            conditions.append(_keyset([(driver.value, present), *tail], values))
        head = arm(driver.value, conditions, None if driver.missing is None else 0)
        if driver.missing is None:
            return head

    # Part two: the runs without a value, ordered by the remaining keys.
    assert driver.missing is not None
    conditions = [driver.missing, *where]
    if values is not None and values[0] is None:
        conditions.append(_keyset(tail, values[1:]))
        return arm(None, conditions, None)
    if head is None:
        return arm(None, conditions, None)
    # Only when part one did not fill the page. PostgreSQL runs an uncorrelated condition once,
    # before anything else; SQLite would test it on every run it scans, so there it is a
    # one-row table (zero rows once the page is full) that the scan of the runs is nested in.
    full = _sql("(SELECT COUNT(*) FROM a) < ", _Param(limit))
    if dialect == "postgresql":
        missing = arm(None, [*conditions, full], 1)
    else:
        guard = _sql("(SELECT 1 WHERE ", full, " LIMIT 1) z CROSS JOIN runs r")
        missing = arm(None, conditions, 1, guard)
    outer = ["q.g"]
    for i, col in enumerate(columns):
        ref = f"q.k{i}" + (' COLLATE "C"' if col.kind == "text" and dialect == "postgresql" else "")
        outer.append(f"{ref} {'ASC' if col.ascending else 'DESC'}{' NULLS LAST' if col.nullable else ''}")
    outer.append("q.run_uuid" + (' COLLATE "C"' if dialect == "postgresql" else ""))
    names = ", ".join(["q.run_uuid"] + [f"q.k{i}" for i in range(len(columns))])
    return _sql(
        "WITH a AS (",
        head,
        f") SELECT {names} FROM (SELECT * FROM a UNION ALL SELECT * FROM (",
        missing,
        f") b) q ORDER BY {', '.join(outer)} LIMIT ",
        _Param(limit),
    )


def _check_common(view_type: int, max_results: int, dialect: str) -> str:
    if dialect not in ("sqlite", "postgresql"):
        raise InvalidInputError(f"unknown SQL dialect {dialect!r}; expected sqlite or postgresql")
    if isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 1:
        raise InvalidInputError(f"max_results must be a positive integer, not {max_results!r}")
    if view_type == 1:
        return "lifecycle_stage = 'active'"
    if view_type == 2:
        return "lifecycle_stage = 'deleted'"
    if view_type == 3:
        return ""
    raise InvalidInputError(
        f"view_type must be 1 (ACTIVE_ONLY), 2 (DELETED_ONLY) or 3 (ALL), not {view_type!r}"
    )


def compile_run_search(
    *,
    experiment_ids: Sequence[int],
    filter_string: str,
    order_by: Sequence[str] | None,
    view_type: int,
    max_results: int,
    page_token: str | None,
    now_ms: int,
    dialect: str,
) -> SqlQuery:
    """Compile a run search to one SQL statement.

    The statement returns rows whose first column is ``run_uuid`` followed by the sort-key
    values (one per order_by item, then ``start_time``), in result order, at most
    ``max_results + 1`` rows: an extra row means there is a next page, whose token
    :func:`next_page_token` makes from the last row kept. Results are ordered by the order_by
    keys (missing values last in either direction), then ``start_time DESC``, then ``run_uuid``.

    Args:
        experiment_ids: the experiments to search.
        filter_string: the filter; empty matches every run.
        order_by: items such as ``"metrics.acc DESC"``; None or empty for the default order.
        view_type: 1 active runs, 2 deleted runs, 3 both.
        max_results: the page size.
        page_token: a token from :func:`next_page_token`, or None for the first page.
        now_ms: the current time in milliseconds: a RUNNING run whose heartbeat deadline is
            before it counts as CRASHED.
        dialect: ``"sqlite"`` or ``"postgresql"``.

    Raises:
        SearchSyntaxError: the filter, an order_by item or the page token is malformed.
        InvalidInputError: view_type, max_results, dialect or an experiment id is invalid.

    Example:
        >>> q = compile_run_search(experiment_ids=[1], filter_string="metrics.acc > 0.9",
        ...     order_by=["metrics.acc DESC"], view_type=1, max_results=10, page_token=None,
        ...     now_ms=0, dialect="sqlite")
        >>> q.params[-1]
        11
    """
    stage = _check_common(view_type, max_results, dialect)
    if isinstance(now_ms, bool) or not isinstance(now_ms, int):
        raise InvalidInputError(f"now_ms must be an integer, not {now_ms!r}")
    ids = []
    for eid in experiment_ids:
        try:
            if isinstance(eid, bool):
                raise ValueError
            ids.append(int(eid))
        except (TypeError, ValueError):
            raise InvalidInputError(f"invalid experiment id {eid!r}") from None
    tree = parse_filter(filter_string or "")
    orders = parse_order_by(order_by)

    def where(run_ref: str) -> list[SqlQuery]:
        conditions = [_sql("r.experiment_id IN (", _placeholders(ids), ")") if ids else _sql("1 = 0")]
        if stage:
            conditions.append(_sql("r." + stage))
        if tree != And(()):
            conditions.append(_Compiler("run", dialect, now_ms, filter_string or "", run_ref).node(tree))
        return conditions

    columns = []
    for item, order in zip(order_by or (), orders, strict=True):
        columns.append(_Compiler("run", dialect, now_ms, item).sort_column(order))
    columns.append(_SortColumn(_sql("r.start_time"), "int", False, False))
    if orders:
        driver = _Compiler("run", dialect, now_ms, (order_by or [""])[0]).driver(orders[0])
    else:
        driver = _Driver("runs r", None, _sql("r.start_time"), None, None)
    return _compile_runs(
        where=where("r.run_uuid"),
        where_driven=where("r.run_uuid" if driver.link is None else "o.run_uuid"),
        driver=driver,
        columns=columns,
        orders=orders,
        page_token=page_token,
        max_results=max_results,
        dialect=dialect,
    )


def compile_experiment_search(
    *,
    filter_string: str,
    order_by: Sequence[str] | None,
    view_type: int,
    max_results: int,
    page_token: str | None,
    dialect: str,
) -> SqlQuery:
    """Compile an experiment search to one SQL statement.

    Rows start with ``experiment_id``, then the sort-key values. Filters may use ``name``,
    ``creation_time``, ``last_update_time``, ``experiment_id`` (bare or as ``attributes.x``)
    and ``tags.<key>``; order_by may use the same attributes. The default order is
    ``creation_time DESC``; ties are broken by ``experiment_id`` ascending. Paging works as
    for runs, with :func:`next_page_token`.
    """
    stage = _check_common(view_type, max_results, dialect)
    tree = parse_filter(filter_string or "")
    orders = parse_order_by(order_by)
    where = [_sql("e." + stage)] if stage else [_sql("1 = 1")]
    if tree != And(()):
        where.append(_Compiler("experiment", dialect, 0, filter_string or "").node(tree))
    columns = []
    for item, order in zip(order_by or (), orders, strict=True):
        compiler = _Compiler("experiment", dialect, 0, item)
        if order.key.entity != "attribute":
            raise compiler.error(
                "experiments can be ordered by name, experiment_id, creation_time or last_update_time",
                order.key.position,
            )
        columns.append(compiler.sort_column(order))
    if not columns:
        columns.append(_SortColumn(_sql("e.creation_time"), "int", False, False))
    return _compile(
        table="experiments",
        alias="e",
        id_column="experiment_id",
        id_kind="int",
        where=where,
        columns=columns,
        orders=orders,
        page_token=page_token,
        max_results=max_results,
        dialect=dialect,
    )
