"""scikit-learn autolog overhead: bare fits vs mltrail.autolog() vs mlflow.sklearn.autolog().

Run from the repository root (MLflow installed in the same environment; not a project dependency)::

    python benchmarks/bench_sklearn.py                    # all workloads, both trackers
    python benchmarks/bench_sklearn.py --repeats 15 --workloads lr,grid --no-mlflow

Workloads, on ``make_classification(5000, 20)``: ``LogisticRegression()``,
``RandomForestClassifier(n_estimators=50)``, and ``GridSearchCV`` over 6 candidates of
``LogisticRegression`` (cv=5: 31 fits). For each workload and tracker, one process interleaves
bare fits (every autolog off: the originals are back) and tracked ones round by round,
alternating their order, so that both see the same load on the machine: mltrail
(``mltrail.autolog()``, defaults) in one process, MLflow (``mlflow.sklearn.autolog()``,
defaults) in another of the same run (``isolated.py`` says why), each compared with the bare
fits of its own process. Each tracker writes to a fresh store in a temporary directory (MLflow:
``sqlite:///.../mlflow.db``).
Each cell is the median over the repeats, after one warm-up round:

* ``wall``: the time the fit call takes (what the user waits for);
* ``cpu``: CPU time of the calling thread during the fit (steadier on a busy machine);
* ``+bg``: for mltrail, the fit plus ``mltrail.flush()`` (its background work — training
  metrics, plots, model file, fingerprint, the run's end — done and durable): the whole cost.

The overhead ratio compares MLflow's wall overhead with mltrail's whole (+bg) overhead.
Targets (issue 6): mltrail's fit <= 1.2x bare for LogisticRegression and RandomForest, <= 1.1x
for the grid search, and mltrail's overhead at least 5x smaller than MLflow's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

from isolated import in_own_process

WORKLOADS = ("lr", "rf", "grid")
TITLES = {
    "lr": "LogisticRegression",
    "rf": "RandomForestClassifier(50)",
    "grid": "GridSearchCV(LogisticRegression, 6 candidates, cv=5)",
}


def _data() -> tuple[Any, Any]:
    from sklearn.datasets import make_classification

    return make_classification(n_samples=5000, n_features=20, random_state=0)


def _fit(workload: str, X: Any, y: Any) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    if workload == "lr":
        return LogisticRegression().fit(X, y)
    if workload == "rf":
        return RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y)
    grid = {"C": [0.01, 0.1, 1.0], "fit_intercept": [True, False]}
    return GridSearchCV(LogisticRegression(), grid, cv=5).fit(X, y)


class _Tracker:
    """Turn one tracker's autolog on and off, and wait for its background work."""

    def __init__(self, name: str, store: str) -> None:
        self.name = name
        if name == "mltrail":
            import mltrail

            mltrail.set_tracking_uri(store)
            self._mltrail = mltrail
        else:
            import logging

            import mlflow
            import mlflow.sklearn

            logging.getLogger("mlflow").setLevel(logging.ERROR)
            mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
            self._mlflow = mlflow

    def on(self) -> None:
        if self.name == "mltrail":
            self._mltrail.autolog()
        else:
            self._mlflow.sklearn.autolog(silent=True)

    def off(self) -> None:
        if self.name == "mltrail":
            self._mltrail.autolog(disable=True)
        else:
            self._mlflow.sklearn.autolog(disable=True, silent=True)

    def drain(self) -> None:
        if self.name == "mltrail":
            self._mltrail.flush()


def measure(workload: str, repeats: int, trackers: list[str]) -> dict[str, dict[str, float]]:
    """Interleave bare and tracked fits in this process; return medians per kind."""
    warnings.filterwarnings("ignore")
    X, y = _data()
    active = {name: _Tracker(name, tempfile.mkdtemp(prefix=f"bench-sklearn-{name}-")) for name in trackers}
    kinds = ["bare", *trackers]
    samples: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": [], "whole": []} for k in kinds}
    for i in range(repeats + 1):  # round 0 warms up imports and caches
        shift = i % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            tracker = active.get(kind)
            if tracker is not None:
                tracker.on()
            start, cpu = time.perf_counter(), time.thread_time()
            _fit(workload, X, y)
            wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
            if tracker is not None:
                tracker.drain()
            whole = time.perf_counter() - start
            if tracker is not None:
                tracker.off()
            if i:
                samples[kind]["wall"].append(wall)
                samples[kind]["cpu"].append(cpu)
                samples[kind]["whole"].append(whole)
    med = statistics.median
    return {k: {m: med(v) for m, v in s.items()} for k, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args()
    import sklearn

    trackers = ["mltrail"] if args.no_mlflow else ["mltrail", "mlflow"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"scikit-learn {sklearn.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {load:.2f}; median of {args.repeats} interleaved rounds\n")
    print("| workload | bare wall | mltrail wall (x) | mltrail +bg (x) | bare cpu | mltrail cpu (x) "
          "| MLflow wall (x) | overhead MLflow / mltrail |")
    print("|---|---|---|---|---|---|---|---|")
    for workload in args.workloads.split(","):
        # Each tracker in a process of its own, against its own bare fits (see isolated.py).
        res = in_own_process(measure, workload, args.repeats, ["mltrail"])
        bare, ours = res["bare"], res["mltrail"]
        if "mlflow" in trackers:
            theirs_res = in_own_process(measure, workload, args.repeats, ["mlflow"])
            res["mlflow"], res["mlflow_bare"] = theirs_res["mlflow"], theirs_res["bare"]
        cells = [
            TITLES[workload],
            f"{bare['wall'] * 1000:.1f} ms",
            f"{ours['wall'] * 1000:.1f} ms ({ours['wall'] / bare['wall']:.2f}x)",
            f"{ours['whole'] * 1000:.1f} ms ({ours['whole'] / bare['wall']:.2f}x)",
            f"{bare['cpu'] * 1000:.1f} ms",
            f"{ours['cpu'] * 1000:.1f} ms ({ours['cpu'] / bare['cpu']:.2f}x)",
        ]
        theirs = res.get("mlflow")
        if theirs is None:
            cells += ["-", "-"]
        else:
            their_bare = res["mlflow_bare"]
            their_overhead = theirs["wall"] - their_bare["wall"]
            our_overhead = max(ours["whole"] - bare["wall"], 1e-4)
            cells += [
                f"{theirs['wall'] * 1000:.1f} ms ({theirs['wall'] / their_bare['wall']:.2f}x)",
                f"{their_overhead / our_overhead:.0f}x",
            ]
        print("| " + " | ".join(cells) + " |", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n(x) = ratio to the bare fits of the same process; the last column compares overheads, "
          f"mltrail's counted with its background work (+bg). Load average at the end: {load:.2f}.")


if __name__ == "__main__":
    main()
