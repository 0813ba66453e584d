"""Every side-by-side benchmark, in one run on one machine; prints markdown tables.

Each (tracker, benchmark, repetition) runs in its own process (``benchmarks/worker.py``); the
table shows the median over the repetitions. Trackers: mltrail, MLflow on SQLite (synchronous,
and asynchronous with ``synchronous=False``), W&B in offline mode where it is installed.

Run: ``nox -s bench`` or ``python benchmarks/run_all.py [--quick] [--repeats 3] [--only call,read]
[--skip-search] [--search-runs 100000] [--workdir DIR] [--json results.json]``.

``--quick`` uses small sizes and one repetition: a smoke run of the whole thing in a few minutes.
The search benchmark (``bench_search.py``) seeds its stores once per ``--workdir`` and reuses them.
``bench_autolog.py`` and ``bench_system.py``, when present, run last and print their own results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"
sys.path.insert(0, str(HERE))

PEERS = ("mltrail", "mlflow_sync", "mlflow_async", "wandb")
TITLES = {
    "mltrail": "mltrail",
    "mlflow_sync": "MLflow sync",
    "mlflow_async": "MLflow async",
    "wandb": "W&B offline",
}

# Points (or steps, for the *100 benchmarks) per measurement. The peers log fewer where logging
# the full amount would take many minutes (MLflow commits one SQLite transaction per call);
# the table says so wherever the sizes differ.
SIZES: dict[str, dict[str, int]] = {
    "call": {"mltrail": 1_000_000, "mlflow_sync": 1_000, "mlflow_async": 2_000, "wandb": 5_000},
    "calls100": {"mltrail": 20_000, "mlflow_sync": 100, "mlflow_async": 500, "wandb": 1_000},
    "durable": {"mltrail": 1_000_000, "mlflow_sync": 1_000, "mlflow_async": 1_000, "wandb": 5_000},
    "durable100": {"mltrail": 20_000, "mlflow_sync": 100, "mlflow_async": 100, "wandb": 1_000},
    "memory": {"mltrail": 10_000_000, "mlflow_sync": 1_000, "mlflow_async": 1_000, "wandb": 20_000},
    # MLflow reads about 5,000 points/s (a Python object per point): 1M would take minutes per
    # read and minutes to seed, so the side-by-side read is at 100k and mltrail alone reads 1M.
    "read": {"mltrail": 1_000_000},
    "read100k": {"mltrail": 100_000, "mlflow_sync": 100_000},
}
QUICK_DIVISOR = 10
ALL_BENCHES = (
    "import",
    "timer",
    "call",
    "calls100",
    "durable",
    "durable100",
    "read",
    "memory",
    "search",
    "extra",
)
READ_NOTE = {"read": "not run (see the 100k row)"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- running things
def worker(peer: str, bench: str, n: int, workdir: Path, timeout: float = 1800) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(WORKER),
        "--peer",
        peer,
        "--bench",
        bench,
        "--n",
        str(n),
        "--workdir",
        str(workdir),
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir.parent, check=False
    )
    if proc.returncode != 0:
        msg = f"{peer}/{bench} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def repeated(peer: str, bench: str, n: int, root: Path, repeats: int) -> dict[str, Any]:
    """Run a worker ``repeats`` times (fresh directory each); the median of every number."""
    results = []
    for r in range(repeats):
        workdir = root / f"{peer}-{bench}-{r}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        results.append(worker(peer, bench, n, workdir))
        shutil.rmtree(workdir, ignore_errors=True)
    merged: dict[str, Any] = {"runs": results, "n": n}
    for key, value in results[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(r[key] for r in results)
    return merged


def import_time(module: str, repeats: int) -> float:
    code = f"import time; t = time.perf_counter_ns(); import {module}; print(time.perf_counter_ns() - t)"
    times = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(int(proc.stdout.strip()) / 1e9)
    return statistics.median(times)


def available(module: str) -> str | None:
    """The module's version if it imports, else None."""
    code = f"import importlib.metadata as m, {module}; print(m.version({module!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


# ---------------------------------------------------------------------- the machine
def machine() -> dict[str, str]:
    info: dict[str, str] = {"cores": str(os.cpu_count())}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")
        ]
        info["cpu"] = models[0] if models else platform.processor()
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["ram"] = f"{int(mem) / 1024**2:.1f} GiB"
    except OSError:
        info["cpu"] = platform.processor()
    info["os"] = platform.platform()
    info["python"] = platform.python_version()
    import sqlite3

    info["sqlite"] = sqlite3.sqlite_version
    for dist in ("mltrail", "mlflow", "wandb", "numpy", "pandas", "sqlalchemy"):
        info[dist] = available(dist) or "not installed"
    info["load"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


# ---------------------------------------------------------------------- formatting
def _us(ns: float) -> str:
    us = ns / 1000
    if us >= 1000:
        return f"{us / 1000:,.1f} ms"
    return f"{us:.2f} µs" if us < 10 else f"{us:,.0f} µs"


def _rate(x: float) -> str:
    return f"{x:,.0f} pts/s"


def _seconds(s: float) -> str:
    return f"{s * 1000:,.1f} ms" if s < 10 else f"{s:,.1f} s"


def _mb(b: float) -> str:
    return f"{b / 1e6:,.1f} MB"


class Row:
    """One benchmark row: how to read a value from a result, and whether lower is better."""

    def __init__(
        self,
        title: str,
        bench: str,
        key: str,
        fmt: Callable[[float], str],
        *,
        lower_is_better: bool = True,
        target: float | None = None,
        target_text: str = "",
        ratios: bool = True,
        show_n: bool = False,
    ) -> None:
        self.title = title
        self.bench = bench
        self.key = key
        self.fmt = fmt
        self.lower = lower_is_better
        self.target = target
        self.target_text = target_text
        self.ratios = ratios
        self.show_n = show_n


ROWS = [
    Row("`log_metric` per call, median", "call", "median_ns", _us, target=2_000, target_text="≤ 2 µs"),
    Row("`log_metric` per call, p99", "call", "p99_ns", _us, target=20_000, target_text="≤ 20 µs"),
    Row("`log_metrics` (100 metrics/step) per call, median", "calls100", "median_ns", _us, target_text="—"),
    Row("`log_metrics` (100 metrics/step) per call, p99", "calls100", "p99_ns", _us, target_text="—"),
    Row(
        "points/s until durable, `log_metric` loop",
        "durable",
        "points_per_s",
        _rate,
        lower_is_better=False,
        target=1_000_000,
        target_text="≥ 1,000,000/s",
    ),
    Row(
        "points/s until durable, `log_metrics` 100/step",
        "durable100",
        "points_per_s",
        _rate,
        lower_is_better=False,
        target=1_000_000,
        target_text="≥ 1,000,000/s",
    ),
    Row(
        "read a 1,000,000-point history (`get_metric_history`)",
        "read",
        "median_s",
        _seconds,
        target=0.050,
        target_text="≤ 50 ms",
        show_n=True,
    ),
    Row(
        "read a 100,000-point history (`get_metric_history`)",
        "read100k",
        "median_s",
        _seconds,
        target_text="—",
        show_n=True,
    ),
    Row(
        "peak RSS growth while logging",
        "memory",
        "growth_bytes",
        _mb,
        target=100e6,
        target_text="< 100 MB (10M points)",
        ratios=False,
        show_n=True,
    ),
    Row(
        "`import` time (median of 7, fresh process)",
        "import",
        "seconds",
        _seconds,
        target=0.050,
        target_text="≤ 50 ms",
    ),
]


def _value(results: dict[str, Any], row: Row, peer: str) -> tuple[float | None, int | None]:
    res = results.get(row.bench, {}).get(peer)
    if res is None and peer == "mlflow_async" and row.bench in ("read", "read100k", "import"):
        res = results.get(row.bench, {}).get("mlflow_sync")  # the same code path
    if not res or "error" in res:
        return None, None
    return res.get(row.key), res.get("n")


def main_table(results: dict[str, Any], peers: list[str]) -> str:
    header = [
        "benchmark",
        *[TITLES[p] for p in PEERS],
        "ratio vs MLflow sync",
        "ratio vs MLflow async",
        "target",
        "met?",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in ROWS:
        if row.bench not in results:
            continue
        cells = [row.title]
        values: dict[str, float | None] = {}
        sizes: dict[str, int | None] = {}
        for peer in PEERS:
            value, n = _value(results, row, peer)
            values[peer], sizes[peer] = value, n
            if peer not in peers:
                cells.append("not installed" if peer == "wandb" else "—")
                continue
            res = results.get(row.bench, {}).get(peer)
            if res and "error" in res:
                cells.append(f"failed: {res['error']}")
            elif peer == "mlflow_async" and row.bench in ("read", "read100k", "import"):
                cells.append("same as sync")
            elif value is None:
                if row.bench.startswith("read"):
                    cells.append(
                        "n/a (no local read API)" if peer == "wandb" else READ_NOTE.get(row.bench, "n/a")
                    )
                else:
                    cells.append("n/a")
            else:
                text = row.fmt(value)
                if row.show_n and n:
                    text += f" (N={n:,})"
                cells.append(text)
        ours = values["mltrail"]
        problems = []
        for peer, need in (("mlflow_sync", 100), ("mlflow_async", 10)):
            theirs = values[peer]
            if ours is None or theirs is None or not row.ratios or ours == 0:
                cells.append("—")
                continue
            if row.show_n and sizes[peer] != sizes["mltrail"]:
                cells.append("— (different N)")
                continue
            ratio = (theirs / ours) if row.lower else (ours / theirs)
            cells.append(f"{ratio:,.1f}x")
            if ratio < need:
                problems.append(f"{ratio:,.0f}x < {need}x vs {TITLES[peer]}")
        cells.append(row.target_text + ("; ≥ 100x sync, ≥ 10x async" if row.ratios else ""))
        if ours is None:
            cells.append("—")
        else:
            if row.target is not None:
                ok = ours <= row.target if row.lower else ours >= row.target
                if not ok:
                    problems.insert(0, f"misses {row.target_text}")
            cells.append("yes" if not problems else "**no**: " + "; ".join(problems))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def floor_table(results: dict[str, Any]) -> str:
    timer = results.get("timer", {}).get("timer")
    noop = results.get("timer", {}).get("noop")
    if not timer:
        return ""
    lines = [
        "Measurement floor (same interpreter, not subtracted from any number above):",
        "",
        "| | median | p99 |",
        "|---|---|---|",
        f"| `perf_counter_ns()` pair (the timer's own overhead) | {_us(timer['median_ns'])} | {_us(timer['p99_ns'])} |",
    ]
    if noop:
        lines.append(
            f"| an empty Python function called as `f('loss', v, step=i)`, timed the same way | "
            f"{_us(noop['median_ns'])} | {_us(noop['p99_ns'])} |"
        )
    return "\n".join(lines)


def sizes_note(results: dict[str, Any], peers: list[str]) -> str:
    lines = ["Sizes (points, or steps of 100 metrics for the `log_metrics` rows) per measurement:", ""]
    for bench in ("call", "calls100", "durable", "durable100", "read", "read100k", "memory"):
        if bench not in results:
            continue
        parts = [
            f"{TITLES[p]} {results[bench][p]['n']:,}" for p in peers if results[bench].get(p, {}).get("n")
        ]
        lines.append(f"- {bench}: " + ", ".join(parts))
    return "\n".join(lines)


# ---------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument(
        "--repeats", type=int, default=None, help="repetitions per measurement (default 3; quick 1)"
    )
    parser.add_argument(
        "--only", default=",".join(ALL_BENCHES), help="comma-separated: " + ",".join(ALL_BENCHES)
    )
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument(
        "--search-runs",
        type=int,
        default=None,
        help="runs in the side-by-side search benchmark (10000; quick 2000)",
    )
    parser.add_argument(
        "--search-runs-alone",
        type=int,
        default=None,
        help="runs in the mltrail-only search benchmark (100000; quick 10000; 0 skips it)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="scratch directory (default: a new temp dir)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every raw number here")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    only = {b.strip() for b in args.only.split(",") if b.strip()}
    if args.skip_search:
        only.discard("search")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="mltrail-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    div = QUICK_DIVISOR if args.quick else 1

    info = machine()
    peers = ["mltrail", "mlflow_sync", "mlflow_async"] if info["mlflow"] != "not installed" else ["mltrail"]
    if info["wandb"] != "not installed":
        peers.append("wandb")
    log(f"machine: {info}")
    results: dict[str, Any] = {"machine": info, "quick": args.quick, "repeats": repeats}

    if "import" in only:
        log("import time")
        results["import"] = {}
        for peer, module in (("mltrail", "mltrail"), ("mlflow_sync", "mlflow"), ("wandb", "wandb")):
            if peer in peers:
                results["import"][peer] = {"seconds": import_time(module, 7)}
    if "timer" in only:
        log("timer overhead and empty-call floor")
        results["timer"] = {
            "timer": repeated("noop", "timer", 1_000_000 // div, root, repeats),
            "noop": repeated("noop", "call", 1_000_000 // div, root, repeats),
        }
    for bench in ("call", "calls100", "durable", "durable100", "memory"):
        if bench not in only:
            continue
        results[bench] = {}
        for peer in peers:
            n = max(10, SIZES[bench][peer] // div)
            log(f"{bench}: {peer} (n={n:,} x {repeats})")
            try:
                results[bench][peer] = repeated(peer, bench, n, root, repeats)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                log(f"  failed: {exc}")
                results[bench][peer] = {"error": str(exc).splitlines()[0][:80]}
    for bench, peer in (("read", "mltrail"), ("read100k", "mltrail"), ("read100k", "mlflow_sync")):
        if "read" not in only or peer not in peers:
            continue
        results.setdefault(bench, {})
        n = SIZES[bench][peer] // div
        workdir = root / f"{peer}-{bench}"
        shutil.rmtree(workdir, ignore_errors=True)
        log(f"read: {peer} (writing {n:,} points)")
        try:
            worker(peer, "read_setup", n, workdir)
            log(f"read: {peer} (reading)")
            # MLflow needs minutes per 1M-point read: once is enough to place it.
            times = 1 if peer != "mltrail" and n >= 500_000 else repeats
            runs = [worker(peer, "read", n, workdir) for _ in range(times)]
            results[bench][peer] = {
                "n": n,
                "median_s": statistics.median(r["median_s"] for r in runs),
                "first_s": statistics.median(r["first_s"] for r in runs),
                "runs": runs,
            }
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"  failed: {exc}")
            results[bench][peer] = {"error": str(exc).splitlines()[0][:80]}
        shutil.rmtree(workdir, ignore_errors=True)
    search_md = ""
    if "search" in only and "mlflow_sync" in peers:
        import bench_search

        n = args.search_runs or (2_000 if args.quick else 10_000)
        n_alone = args.search_runs_alone or (10_000 if args.quick else 100_000)
        log(f"search: {n:,} runs side by side, {n_alone:,} runs mltrail alone")
        try:
            results["search"] = bench_search.run(n, root / "search", repeats=5, log=log)
            search_md = bench_search.tables(results["search"])
            if n_alone:
                results["search_alone"] = bench_search.run(
                    n_alone, root / "search", repeats=5, log=log, peers=("mltrail",)
                )
                search_md += "\n\n" + bench_search.table_alone(results["search_alone"])
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"  search failed: {exc}")
            search_md = f"Search benchmark failed: {str(exc)[:500]}"
    info["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))

    out = [
        f"## mltrail vs MLflow vs W&B ({'quick' if args.quick else 'full'} run, median of {repeats})",
        "",
        main_table(results, peers),
        "",
        sizes_note(results, peers),
        "",
        floor_table(results),
        "",
    ]
    if search_md:
        out += ["## Search", "", search_md, ""]
    out += ["## Machine", ""] + [f"- {k}: {v}" for k, v in info.items()]
    print("\n".join(out), flush=True)

    if "extra" in only:
        for name in ("bench_autolog.py", "bench_system.py"):
            path = HERE / name
            if not path.exists():
                continue
            log(f"running {name}")
            help_text = subprocess.run(
                [sys.executable, str(path), "--help"], capture_output=True, text=True, check=False
            ).stdout
            extra = ["--quick"] if args.quick and "--quick" in help_text else []
            print(f"\n## {name}\n", flush=True)
            proc = subprocess.run([sys.executable, str(path), *extra], check=False)
            if proc.returncode != 0:
                print(f"{name} exited with {proc.returncode}", flush=True)
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
