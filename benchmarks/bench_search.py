"""Search benchmark: filtered + ordered top-100 queries and a full export over 100,000 runs.

Both stores hold the same runs (same names, params, metrics, tags; generated from one seed):
each run has 5 params (p1..p5), 5 metrics (m1..m5, one point each) and 3 tags (t1..t3).

Setup (not timed):

* mltrail: the store's own API: ``Store.create_run`` per run, then the params, tags and metric
  points as a few ``WriteBatch`` es (what the background writer sends), on SQLite.
* MLflow: MLflow creates its SQLite database and one run through its own API
  (``MlflowClient.log_batch``); the 100,000 runs are then inserted with ``executemany`` straight
  into MLflow's ``runs``, ``params``, ``tags``, ``metrics`` and ``latest_metrics`` tables, each row
  shaped like the one MLflow wrote for its own run. (MLflow's API needs hours for 100k runs on
  SQLite; direct inserts are the usual way to seed a large MLflow store.)

Timed, in a fresh process per tracker: each query once cold (first after opening the store),
then the median of several repeats (MLflow: one repeat, its queries take seconds to minutes at
this size); the full export (every run as a pandas DataFrame) likewise (MLflow: once).
The top-100 run names of each query are compared between the two trackers.

MLflow's search over 100,000 runs on SQLite takes minutes per query on a 2-core machine (four
queries, cold and warm, had not finished after 45 minutes), so ``run_all.py`` compares the two
at 10,000 runs and times mltrail alone at 100,000; ``--mlflow-query N`` times MLflow on query N
alone (cold and one warm repeat, no export), which is feasible at 100,000.

Run: ``python benchmarks/bench_search.py [--runs 100000] [--workdir DIR] [--mltrail-only | --mlflow-query N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EXPERIMENT = "search-bench"
QUERIES: list[tuple[str, str, list[str]]] = [
    (
        "metric > x AND param = 'x', by metric DESC",
        "metrics.m1 > 0.5 AND params.p1 = 'x'",
        ["metrics.m2 DESC"],
    ),
    ("tag = AND metric <, by metric ASC", "tags.t1 = 'team-3' AND metrics.m3 < 0.2", ["metrics.m4 ASC"]),
    ("param = (half the runs), by start_time DESC", "params.p4 = 'adam'", ["attributes.start_time DESC"]),
    (
        "metric range, by param ASC",
        "metrics.m5 >= 0.25 AND metrics.m5 < 0.75",
        ["params.p3 ASC", "metrics.m1 DESC"],
    ),
]
BASE_TIME = 1_700_000_000_000


def generate(n: int) -> list[dict[str, Any]]:
    """The runs, the same for every tracker (fixed seed)."""
    rng = random.Random(20240601)
    runs = []
    for i in range(n):
        runs.append(
            {
                "name": f"run-{i:06d}",
                "start": BASE_TIME + i * 1000,
                "params": {
                    "p1": rng.choice("xyzw"),
                    "p2": str(rng.randrange(10)),
                    "p3": f"{rng.randrange(1000):04d}",
                    "p4": rng.choice(("adam", "sgd")),
                    "p5": f"{rng.random():.6f}",
                },
                "metrics": {f"m{j}": rng.random() for j in range(1, 6)},
                "tags": {
                    "t1": f"team-{rng.randrange(5)}",
                    "t2": rng.choice(("gpu", "cpu")),
                    "t3": f"v{rng.randrange(3)}",
                },
            }
        )
    return runs


# ---------------------------------------------------------------------- setup
def setup_mltrail(workdir: Path, n: int) -> dict[str, Any]:
    import uuid

    import numpy as np

    from mltrail.core.store import get_store
    from mltrail.core.store.base import MetricChunk, WriteBatch

    start = time.perf_counter()
    store = get_store(str(workdir / "mltrail-store"))
    exp_id = store.create_experiment(EXPERIMENT, None, {})
    runs = generate(n)
    batch = WriteBatch()
    for k, run in enumerate(runs):
        run_id = uuid.uuid4().hex
        tags = dict(run["tags"], **{"mltrail.runName": run["name"], "mltrail.user": "bench"})
        store.create_run(
            experiment_id=exp_id,
            run_id=run_id,
            run_name=run["name"],
            user_id="bench",
            start_time=run["start"],
            tags=tags,
            parent_run_id=None,
            resume_key=None,
            heartbeat_deadline=None,
        )
        batch.params.extend((run_id, key, value) for key, value in run["params"].items())
        for key, value in run["metrics"].items():
            batch.metrics.append(
                MetricChunk(
                    run_id,
                    key,
                    np.zeros(1, dtype=np.int64),
                    np.array([run["start"]], dtype=np.int64),
                    np.array([value], dtype=np.float64),
                )
            )
        if len(batch.params) >= 50_000 or k == n - 1:
            store.write_batch(batch)
            batch = WriteBatch()
    return {"experiment_id": exp_id, "setup_seconds": time.perf_counter() - start}


def setup_mlflow(workdir: Path, n: int) -> dict[str, Any]:
    import logging
    import sqlite3
    import uuid

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    start = time.perf_counter()
    db_path = workdir / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db_path}")
    exp_id = client.create_experiment(EXPERIMENT)
    runs = generate(n)
    first = runs[0]
    created = client.create_run(exp_id, start_time=first["start"], run_name=first["name"])
    rid = created.info.run_id
    client.log_batch(
        rid,
        metrics=[Metric(k, v, first["start"], 0) for k, v in first["metrics"].items()],
        params=[Param(k, v) for k, v in first["params"].items()],
        tags=[RunTag(k, v) for k, v in first["tags"].items()],
    )
    client.set_terminated(rid, end_time=first["start"] + 500)
    db = sqlite3.connect(db_path)

    def template(table: str) -> tuple[list[str], list[dict[str, Any]]]:
        cur = db.execute(f"SELECT * FROM {table} WHERE run_uuid = ?", (rid,))
        cols = [d[0] for d in cur.description]
        return cols, [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    tables = {t: template(t) for t in ("runs", "params", "tags", "metrics", "latest_metrics")}
    rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in tables}
    for run in runs[1:]:
        run_id = uuid.uuid4().hex
        cols, (run_row,) = tables["runs"]
        row = dict(
            run_row, run_uuid=run_id, name=run["name"], start_time=run["start"], end_time=run["start"] + 500
        )
        row["artifact_uri"] = str(run_row["artifact_uri"]).replace(rid, run_id)
        rows["runs"].append(tuple(row[c] for c in cols))
        for table, source in (
            ("params", run["params"]),
            ("metrics", run["metrics"]),
            ("latest_metrics", run["metrics"]),
        ):
            cols, templates = tables[table]
            by_key = {t["key"]: t for t in templates}
            for key, value in source.items():
                row = dict(by_key[key], run_uuid=run_id, value=value)
                if "timestamp" in row:
                    row["timestamp"] = run["start"]
                rows[table].append(tuple(row[c] for c in cols))
        cols, templates = tables["tags"]
        by_key = {t["key"]: t for t in templates}
        for key, tpl in by_key.items():
            value = run["name"] if key == "mlflow.runName" else run["tags"].get(key, tpl["value"])
            row = dict(tpl, run_uuid=run_id, value=value)
            rows["tags"].append(tuple(row[c] for c in cols))
    with db:
        for table, (cols, _) in tables.items():
            marks = ",".join("?" * len(cols))
            db.executemany(f"INSERT INTO {table} ({','.join(cols)}) VALUES ({marks})", rows[table])
    db.close()
    return {"experiment_id": exp_id, "setup_seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------- queries
def _time(fn: Any, repeats: int) -> tuple[Any, float, float]:
    t = time.perf_counter()
    result = fn()
    cold = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return result, cold, statistics.median(times) if times else cold


def query_mltrail(workdir: Path, exp_id: str, n: int, repeats: int) -> dict[str, Any]:
    import mltrail

    mltrail.set_tracking_uri(str(workdir / "mltrail-store"))
    mltrail.get_experiment(exp_id)  # open the store
    out: dict[str, Any] = {"queries": []}
    for label, filt, order in QUERIES:

        def search(filt: str = filt, order: list[str] = order) -> Any:
            return mltrail.search_runs(
                experiment_ids=[exp_id],
                filter_string=filt,
                order_by=order,
                max_results=100,
                output_format="list",
            )

        runs, cold, warm = _time(search, repeats)
        out["queries"].append(
            {"label": label, "cold_s": cold, "median_s": warm, "names": [r.info.run_name for r in runs]}
        )

    def export() -> Any:
        return mltrail.search_runs(experiment_ids=[exp_id], max_results=n, output_format="pandas")

    frame, cold, warm = _time(export, max(1, repeats // 3))
    out["export"] = {"cold_s": cold, "median_s": warm, "rows": len(frame), "columns": len(frame.columns)}
    return out


def query_mlflow(workdir: Path, exp_id: str, n: int, repeats: int, only: int | None = None) -> dict[str, Any]:
    import logging

    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    client.get_experiment(exp_id)
    out: dict[str, Any] = {"queries": []}
    for number, (label, filt, order) in enumerate(QUERIES, 1):
        if only is not None and number != only:
            continue

        def search(filt: str = filt, order: list[str] = order) -> Any:
            return client.search_runs([exp_id], filter_string=filt, order_by=order, max_results=100)

        # MLflow takes seconds to minutes per query at 100k runs: one warm repeat after the cold one.
        runs, cold, warm = _time(search, min(repeats, 1))
        out["queries"].append(
            {"label": label, "cold_s": cold, "median_s": warm, "names": [r.info.run_name for r in runs]}
        )
    if only is not None:
        return out

    def export() -> Any:
        return mlflow.search_runs(experiment_ids=[exp_id], max_results=n, output_format="pandas")

    frame, cold, warm = _time(export, 0)
    out["export"] = {"cold_s": cold, "median_s": warm, "rows": len(frame), "columns": len(frame.columns)}
    return out


# ---------------------------------------------------------------------- driver
def _child(
    role: str,
    workdir: Path,
    n: int,
    extra: str = "",
    repeats: int = 5,
    timeout: float = 3600,
    only: int | None = None,
) -> Any:
    cmd = [
        sys.executable,
        __file__,
        "--role",
        role,
        "--workdir",
        str(workdir),
        "--runs",
        str(n),
        "--repeats",
        str(repeats),
    ]
    if extra:
        cmd += ["--experiment-id", extra]
    if only is not None:
        cmd += ["--mlflow-query", str(only)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        msg = f"{role} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(
    n: int,
    workdir: Path,
    repeats: int = 5,
    log: Any = print,
    peers: tuple[str, ...] = ("mltrail", "mlflow"),
    mlflow_query: int | None = None,
) -> dict[str, Any]:
    """Set the stores up (or reuse them), time the queries; return everything measured."""
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"runs": n}
    for peer in peers:
        marker = workdir / f"{peer}-{n}.json"
        if marker.exists():
            setup = json.loads(marker.read_text())
        else:
            log(f"search: seeding {n} runs into {peer} ...")
            setup = _child(f"setup-{peer}", workdir / f"{peer}-{n}", n)
            marker.write_text(json.dumps(setup))
        log(f"search: querying {peer} ...")
        only = mlflow_query if peer == "mlflow" else None
        result[peer] = _child(
            f"query-{peer}", workdir / f"{peer}-{n}", n, str(setup["experiment_id"]), repeats, only=only
        )
        result[peer]["setup_seconds"] = setup["setup_seconds"]
    if mlflow_query is not None:
        result["mlflow_query"] = mlflow_query
        q_mt, q_mf = result["mltrail"]["queries"][mlflow_query - 1], result["mlflow"]["queries"][0]
        q_mt["same_as_mlflow"] = q_mt["names"] == q_mf["names"]
    elif "mlflow" in result:
        for q_mt, q_mf in zip(result["mltrail"]["queries"], result["mlflow"]["queries"], strict=True):
            q_mt["same_as_mlflow"] = q_mt["names"] == q_mf["names"]
    return result


def table_alone(result: dict[str, Any]) -> str:
    """mltrail alone (MLflow takes far too long at this size: minutes per query)."""
    n = result["runs"]
    mt = result["mltrail"]
    lines = [
        f"mltrail alone over {n:,} runs (MLflow needs minutes per query at this size; see above for the "
        "side-by-side):",
        "",
        "| query | order by | mltrail (median) | mltrail cold | target ≤ 50 ms | met? |",
        "|---|---|---|---|---|---|",
    ]
    for (_label, filt, order), a in zip(QUERIES, mt["queries"], strict=True):
        met = a["median_s"] <= 0.050
        lines.append(
            f"| `{filt}` | `{', '.join(order)}` | {a['median_s'] * 1e3:,.1f} ms | {a['cold_s'] * 1e3:,.1f} ms | "
            f"≤ 50 ms | {'yes' if met else '**no**'} |"
        )
    ea = mt["export"]
    lines += [
        "",
        f"| full export of {n:,} runs to pandas | {ea['median_s']:.2f} s ({ea['rows']:,} rows x {ea['columns']} columns) |",
        "|---|---|",
    ]
    return "\n".join(lines)


def table_one(result: dict[str, Any]) -> str:
    """One query, both trackers (MLflow: cold and one warm repeat)."""
    n, k = result["runs"], result["mlflow_query"]
    _label, filt, order = QUERIES[k - 1]
    a, b = result["mltrail"]["queries"][k - 1], result["mlflow"]["queries"][0]
    return "\n".join(
        [
            f"One query over {n:,} runs, SQLite, top 100 (MLflow: cold, then one warm repeat):",
            "",
            "| query | order by | mltrail (median) | MLflow (warm) | mltrail cold | MLflow cold | speed-up | "
            "same top-100 |",
            "|---|---|---|---|---|---|---|---|",
            f"| `{filt}` | `{', '.join(order)}` | {a['median_s'] * 1e3:,.1f} ms | {b['median_s'] * 1e3:,.1f} ms | "
            f"{a['cold_s'] * 1e3:,.1f} ms | {b['cold_s'] * 1e3:,.1f} ms | {b['median_s'] / a['median_s']:,.0f}x | "
            f"{'yes' if a['same_as_mlflow'] else 'NO'} |",
        ]
    )


def tables(result: dict[str, Any]) -> str:
    """The search results as markdown tables."""
    n = result["runs"]
    mt, mf = result["mltrail"], result["mlflow"]
    lines = [
        f"Search over {n:,} runs (5 params, 5 metrics, 3 tags each), SQLite, top 100:",
        "",
        "| query | order by | mltrail (median) | MLflow (median) | mltrail cold | MLflow cold | speed-up | same top-100 | target ≤ 50 ms & ≥ 20x | met? |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (_label, filt, order), a, b in zip(QUERIES, mt["queries"], mf["queries"], strict=True):
        ratio = b["median_s"] / a["median_s"]
        met = a["median_s"] <= 0.050 and ratio >= 20
        lines.append(
            f"| `{filt}` | `{', '.join(order)}` | {a['median_s'] * 1e3:.1f} ms | {b['median_s'] * 1e3:.1f} ms | "
            f"{a['cold_s'] * 1e3:.1f} ms | {b['cold_s'] * 1e3:.1f} ms | {ratio:.1f}x | "
            f"{'yes' if a['same_as_mlflow'] else 'NO'} | ≤ 50 ms, ≥ 20x | {'yes' if met else 'no'} |"
        )
    ea, eb = mt["export"], mf["export"]
    lines += [
        "",
        f'Full export of all {n:,} runs to a pandas DataFrame (`search_runs(output_format="pandas")`):',
        "",
        "| | mltrail | MLflow | speed-up |",
        "|---|---|---|---|",
        f"| time | {ea['median_s']:.2f} s | {eb['median_s']:.2f} s | {eb['median_s'] / ea['median_s']:.1f}x |",
        f"| rows x columns | {ea['rows']:,} x {ea['columns']} | {eb['rows']:,} x {eb['columns']} | |",
        f"| seeding (not timed in the table above) | {mt['setup_seconds']:.0f} s (store API) | "
        f"{mf['setup_seconds']:.0f} s (direct SQL inserts) | |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--role", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--experiment-id", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--mltrail-only", action="store_true", help="skip MLflow (minutes per query at 100k)")
    parser.add_argument(
        "--mlflow-query",
        type=int,
        choices=range(1, len(QUERIES) + 1),
        default=None,
        help="time MLflow on this query only (1-4), cold and one warm repeat, and no export",
    )
    args = parser.parse_args()
    if args.role is None:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mltrail-search-bench-"))
        peers = ("mltrail",) if args.mltrail_only else ("mltrail", "mlflow")
        result = run(
            args.runs,
            workdir,
            args.repeats,
            log=lambda m: print(m, file=sys.stderr),
            peers=peers,
            mlflow_query=None if args.mltrail_only else args.mlflow_query,
        )
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        if args.mltrail_only:
            print(table_alone(result))
        elif args.mlflow_query is not None:
            print(table_alone(result) + "\n\n" + table_one(result))
        else:
            print(tables(result))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    fn = {
        "setup-mltrail": lambda: setup_mltrail(args.workdir, args.runs),
        "setup-mlflow": lambda: setup_mlflow(args.workdir, args.runs),
        "query-mltrail": lambda: query_mltrail(args.workdir, args.experiment_id, args.runs, args.repeats),
        "query-mlflow": lambda: query_mlflow(
            args.workdir, args.experiment_id, args.runs, args.repeats, args.mlflow_query
        ),
    }[args.role]
    print(json.dumps(fn()))


if __name__ == "__main__":
    main()
