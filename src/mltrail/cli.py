"""The ``mltrail`` command: list, inspect, compare and export what was recorded.

Commands::

    mltrail experiments ls [--all] [--json]
    mltrail runs ls [--experiment NAME]... [--filter F] [--order-by O]... [--columns C]
                    [--max-results N] [--all] [--json]
    mltrail runs show RUN_ID [--json]
    mltrail runs compare RUN RUN... [--diff-only] [--json]
    mltrail runs diff A B [--all] [--json]
    mltrail runs export [--format csv|parquet] [--output FILE] [--experiment NAME]...
                        [--filter F] [--order-by O]... [--columns C] [--max-results N]
    mltrail metrics RUN_ID KEY [--json] [--no-table] [--width N]

Every command reads the store named by ``--tracking-uri`` (before or after the command), else
``MLTRAIL_TRACKING_URI``, else ``./mltrail-runs``; a local store that does not exist is an
error, never created. Exit codes: 0 on success, 1 for a :class:`MltrailError` (printed as
``error: <message>``, no traceback), 2 for a usage error.

``--json`` output is strict JSON (no ``NaN`` literals: non-finite floats are the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"``); times are integer milliseconds since the epoch.

Example:
    $ mltrail runs ls --experiment digits --filter "metrics.acc > 0.9" \\
          --order-by "metrics.acc DESC" --columns run_name,params.lr,metrics.acc
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

from mltrail.core.errors import (
    ExperimentNotFoundError,
    InvalidValueError,
    MltrailError,
    NotFoundError,
)

if TYPE_CHECKING:
    from mltrail.core.client import Client
    from mltrail.core.entities import Experiment, Run

_log = logging.getLogger("mltrail.cli")

SPARK_CHARS = "▁▂▃▄▅▆▇█"
_ASCII_SPARK_CHARS = "_.-:=+*#"
_PAGE = 50_000  # the most runs one search page may return
_LS_DEFAULT_MAX = 1000
_MISSING = "-"

# Tags shown by `runs diff` in their own sections rather than among the run's tags.
GIT_TAG_PREFIX = "mltrail.source.git."
ENVIRONMENT_TAGS = (
    "mltrail.python_version",
    "mltrail.platform",
    "mltrail.host",
    "mltrail.user",
    "mltrail.source.name",
    "mltrail.argv",
)
REQUIREMENTS_ARTIFACT = "environment/requirements.txt"


# ============================================================================ formatting
def _fmt_float(value: float) -> str:
    # repr is the shortest text that reads back as the same float: two values that print the
    # same in a comparison are the same.
    if math.isnan(value):
        return "nan"
    return repr(float(value))


def _fmt(value: Any) -> str:
    if value is None:
        return _MISSING
    if isinstance(value, float):
        return _fmt_float(value)
    return str(value)


def _fmt_time(ms: int | None, *, millis: bool = False) -> str:
    if ms is None:
        return _MISSING
    moment = _dt.datetime.fromtimestamp(ms / 1000).astimezone()
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{ms % 1000:03d}" if millis else text


def _iso_utc(ms: int | None) -> str:
    if ms is None:
        return ""
    moment = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds")


def _duration_s(start: int | None, end: int | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start) / 1000


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return _MISSING
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


def _fmt_size(size: int | None) -> str:
    if size is None:
        return _MISSING
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def _clip(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    return text[: max(width - 3, 1)] + "..."


def render_table(
    headers: Sequence[str] | None,
    rows: Iterable[Sequence[str]],
    *,
    indent: str = "",
    max_width: int | None = None,
) -> str:
    """Align ``rows`` under ``headers``, columns two spaces apart, with a rule below the headers.

    ``headers=None`` aligns the rows alone; cells longer than ``max_width`` are cut with "...".
    """
    body = [[_clip(str(c), max_width) for c in row] for row in rows]
    head = [str(h) for h in headers] if headers is not None else []
    ncols = len(head) if headers is not None else max((len(r) for r in body), default=0)
    widths = [len(h) for h in head] or [0] * ncols
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(cells)]
        return (indent + "  ".join(padded)).rstrip()

    out = []
    if headers is not None:
        out.append(line(head))
        out.append(line(["-" * w if h else "" for h, w in zip(head, widths, strict=True)]))
    out.extend(line(row) for row in body)
    return "\n".join(out)


def _jsonable(obj: Any) -> Any:
    """Make ``obj`` strict JSON: non-finite floats become "NaN" / "Infinity" / "-Infinity"."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return "NaN"
        if math.isinf(obj):
            return "Infinity" if obj > 0 else "-Infinity"
        return obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _print_json(obj: Any, out: IO[str]) -> None:
    out.write(json.dumps(_jsonable(obj), indent=2, allow_nan=False, ensure_ascii=False))
    out.write("\n")


def _maybe_json(text: str | None) -> Any:
    """A dataset's schema/profile/source is stored as JSON text: decode it where it is JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _tolerate_narrow_encoding(stream: IO[str]) -> None:
    """On a stream that cannot print Unicode (an ASCII locale), escape what it cannot print.

    User text (run names, tag values) must not turn into a UnicodeEncodeError traceback; the
    sparkline switches to ASCII characters on such a stream.
    """
    if _can_encode(stream, SPARK_CHARS):
        return
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="backslashreplace")
        except (ValueError, OSError):  # a stream that cannot change mid-way: leave it
            pass


def _can_encode(stream: IO[str], text: str) -> bool:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


# ============================================================================ sparkline
def sparkline(values: Sequence[float], width: int, chars: str = SPARK_CHARS) -> str:
    """Draw ``values`` as one line of block characters, at most ``width`` wide.

    More values than ``width`` are averaged in equal buckets (finite values only). The scale
    runs from the smallest to the largest finite value; NaN is a space, +inf the top block,
    -inf the bottom one; a constant series sits at mid height.

    Example:
        >>> sparkline([1.0, 2.0, 3.0, float("nan"), 8.0], 80)
        '▁▂▃ █'
    """
    n = len(values)
    if n == 0 or width <= 0:
        return ""
    points: list[float]
    if n <= width:
        points = [float(v) for v in values]
    else:
        points = []
        for i in range(width):
            chunk = values[i * n // width : (i + 1) * n // width]
            finite = [float(v) for v in chunk if math.isfinite(v)]
            if finite:
                points.append(math.fsum(finite) / len(finite))
            else:
                infinite = [float(v) for v in chunk if not math.isnan(v)]
                points.append(infinite[-1] if infinite else math.nan)
    finite_points = [v for v in points if math.isfinite(v)]
    lo = min(finite_points) if finite_points else 0.0
    hi = max(finite_points) if finite_points else 0.0
    top = len(chars) - 1
    out = []
    for v in points:
        if math.isnan(v):
            out.append(" ")
        elif math.isinf(v):
            out.append(chars[top] if v > 0 else chars[0])
        elif hi == lo or not math.isfinite(hi - lo):
            out.append(chars[top // 2])
        else:
            out.append(chars[min(top, max(0, round((v - lo) / (hi - lo) * top)))])
    return "".join(out)


# ============================================================================ store access
def _check_local_store(uri: str) -> None:
    """Refuse to read a local store that is not there (opening it would create an empty one)."""
    from urllib.parse import unquote, urlparse

    if uri.startswith("file://"):
        db = os.path.join(unquote(urlparse(uri).path), "mltrail.db")
    elif uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///") :]
    elif "://" not in uri and not uri.startswith(("sqlite:", "postgresql:", "postgres:")):
        db = os.path.join(os.path.expanduser(uri), "mltrail.db")
    else:
        return
    if not os.path.isfile(db):
        msg = (
            f"no mltrail store at {os.path.abspath(os.path.dirname(db) or '.')!s} "
            f"(looked for {os.path.basename(db)}); pass --tracking-uri or set MLTRAIL_TRACKING_URI"
        )
        raise NotFoundError(msg)


def _client(args: argparse.Namespace) -> Client:
    from mltrail.core.client import Client

    client = Client(args.tracking_uri)
    _check_local_store(client.tracking_uri)
    return client


def _all_experiments(client: Client, view_type: int) -> list[Experiment]:
    out: list[Experiment] = []
    token = None
    while True:
        page = client.search_experiments(view_type=view_type, max_results=_PAGE, page_token=token)
        out.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return out


def _experiment_ids(client: Client, names: Sequence[str] | None, view_type: int) -> list[str]:
    """Ids for ``--experiment`` values (a name, else an id); every experiment when none given."""
    if not names:
        return [e.experiment_id for e in _all_experiments(client, view_type)]
    ids: list[str] = []
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None and name.isdigit():
            try:
                exp = client.get_experiment(name)
            except NotFoundError:
                exp = None
        if exp is None:
            msg = f"no experiment named {name!r}; `mltrail experiments ls` lists them"
            raise ExperimentNotFoundError(msg)
        ids.append(exp.experiment_id)
    return ids


def _search(
    client: Client,
    experiment_ids: Sequence[str],
    filter_string: str,
    order_by: Sequence[str] | None,
    max_results: int | None,
    view_type: int,
) -> tuple[list[Run], bool]:
    """Runs matching the search, every page; also whether more matched than ``max_results``."""
    if not experiment_ids:
        return [], False
    runs: list[Run] = []
    token = None
    while True:
        want = _PAGE if max_results is None else min(_PAGE, max_results + 1 - len(runs))
        page = client.search_runs(
            list(experiment_ids), filter_string or "", view_type, want, order_by or None, token
        )
        runs.extend(page)
        token = getattr(page, "token", None)
        if not token or (max_results is not None and len(runs) > max_results):
            break
    if max_results is not None and len(runs) > max_results:
        return runs[:max_results], True
    return runs, False


class _ExperimentNames:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._names: dict[str, str | None] = {}

    def __call__(self, experiment_id: str) -> str | None:
        if experiment_id not in self._names:
            try:
                self._names[experiment_id] = self._client.get_experiment(experiment_id).name
            except NotFoundError:
                self._names[experiment_id] = None
        return self._names[experiment_id]


def _get_run(client: Client, run_id: str) -> Run:
    run_id = run_id.strip()
    if not run_id:
        msg = "a run id is required"
        raise InvalidValueError(msg)
    return client.get_run(run_id)


# ============================================================================ columns
# Attribute columns: name -> (value for JSON and export, formatter for tables).
def _attributes(experiment_name: Callable[[str], str | None]) -> dict[str, Callable[[Run], Any]]:
    return {
        "run_id": lambda r: r.info.run_id,
        "run_name": lambda r: r.info.run_name,
        "experiment_id": lambda r: r.info.experiment_id,
        "experiment_name": lambda r: experiment_name(r.info.experiment_id),
        "status": lambda r: str(r.info.status),
        "lifecycle_stage": lambda r: str(r.info.lifecycle_stage),
        "user_id": lambda r: r.info.user_id,
        "start_time": lambda r: r.info.start_time,
        "end_time": lambda r: r.info.end_time,
        "duration": lambda r: _duration_s(r.info.start_time, r.info.end_time),
        "artifact_uri": lambda r: r.info.artifact_uri,
        "parent_run_id": lambda r: r.parent_run_id,
    }


_ATTRIBUTE_ALIASES = {
    "name": "run_name",
    "run_uuid": "run_id",
    "id": "run_id",
    "experiment": "experiment_name",
    "user": "user_id",
    "start": "start_time",
    "end": "end_time",
    "created": "start_time",
}
_KIND_ALIASES = {
    "params": "params",
    "param": "params",
    "metrics": "metrics",
    "metric": "metrics",
    "tags": "tags",
    "tag": "tags",
}
_TIME_COLUMNS = ("start_time", "end_time")
DEFAULT_LS_COLUMNS = ("run_id", "run_name", "experiment_name", "status", "start_time", "duration")
_EXPORT_BASE = (
    "run_id",
    "run_name",
    "experiment_id",
    "experiment_name",
    "status",
    "user_id",
    "start_time",
    "end_time",
    "artifact_uri",
)


class Column:
    """One column of a run listing: an attribute, or ``params.``/``metrics.``/``tags.`` KEY."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind  # "attribute", "params", "metrics" or "tags"
        self.key = key

    @property
    def name(self) -> str:
        return self.key if self.kind == "attribute" else f"{self.kind}.{self.key}"

    def value(self, run: Run, attributes: dict[str, Callable[[Run], Any]]) -> Any:
        if self.kind == "attribute":
            return attributes[self.key](run)
        source = {"params": run.data.params, "metrics": run.data.metrics, "tags": run.data.tags}
        return source[self.kind].get(self.key)

    def values(self, runs: Sequence[Run], attributes: dict[str, Callable[[Run], Any]]) -> list[Any]:
        """This column's value for every run (None where a run lacks the key)."""
        if self.kind == "attribute":
            return [attributes[self.key](r) for r in runs]
        key = self.key
        if self.kind == "params":
            return [r.data.params.get(key) for r in runs]
        if self.kind == "metrics":
            return [r.data.metrics.get(key) for r in runs]
        return [r.data.tags.get(key) for r in runs]

    def cell(self, run: Run, attributes: dict[str, Callable[[Run], Any]]) -> str:
        value = self.value(run, attributes)
        if self.key in _TIME_COLUMNS and self.kind == "attribute":
            return _fmt_time(value)
        if self.key == "duration" and self.kind == "attribute":
            return _fmt_duration(value)
        return _fmt(value)

    def __repr__(self) -> str:
        return f"Column({self.name!r})"


def _split_columns(specs: Sequence[str]) -> list[str]:
    """Split comma-separated column specs; commas inside backticks belong to the key."""
    out: list[str] = []
    for spec in specs:
        current: list[str] = []
        quoted = False
        for ch in spec:
            if ch == "`":
                quoted = not quoted
            if ch == "," and not quoted:
                out.append("".join(current).strip())
                current = []
            else:
                current.append(ch)
        out.append("".join(current).strip())
    return [c for c in out if c]


def parse_columns(specs: Sequence[str], runs: Sequence[Run]) -> list[Column]:
    """Resolve ``--columns`` specs (``params.lr``, ``metrics.*``, ``status``...) for ``runs``."""
    known = set(_attributes(lambda _e: None))
    columns: list[Column] = []
    for spec in _split_columns(specs):
        head, dot, rest = spec.partition(".")
        kind = _KIND_ALIASES.get(head.lower()) if dot else None
        if kind is not None:
            key = rest.strip()
            if len(key) >= 2 and key[0] == key[-1] == "`":
                key = key[1:-1]
            if not key:
                msg = f"column {spec!r} names no key; write e.g. {head}.lr"
                raise InvalidValueError(msg)
            if key == "*":
                keys = sorted({k for r in runs for k in getattr(r.data, kind)})
                columns.extend(Column(kind, k) for k in keys)
            else:
                columns.append(Column(kind, key))
            continue
        name = spec[len("attributes.") :] if spec.lower().startswith(("attributes.", "attribute.")) else spec
        name = name.split(".", 1)[1] if name.lower().startswith("attribute.") else name
        name = _ATTRIBUTE_ALIASES.get(name.lower(), name.lower())
        if name not in known:
            msg = (
                f"unknown column {spec!r}; use params.KEY, metrics.KEY, tags.KEY (KEY may be *) "
                f"or one of: {', '.join(sorted(known))}"
            )
            raise InvalidValueError(msg)
        columns.append(Column("attribute", name))
    if not columns:
        msg = "--columns names no column"
        raise InvalidValueError(msg)
    return columns


def _run_record(run: Run, experiment_name: str | None) -> dict[str, Any]:
    """The stable JSON shape of a run in listings."""
    info = run.info
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "experiment_name": experiment_name,
        "status": str(info.status),
        "lifecycle_stage": str(info.lifecycle_stage),
        "user_id": info.user_id,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "artifact_uri": info.artifact_uri,
        "parent_run_id": run.parent_run_id,
        "params": dict(sorted(run.data.params.items())),
        "metrics": dict(sorted(run.data.metrics.items())),
        "tags": dict(sorted(run.data.tags.items())),
    }


# ============================================================================ commands
def cmd_experiments_ls(args: argparse.Namespace, out: IO[str]) -> int:
    from mltrail.core.entities import ViewType

    client = _client(args)
    view = ViewType.ALL if args.all else ViewType.ACTIVE_ONLY
    experiments = sorted(_all_experiments(client, view), key=lambda e: _id_sort_key(e.experiment_id))
    if args.json:
        _print_json(
            [
                {
                    "experiment_id": e.experiment_id,
                    "name": e.name,
                    "artifact_location": e.artifact_location,
                    "lifecycle_stage": str(e.lifecycle_stage),
                    "creation_time": e.creation_time,
                    "last_update_time": e.last_update_time,
                    "tags": dict(sorted(e.tags.items())),
                }
                for e in experiments
            ],
            out,
        )
        return 0
    if not experiments:
        out.write("no experiments\n")
        return 0
    headers = ["id", "name", "created", "artifact_location", "tags"]
    if args.all:
        headers.insert(2, "stage")
    rows = []
    for e in experiments:
        row = [
            e.experiment_id,
            e.name,
            _fmt_time(e.creation_time),
            e.artifact_location,
            ", ".join(f"{k}={v}" for k, v in sorted(e.tags.items())) or _MISSING,
        ]
        if args.all:
            row.insert(2, str(e.lifecycle_stage))
        rows.append(row)
    out.write(render_table(headers, rows) + "\n")
    return 0


def _id_sort_key(experiment_id: str) -> tuple[int, int | str]:
    return (0, int(experiment_id)) if experiment_id.isdigit() else (1, experiment_id)


def _searched_runs(
    args: argparse.Namespace, client: Client, max_results: int | None
) -> tuple[list[Run], bool]:
    from mltrail.core.entities import ViewType

    view = ViewType.ALL if getattr(args, "all", False) else ViewType.ACTIVE_ONLY
    ids = _experiment_ids(client, args.experiment, view)
    return _search(client, ids, args.filter or "", args.order_by, max_results, view)


def cmd_runs_ls(args: argparse.Namespace, out: IO[str]) -> int:
    client = _client(args)
    limit = args.max_results if args.max_results is not None else _LS_DEFAULT_MAX
    runs, more = _searched_runs(args, client, limit)
    if more:
        sys.stderr.write(f"note: showing the first {limit} matching runs; pass --max-results to see more\n")
    names = _ExperimentNames(client)
    attributes = _attributes(names)
    if args.json:
        if args.columns:
            columns = parse_columns(args.columns, runs)
            _print_json([{c.name: c.value(r, attributes) for c in columns} for r in runs], out)
        else:
            _print_json([_run_record(r, names(r.info.experiment_id)) for r in runs], out)
        return 0
    columns = parse_columns(args.columns or list(DEFAULT_LS_COLUMNS), runs)
    if not runs:
        out.write("no runs found\n")
        return 0
    headers = ["experiment" if c.name == "experiment_name" else c.name for c in columns]
    rows = [[c.cell(r, attributes) for c in columns] for r in runs]
    out.write(render_table(headers, rows, max_width=60) + "\n")
    return 0


def _artifact_files(client: Client, run_id: str, path: str = "") -> Iterator[Any]:
    for info in client.list_artifacts(run_id, path or None):
        if info.is_dir:
            yield from _artifact_files(client, run_id, info.path)
        else:
            yield info


def _datasets(run: Run) -> list[dict[str, Any]]:
    out = []
    for item in run.inputs.dataset_inputs:
        ds = item.dataset
        out.append(
            {
                "name": ds.name,
                "digest": ds.digest,
                "context": item.tags.get("mltrail.data.context"),
                "source_type": ds.source_type,
                "source": _maybe_json(ds.source),
                "schema": _maybe_json(ds.schema),
                "profile": _maybe_json(ds.profile),
            }
        )
    return out


def cmd_runs_show(args: argparse.Namespace, out: IO[str]) -> int:
    client = _client(args)
    run = _get_run(client, args.run_id)
    names = _ExperimentNames(client)
    info = run.info
    artifacts = [{"path": f.path, "size": f.file_size} for f in _artifact_files(client, info.run_id)]
    datasets = _datasets(run)
    summaries = run.data.metric_summaries
    metrics: dict[str, dict[str, Any]] = {}
    for key in sorted(run.data.metrics):
        s = summaries.get(key)
        metrics[key] = {
            "last": run.data.metrics[key],
            "step": s.step if s else None,
            "timestamp": s.timestamp if s else None,
            "min": s.min if s else None,
            "max": s.max if s else None,
            "count": s.count if s else None,
        }
    if args.json:
        record = _run_record(run, names(info.experiment_id))
        record["metrics"] = metrics
        record["artifacts"] = artifacts
        record["datasets"] = datasets
        _print_json(record, out)
        return 0

    exp_name = names(info.experiment_id)
    lines = [
        f"Run {info.run_id}",
        render_table(
            None,
            [
                ["name", info.run_name],
                ["experiment", f"{exp_name} (id {info.experiment_id})" if exp_name else info.experiment_id],
                ["status", str(info.status)],
                ["started", _fmt_time(info.start_time)],
                ["ended", _fmt_time(info.end_time)],
                ["duration", _fmt_duration(_duration_s(info.start_time, info.end_time))],
                ["user", info.user_id or _MISSING],
                ["artifact_uri", info.artifact_uri],
                *([["parent_run_id", run.parent_run_id]] if run.parent_run_id else []),
                *(
                    [["lifecycle_stage", str(info.lifecycle_stage)]]
                    if info.lifecycle_stage != "active"
                    else []
                ),
            ],
            indent="  ",
        ),
    ]

    def section(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        lines.append("")
        if not rows:
            lines.append(f"{title}: none")
            return
        lines.append(f"{title} ({len(rows)})")
        lines.append(render_table(headers, rows, indent="  "))

    section("Params", ["key", "value"], [[k, v] for k, v in sorted(run.data.params.items())])
    section(
        "Metrics",
        ["key", "last", "step", "min", "max", "count"],
        [
            [k, _fmt(m["last"]), _fmt(m["step"]), _fmt(m["min"]), _fmt(m["max"]), _fmt(m["count"])]
            for k, m in metrics.items()
        ],
    )
    tags = sorted(run.data.tags.items(), key=lambda kv: (kv[0].startswith("mltrail."), kv[0]))
    section("Tags", ["key", "value"], [[k, v] for k, v in tags])
    section(
        "Datasets",
        ["name", "digest", "context", "source_type", "source", "rows"],
        [
            [
                d["name"],
                d["digest"],
                _fmt(d["context"]),
                d["source_type"],
                _fmt(d["source"].get("source") if isinstance(d["source"], dict) else d["source"]),
                _fmt(d["profile"].get("num_rows") if isinstance(d["profile"], dict) else None),
            ]
            for d in datasets
        ],
    )
    section("Artifacts", ["path", "size"], [[a["path"], _fmt_size(a["size"])] for a in artifacts])
    out.write("\n".join(lines) + "\n")
    return 0


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b) and type(a) is type(b)


def _run_labels(runs: Sequence[Run]) -> list[str]:
    return [f"{r.info.run_name} ({r.info.run_id[:8]})" for r in runs]


def cmd_runs_compare(args: argparse.Namespace, out: IO[str]) -> int:
    if len(args.runs) < 2:
        raise _UsageError("runs compare needs at least two run ids")
    client = _client(args)
    runs = [_get_run(client, r) for r in args.runs]

    def rows_for(kind: str) -> list[dict[str, Any]]:
        keys = sorted({k for r in runs for k in getattr(r.data, kind)})
        rows = []
        for key in keys:
            values = [getattr(r.data, kind).get(key) for r in runs]
            differs = any(not _same(values[0], v) for v in values[1:])
            rows.append({"key": key, "values": values, "differs": differs})
        return rows

    params, metrics = rows_for("params"), rows_for("metrics")
    if args.json:
        _print_json(
            {
                "runs": [
                    {
                        "run_id": r.info.run_id,
                        "run_name": r.info.run_name,
                        "experiment_id": r.info.experiment_id,
                        "status": str(r.info.status),
                    }
                    for r in runs
                ],
                "params": params,
                "metrics": metrics,
            },
            out,
        )
        return 0
    labels = _run_labels(runs)
    lines: list[str] = []
    for title, rows in (("Params", params), ("Metrics", metrics)):
        shown = [row for row in rows if row["differs"] or not args.diff_only]
        if lines:
            lines.append("")
        differing = sum(1 for row in rows if row["differs"])
        if not rows:
            lines.append(f"{title}: none")
            continue
        lines.append(f"{title} ({differing} of {len(rows)} differ)")
        if not shown:
            continue
        lines.append(
            render_table(
                ["", "key", *labels],
                [["*" if row["differs"] else "", row["key"], *map(_fmt, row["values"])] for row in shown],
                indent="  ",
            )
        )
    lines.append("")
    lines.append("* values differ between the runs")
    out.write("\n".join(lines) + "\n")
    return 0


def _diff_entries(a: dict[str, Any], b: dict[str, Any], show_all: bool) -> list[dict[str, Any]]:
    entries = []
    for key in sorted(set(a) | set(b)):
        if key not in b:
            change = "only_a"
        elif key not in a:
            change = "only_b"
        elif _same(a[key], b[key]):
            change = "same"
        else:
            change = "changed"
        if change != "same" or show_all:
            entries.append({"key": key, "a": a.get(key), "b": b.get(key), "change": change})
    return entries


def _requirements(client: Client, run_id: str) -> dict[str, tuple[str, str]] | None:
    """The run's ``environment/requirements.txt`` as {normalised name: (name, version)}."""
    import re

    with tempfile.TemporaryDirectory(prefix="mltrail-cli-") as tmp:
        try:
            path = client.download_artifacts(run_id, REQUIREMENTS_ARTIFACT, tmp)
        except NotFoundError:
            return None
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    packages: dict[str, tuple[str, str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            name, version = line, ""
        name = name.strip()
        packages[re.sub(r"[-_.]+", "-", name).lower()] = (name, version.strip())
    return packages


def cmd_runs_diff(args: argparse.Namespace, out: IO[str]) -> int:
    client = _client(args)
    a, b = _get_run(client, args.run_a), _get_run(client, args.run_b)

    def split_tags(run: Run) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        tags, env, git = {}, {}, {}
        for key, value in run.data.tags.items():
            if key.startswith(GIT_TAG_PREFIX):
                git[key[len(GIT_TAG_PREFIX) :]] = value
            elif key in ENVIRONMENT_TAGS:
                env[key[len("mltrail.") :]] = value
            elif key != "mltrail.runName":  # the name is in the header
                tags[key] = value
        return tags, env, git

    tags_a, env_a, git_a = split_tags(a)
    tags_b, env_b, git_b = split_tags(b)
    req_a, req_b = _requirements(client, a.info.run_id), _requirements(client, b.info.run_id)
    packages = None
    if req_a is not None and req_b is not None:
        by_key = _diff_entries(
            {k: v[1] for k, v in req_a.items()}, {k: v[1] for k, v in req_b.items()}, args.all
        )
        for entry in by_key:  # show the name as the run recorded it, not the normalised key
            entry["key"] = (req_a.get(entry["key"]) or req_b[entry["key"]])[0]
        packages = by_key
    sections: dict[str, Any] = {
        "params": _diff_entries(dict(a.data.params), dict(b.data.params), args.all),
        "tags": _diff_entries(tags_a, tags_b, args.all),
        "environment": _diff_entries(env_a, env_b, args.all),
        "git": _diff_entries(git_a, git_b, args.all),
        "packages": packages,
    }
    if args.json:
        result: dict[str, Any] = {
            "a": {"run_id": a.info.run_id, "run_name": a.info.run_name},
            "b": {"run_id": b.info.run_id, "run_name": b.info.run_name},
            **sections,
            "packages_recorded": {"a": req_a is not None, "b": req_b is not None},
        }
        _print_json(result, out)
        return 0

    marks = {"changed": "~", "only_a": "-", "only_b": "+", "same": " "}
    lines = [
        f"A  {a.info.run_id}  {a.info.run_name}",
        f"B  {b.info.run_id}  {b.info.run_name}",
        "(~ differs, - only in A, + only in B)",
    ]
    titles = {
        "params": "Params",
        "tags": "Tags",
        "environment": "Environment",
        "git": "Git",
        "packages": f"Packages ({REQUIREMENTS_ARTIFACT})",
    }
    for name, title in titles.items():
        lines.append("")
        entries = sections[name]
        if entries is None:
            recorded = [label for label, req in (("A", req_a), ("B", req_b)) if req is not None]
            note = f"recorded only for {recorded[0]}" if recorded else "recorded for neither run"
            lines.append(f"{title}: {note}")
            continue
        if not any(e["change"] != "same" for e in entries):
            lines.append(f"{title}: no differences")
            if not entries:
                continue
        else:
            lines.append(title)
        lines.append(
            render_table(
                ["", "key", "A", "B"],
                [[marks[e["change"]], e["key"], _fmt(e["a"]), _fmt(e["b"])] for e in entries],
                indent="  ",
            )
        )
    out.write("\n".join(lines) + "\n")
    return 0


def cmd_metrics(args: argparse.Namespace, out: IO[str]) -> int:
    client = _client(args)
    run = _get_run(client, args.run_id)
    history = client.get_metric_history(run.info.run_id, args.key)
    if len(history) == 0 and args.key not in run.data.metrics:
        known = ", ".join(sorted(run.data.metrics)) or "none"
        msg = f"run {run.info.run_id} has no metric {args.key!r} (its metrics: {known})"
        raise NotFoundError(msg)
    steps = [int(s) for s in history.steps.tolist()]
    values = [float(v) for v in history.values.tolist()]
    stamps = [int(t) for t in history.timestamps.tolist()]
    if args.json:
        _print_json(
            {
                "run_id": run.info.run_id,
                "key": args.key,
                "points": [
                    {"step": s, "value": v, "timestamp": t}
                    for s, v, t in zip(steps, values, stamps, strict=True)
                ],
            },
            out,
        )
        return 0
    lines = [f"{args.key}  run {run.info.run_id} ({run.info.run_name}), {len(values)} points"]
    if not args.no_table:
        lines.append(
            render_table(
                ["step", "value", "timestamp"],
                [
                    [str(s), _fmt_float(v), _fmt_time(t, millis=True)]
                    for s, v, t in zip(steps, values, stamps, strict=True)
                ],
            )
        )
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        lines.append(
            f"min {_fmt_float(min(finite))}  max {_fmt_float(max(finite))}  "
            f"last {_fmt_float(values[-1])} (step {steps[-1]})"
        )
    width = args.width if args.width is not None else max(10, shutil.get_terminal_size((80, 24)).columns - 1)
    chars = SPARK_CHARS if _can_encode(out, SPARK_CHARS) else _ASCII_SPARK_CHARS
    lines.append(sparkline(values, width, chars))
    out.write("\n".join(lines) + "\n")
    return 0


def cmd_runs_export(args: argparse.Namespace, out: IO[str]) -> int:
    fmt = args.format
    if fmt is None:
        fmt = "parquet" if args.output and args.output.lower().endswith((".parquet", ".pq")) else "csv"
    if fmt == "parquet" and not args.output:
        raise _UsageError("--format parquet needs --output FILE (parquet is not written to a terminal)")
    pa: Any = None
    pq: Any = None
    if fmt == "parquet":
        from mltrail.core.errors import require

        pa = require("pyarrow", "pandas")
        pq = require("pyarrow.parquet", "pandas")
    client = _client(args)
    runs, _ = _searched_runs(args, client, args.max_results)
    names = _ExperimentNames(client)
    attributes = _attributes(names)
    if args.columns:
        columns = parse_columns(args.columns, runs)
    else:
        columns = [Column("attribute", name) for name in _EXPORT_BASE]
        for kind in ("metrics", "params", "tags"):
            keys = sorted({k for r in runs for k in getattr(r.data, kind)})
            columns.extend(Column(kind, k) for k in keys)
    table = {c.name: c.values(runs, attributes) for c in columns}
    try:
        if fmt == "csv" and not args.output:
            _write_csv(out, columns, table, len(runs))
        elif fmt == "csv":
            with open(args.output, "w", newline="", encoding="utf-8") as fh:
                _write_csv(fh, columns, table, len(runs))
        else:
            arrays = {}
            for c in columns:
                if c.kind == "attribute" and c.key in _TIME_COLUMNS:
                    typ = pa.timestamp("ms", tz="UTC")
                elif c.kind == "metrics" or (c.kind == "attribute" and c.key == "duration"):
                    typ = pa.float64()
                else:
                    typ = pa.string()
                arrays[c.name] = pa.array(table[c.name], type=typ)
            pq.write_table(pa.table(arrays), args.output)
    except OSError as exc:
        if not args.output:
            raise
        msg = f"could not write {args.output}: {exc}"
        raise InvalidValueError(msg) from exc
    if args.output:
        sys.stderr.write(f"wrote {len(runs)} runs to {args.output} ({fmt})\n")
    return 0


def _write_csv(fh: IO[str], columns: Sequence[Column], table: dict[str, list[Any]], n: int) -> None:
    # Each column is turned into text in one pass, then the rows are written all at once.
    texts = []
    for c in columns:
        values = table[c.name]
        if c.kind == "attribute" and c.key in _TIME_COLUMNS:
            texts.append([_iso_utc(v) for v in values])
        else:
            texts.append(
                ["" if v is None else _fmt_float(v) if isinstance(v, float) else str(v) for v in values]
            )
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow([c.name for c in columns])
    writer.writerows(zip(*texts, strict=True) if texts else ([] for _ in range(n)))


# ============================================================================ parser
class _UsageError(Exception):
    """A usage error found after parsing: reported as argparse reports its own (exit 2)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``mltrail`` argument parser."""
    from mltrail import __version__

    # --tracking-uri is accepted before or after the command. Each parser gets its own option
    # (parents= would share one action object, and one default, between them); a sub-command's
    # default is SUPPRESS so that leaving it out there keeps a value given before the command.
    def tracking_uri_option(p: argparse.ArgumentParser, default: Any) -> None:
        p.add_argument(
            "--tracking-uri",
            default=default,
            metavar="URI",
            help="store to read: a directory, sqlite:///file.db or postgresql://... "
            "(default: $MLTRAIL_TRACKING_URI, else ./mltrail-runs)",
        )

    parser = argparse.ArgumentParser(
        prog="mltrail",
        description="Inspect, compare and export the runs mltrail recorded.",
    )
    tracking_uri_option(parser, None)

    def sub(group: Any, name: str, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, help=help, description=help)
        tracking_uri_option(p, argparse.SUPPRESS)
        return p

    parser.add_argument("--version", action="version", version=f"mltrail {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log mltrail's debug messages to stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")

    def search_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--experiment",
            "-e",
            action="append",
            metavar="NAME",
            help="experiment name (or id); repeat for several (default: every experiment)",
        )
        p.add_argument(
            "--filter",
            "-f",
            default="",
            metavar="FILTER",
            help="search filter, e.g. \"metrics.acc > 0.9 AND params.model = 'rf'\"",
        )
        p.add_argument(
            "--order-by",
            action="append",
            metavar="ORDER",
            help="ordering, e.g. 'metrics.acc DESC'; repeat for ties (default: newest first)",
        )
        p.add_argument(
            "--columns",
            "-c",
            action="append",
            metavar="COLS",
            help="comma-separated columns: run_id, run_name, experiment_name, status, start_time, "
            "end_time, duration, user_id, artifact_uri, params.KEY, metrics.KEY, tags.KEY "
            "(KEY may be *)",
        )
        p.add_argument("--all", action="store_true", help="include deleted runs and experiments")

    exps = sub(commands, "experiments", "list experiments (ls)")
    exps_cmds = exps.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    exps_cmds.required = True
    p = sub(exps_cmds, "ls", "list experiments")
    p.add_argument("--all", action="store_true", help="include deleted experiments")
    json_flag(p)
    p.set_defaults(handler=cmd_experiments_ls, parser=p)

    runs = sub(commands, "runs", "list, show, compare, diff and export runs")
    runs_cmds = runs.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
    runs_cmds.required = True

    p = sub(runs_cmds, "ls", "list runs")
    search_options(p)
    p.add_argument(
        "--max-results",
        "-n",
        type=_positive_int,
        metavar="N",
        help=f"list at most N runs (default: {_LS_DEFAULT_MAX})",
    )
    json_flag(p)
    p.set_defaults(handler=cmd_runs_ls, parser=p)

    p = sub(runs_cmds, "show", "a run's params, metrics, tags, datasets and artifacts")
    p.add_argument("run_id", metavar="RUN_ID")
    json_flag(p)
    p.set_defaults(handler=cmd_runs_show, parser=p)

    p = sub(runs_cmds, "compare", "params and latest metrics of runs side by side")
    p.add_argument("runs", nargs="+", metavar="RUN_ID")
    p.add_argument("--diff-only", action="store_true", help="show only the rows that differ")
    json_flag(p)
    p.set_defaults(handler=cmd_runs_compare, parser=p)

    p = sub(runs_cmds, "diff", "param, tag, environment, git and package differences of two runs")
    p.add_argument("run_a", metavar="A")
    p.add_argument("run_b", metavar="B")
    p.add_argument("--all", action="store_true", help="show equal entries too")
    json_flag(p)
    p.set_defaults(handler=cmd_runs_diff, parser=p)

    p = sub(runs_cmds, "export", "write runs as CSV or Parquet")
    p.add_argument(
        "--format",
        choices=("csv", "parquet"),
        help="output format (default: from the --output extension, else csv)",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="file to write (default: stdout, csv only)")
    search_options(p)
    p.add_argument(
        "--max-results", "-n", type=_positive_int, metavar="N", help="export at most N runs (default: all)"
    )
    p.set_defaults(handler=cmd_runs_export, parser=p)

    p = sub(commands, "metrics", "a metric's history: table and sparkline")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--no-table", action="store_true", help="print only the summary and the sparkline")
    p.add_argument(
        "--width", type=_positive_int, metavar="N", help="sparkline width (default: terminal width)"
    )
    json_flag(p)
    p.set_defaults(handler=cmd_metrics, parser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mltrail`` command; return its exit status (0 ok, 1 mltrail error, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("mltrail")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
    out = sys.stdout
    _tolerate_narrow_encoding(out)
    try:
        code = int(args.handler(args, out))
        out.flush()
        return code
    except _UsageError as exc:
        try:
            args.parser.error(str(exc))  # prints the command's usage line and the message
        except SystemExit as stop:
            return stop.code if isinstance(stop.code, int) else 2
        return 2  # pragma: no cover - ArgumentParser.error always exits
    except MltrailError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except BrokenPipeError:
        # The reader went away (`mltrail runs ls | head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130
