"""scikit-learn autolog overhead: bare fits vs mltrail.autolog() vs mlflow.sklearn.autolog().

Run from the repository root (MLflow installed in the same environment; not a project dependency)::

    python benchmarks/bench_sklearn.py               # all workloads, both trackers
    python benchmarks/bench_sklearn.py --repeats 9 --mlflow-repeats 3 --workloads lr,grid

Workloads, on ``make_classification(5000, 20)``: ``LogisticRegression()``,
``RandomForestClassifier(n_estimators=50)``, and ``GridSearchCV`` over 6 candidates of
``LogisticRegression`` (cv=5: 31 fits). Each tracker runs in its own process, with a fresh store
in a temporary directory, and alternates bare and tracked fits so that both see the same load on
the machine (a bare fit in the mltrail process runs with autolog disabled: the originals are back).
Each row is the median over the repeats, after one warm-up fit of each kind:

* ``wall``: the time the fit call takes (what the user waits for);
* ``cpu``: CPU time of the calling thread during the fit (steadier on a busy machine);
* ``+bg``: for mltrail, the fit plus waiting for its background work (model file, plots, inputs,
  child runs) to finish — the whole cost, none of it hidden.

The targets (issue 6): mltrail's fit <= 1.2x bare for LogisticRegression and RandomForest,
<= 1.1x for the grid search, and mltrail's overhead at least 5x smaller than MLflow's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any

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


def _timed(fn: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - wall, time.thread_time() - cpu


def _worker(tracker: str, workload: str, repeats: int) -> dict[str, Any]:
    """Alternate bare and tracked fits in this process; return the medians."""
    warnings.filterwarnings("ignore")
    X, y = _data()
    store = tempfile.mkdtemp(prefix=f"bench-sklearn-{tracker}-")
    if tracker == "mltrail":
        import mltrail
        from mltrail.integrations import sklearn as mltrail_sklearn

        mltrail.set_tracking_uri(store)

        def on() -> None:
            mltrail.autolog()

        def off() -> None:
            mltrail.autolog(disable=True)

        def drain() -> None:
            mltrail_sklearn.flush()
            mltrail.flush()
    else:
        import logging

        import mlflow
        import mlflow.sklearn

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")

        def on() -> None:
            mlflow.sklearn.autolog(silent=True)

        def off() -> None:
            mlflow.sklearn.autolog(disable=True, silent=True)

        def drain() -> None:
            pass

    bare: list[tuple[float, float]] = []
    tracked: list[tuple[float, float]] = []
    whole: list[float] = []
    for i in range(repeats + 1):
        off()
        b = _timed(lambda: _fit(workload, X, y))
        on()
        t0 = time.perf_counter()
        t = _timed(lambda: _fit(workload, X, y))
        drain()
        w = time.perf_counter() - t0
        if i:  # the first round warms up imports and caches
            bare.append(b)
            tracked.append(t)
            whole.append(w)
    off()
    med = statistics.median
    return {
        "bare_wall": med(x[0] for x in bare),
        "bare_cpu": med(x[1] for x in bare),
        "wall": med(x[0] for x in tracked),
        "cpu": med(x[1] for x in tracked),
        "whole": med(whole),
    }


def _run_worker(tracker: str, workload: str, repeats: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", tracker, "--workloads", workload, "--repeats", str(repeats)],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tracker}/{workload} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mlflow-repeats", type=int, default=3)
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--worker", choices=("mltrail", "mlflow"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.workloads, args.repeats)))
        return
    import sklearn

    print(f"scikit-learn {sklearn.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"median of {args.repeats} (mltrail) / {args.mlflow_repeats} (MLflow) alternating repeats\n")
    print("| workload | bare wall | mltrail wall (x) | mltrail +bg (x) | bare cpu | mltrail cpu (x) "
          "| MLflow wall (x) | overhead MLflow / mltrail |")
    print("|---|---|---|---|---|---|---|---|")
    for workload in args.workloads.split(","):
        ours = _run_worker("mltrail", workload, args.repeats)
        theirs = None if args.no_mlflow else _run_worker("mlflow", workload, args.mlflow_repeats)
        bare = ours["bare_wall"]
        cells = [
            TITLES[workload],
            f"{bare * 1000:.1f} ms",
            f"{ours['wall'] * 1000:.1f} ms ({ours['wall'] / bare:.2f}x)",
            f"{ours['whole'] * 1000:.1f} ms ({ours['whole'] / bare:.2f}x)",
            f"{ours['bare_cpu'] * 1000:.1f} ms",
            f"{ours['cpu'] * 1000:.1f} ms ({ours['cpu'] / ours['bare_cpu']:.2f}x)",
        ]
        if theirs is None:
            cells += ["-", "-"]
        else:
            their_overhead = theirs["wall"] - theirs["bare_wall"]
            our_overhead = max(ours["whole"] - bare, 1e-4)
            cells += [
                f"{theirs['wall'] * 1000:.1f} ms ({theirs['wall'] / theirs['bare_wall']:.2f}x)",
                f"{their_overhead / our_overhead:.0f}x",
            ]
        print("| " + " | ".join(cells) + " |", flush=True)
    print("\n(x) = ratio to the bare fit measured alongside; the last column compares overheads, "
          "mltrail's counted with its background work (+bg).")


if __name__ == "__main__":
    main()
