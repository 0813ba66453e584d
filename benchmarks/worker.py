"""One measurement of one tracker, in its own process; prints one JSON object on its last line.

``run_all.py`` starts this script once per (peer, benchmark, repetition), so that no peer's
threads, caches or imports disturb another's numbers. It can be run by hand too::

    python benchmarks/worker.py --peer mltrail --bench call --n 1000000 --workdir /tmp/b

Peers: ``mltrail``; ``mlflow_sync`` and ``mlflow_async`` (MLflow on its SQLite backend,
``sqlite:///<workdir>/mlflow.db``; async is ``synchronous=False`` on every call); ``wandb``
(W&B offline mode, system-stats sampling and console capture off); ``noop`` (a Python function
that does nothing, with the same call shape as ``log_metric``: the floor of the loop itself).

Benchmarks:

``timer``       cost of the timer itself: ``t0 = perf_counter_ns(); d = perf_counter_ns() - t0``.
``call``        per-call cost of ``log_metric("loss", v, step=i)``, each call timed on its own
                with ``time.perf_counter_ns`` (raw: the timer's overhead is not subtracted).
``calls100``    per-call cost of ``log_metrics({100 keys}, step=i)``, timed the same way.
``durable``     points/s of a plain ``log_metric`` loop, clock stopped when ``end_run()``
                (W&B: ``finish()``) has returned, i.e. when every point is on disk.
``durable100``  the same with ``log_metrics`` of 100 metrics per step.
``memory``      peak RSS growth while logging ``n`` points with ``log_metric`` and ending the run:
                ``ru_maxrss`` at the end minus the RSS just before the first call.
``read_setup`` / ``read``  write an ``n``-point history, then (in a fresh process) time reading it
                back: mltrail ``Client().get_metric_history``, MLflow
                ``MlflowClient().get_metric_history``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
from array import array
from pathlib import Path
from typing import Any

PEERS = ("mltrail", "mlflow_sync", "mlflow_async", "wandb", "noop")
KEYS100 = [f"metric_{j:03d}" for j in range(100)]

# The timed loops are generated from one template per benchmark so that every peer runs exactly
# the same loop around its own call expression (no wrapper function adds to anyone's cost).
_TIMED = """
def loop(n, out, pc, f, keys):
    fromkeys = dict.fromkeys
    for i in range(n):
        v = i * 1e-3
        {prep}
        t0 = pc()
        {call}
        out[i] = pc() - t0
"""
_UNTIMED = """
def loop(n, out, pc, f, keys):
    fromkeys = dict.fromkeys
    for i in range(n):
        v = i * 1e-3
        {prep}
        {call}
"""
_ONE = {
    "mltrail": "f('loss', v, step=i)",
    "mlflow_sync": "f('loss', v, step=i)",
    "mlflow_async": "f('loss', v, step=i, synchronous=False)",
    "wandb": "f({'loss': v}, step=i)",
    "noop": "f('loss', v, step=i)",
}
_MANY = {
    "mltrail": "f(d, step=i)",
    "mlflow_sync": "f(d, step=i)",
    "mlflow_async": "f(d, step=i, synchronous=False)",
    "wandb": "f(d, step=i)",
    "noop": "f(d, step=i)",
}


def _compile(template: str, call: str, many: bool) -> Any:
    source = template.format(call=call, prep="d = fromkeys(keys, v)" if many else "pass")
    namespace: dict[str, Any] = {}
    exec(compile(source, "<bench-loop>", "exec"), namespace)  # our own template, see above
    return namespace["loop"]


class Peer:
    """A tracker with one active run: the callables the loops use, and how to end the run."""

    log_one: Any
    log_many: Any

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.run_id: str | None = None
        getattr(self, f"_setup_{name}")()

    # ------------------------------------------------------------------ setups
    def _setup_mltrail(self) -> None:
        import mltrail

        mltrail.set_tracking_uri(str(self.workdir / "mltrail-store"))
        self._mod = mltrail
        run = mltrail.start_run()
        self.run_id = run.info.run_id
        self.log_one = mltrail.log_metric
        self.log_many = mltrail.log_metrics

    def _setup_mlflow(self) -> None:
        import logging

        import mlflow

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.ERROR)
        mlflow.set_tracking_uri(f"sqlite:///{self.workdir / 'mlflow.db'}")
        self._mod = mlflow
        run = mlflow.start_run()
        self.run_id = run.info.run_id
        self.log_one = mlflow.log_metric
        self.log_many = mlflow.log_metrics

    _setup_mlflow_sync = _setup_mlflow
    _setup_mlflow_async = _setup_mlflow

    def _setup_wandb(self) -> None:
        os.environ["WANDB_MODE"] = "offline"
        os.environ["WANDB_SILENT"] = "true"
        os.environ["WANDB_DIR"] = str(self.workdir)
        import wandb

        settings = wandb.Settings(x_disable_stats=True, console="off", disable_git=True, save_code=False)
        self._run = wandb.init(project="bench", mode="offline", dir=str(self.workdir), settings=settings)
        self.run_id = self._run.id
        self.log_one = self._run.log
        self.log_many = self._run.log

    def _setup_noop(self) -> None:
        def log_metric(key: Any, value: Any, step: Any = None) -> None:
            return None

        def log_metrics(metrics: Any, step: Any = None) -> None:
            return None

        self.log_one = log_metric
        self.log_many = log_metrics

    # ------------------------------------------------------------------ ending
    def end(self) -> None:
        """Return once everything logged is durable (the run is ended)."""
        if self.name == "mltrail":
            self._mod.end_run()
        elif self.name.startswith("mlflow"):
            self._mod.end_run()  # waits for the async queue, then records the status
        elif self.name == "wandb":
            self._run.finish()


def _stats(samples: array[int]) -> dict[str, float]:
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "median_ns": float(ordered[n // 2]),
        "p99_ns": float(ordered[min(n - 1, int(n * 0.99))]),
        "p999_ns": float(ordered[min(n - 1, int(n * 0.999))]),
        "mean_ns": statistics.fmean(ordered),
        "max_ns": float(ordered[-1]),
        "n": n,
    }


def _current_rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def bench(peer_name: str, name: str, n: int, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    pc = time.perf_counter_ns
    if name == "timer":
        out = array("q", bytes(8 * n))
        for i in range(n):
            t0 = pc()
            out[i] = pc() - t0
        return _stats(out)
    if name == "read":
        return _read(peer_name, n, workdir)
    peer = Peer(peer_name, workdir)
    if name == "read_setup":
        return _read_setup(peer, n)
    many = name in ("calls100", "durable100")
    call = (_MANY if many else _ONE)[peer_name]
    f = peer.log_many if many else peer.log_one
    if name in ("call", "calls100"):
        loop = _compile(_TIMED, call, many)
        warm = min(1000, max(10, n // 100))
        loop(warm, array("q", bytes(8 * warm)), pc, f, KEYS100)  # first-call costs off the books
        out = array("q", bytes(8 * n))
        loop(n, out, pc, f, KEYS100)
        result = _stats(out)
        peer.end()
        return result
    if name in ("durable", "durable100"):
        loop = _compile(_UNTIMED, call, many)
        start = time.perf_counter()
        loop(n, None, pc, f, KEYS100)
        logged = time.perf_counter()
        peer.end()
        done = time.perf_counter()
        points = n * (100 if many else 1)
        return {
            "points": points,
            "seconds": done - start,
            "log_seconds": logged - start,
            "end_seconds": done - logged,
            "points_per_s": points / (done - start),
        }
    if name == "memory":
        loop = _compile(_UNTIMED, call, False)
        gc.collect()
        before = _current_rss()
        max_before = _maxrss()
        start = time.perf_counter()
        loop(n, None, pc, f, KEYS100)
        peer.end()
        seconds = time.perf_counter() - start
        peak = _maxrss()
        return {
            "points": n,
            "rss_before": before,
            "maxrss_before": max_before,
            "maxrss_after": peak,
            "growth_bytes": max(0, peak - before),
            "rss_after": _current_rss(),
            "seconds": seconds,
        }
    msg = f"unknown benchmark {name!r}"
    raise SystemExit(msg)


# ---------------------------------------------------------------------- metric history read
def _read_setup(peer: Peer, n: int) -> dict[str, Any]:
    start = time.perf_counter()
    if peer.name == "mltrail":
        loop = _compile(_UNTIMED, _ONE["mltrail"], False)
        loop(n, None, None, peer.log_one, KEYS100)
        peer.end()
    elif peer.name.startswith("mlflow"):
        # MLflow's own logging of 1M points takes hours (one transaction per call) or minutes
        # (log_batch of 1,000); the read path is what is measured here, so the rows go straight
        # into MLflow's `metrics` table, shaped like the row MLflow itself wrote for step 0.
        import sqlite3

        peer.log_one("loss", 0.0, step=0)
        peer.end()
        db = sqlite3.connect(peer.workdir / "mlflow.db")
        cols = [row[1] for row in db.execute("PRAGMA table_info(metrics)")]
        template = dict(zip(cols, db.execute("SELECT * FROM metrics").fetchone(), strict=True))
        ts = int(template["timestamp"])

        def rows() -> Any:
            for i in range(1, n):
                row = dict(template)
                row.update(value=i * 1e-3, step=i, timestamp=ts + i // 1000)
                yield tuple(row[c] for c in cols)

        marks = ",".join("?" * len(cols))
        with db:
            db.executemany(f"INSERT INTO metrics ({','.join(cols)}) VALUES ({marks})", rows())
        db.close()
    else:
        msg = f"{peer.name} has no local read API"
        raise SystemExit(msg)
    return {"run_id": peer.run_id, "points": n, "setup_seconds": time.perf_counter() - start}


def _read(peer_name: str, n: int, workdir: Path) -> dict[str, Any]:
    run_id = (workdir / "run_id").read_text().strip()
    times = []
    if peer_name == "mltrail":
        import mltrail

        uri = str(workdir / "mltrail-store")
        mltrail.Client(uri).get_run(run_id)  # opens the store (connection, migration check)
        repeats = 7
        for _ in range(repeats):
            t = time.perf_counter()
            history = mltrail.Client(uri).get_metric_history(run_id, "loss")
            times.append(time.perf_counter() - t)
        count = len(history.values)
    else:
        import logging

        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        uri = f"sqlite:///{workdir / 'mlflow.db'}"
        MlflowClient(uri).get_run(run_id)
        repeats = 1 if n >= 500_000 else 3  # about 3 minutes per read at 1M points
        for _ in range(repeats):
            t = time.perf_counter()
            history = MlflowClient(uri).get_metric_history(run_id, "loss")
            times.append(time.perf_counter() - t)
        count = len(history)
    if count != n:
        msg = f"read {count} points, expected {n}"
        raise SystemExit(msg)
    return {"points": count, "median_s": statistics.median(times), "first_s": times[0], "all_s": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", choices=PEERS, required=True)
    parser.add_argument("--bench", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    result = bench(args.peer, args.bench, args.n, args.workdir)
    if args.bench == "read_setup":
        (args.workdir / "run_id").write_text(str(result["run_id"]))
    result.update(peer=args.peer, bench=args.bench)
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
