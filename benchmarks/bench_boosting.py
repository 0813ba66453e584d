"""XGBoost and LightGBM autolog overhead: bare training vs mltrail vs MLflow's autolog.

Run from the repository root, in an environment with xgboost, lightgbm, scikit-learn and (for
the comparison; not a project dependency) mlflow::

    python benchmarks/bench_boosting.py                      # every workload, both trackers
    python benchmarks/bench_boosting.py --repeats 9 --mlflow-repeats 5 --workloads xgb-train

Workloads: 200 boosting rounds on ``make_classification(10_000, 20)`` (8,000 rows to train,
2,000 in the eval set, evaluated and logged every round), one thread, through each API:

* ``xgb-train``   ``xgboost.train(params, dtrain, 200, evals=[(dvalid, "valid")])``
* ``xgb-sklearn`` ``XGBClassifier(n_estimators=200).fit(X, y, eval_set=[(Xv, yv)])``
* ``lgb-train``   ``lightgbm.train(params, dtrain, 200, valid_sets=[dvalid])``
* ``lgb-sklearn`` ``LGBMClassifier(n_estimators=200).fit(X, y, eval_X=Xv, eval_y=yv)``

Each tracker runs in its own process with a fresh store in a temporary directory, and
alternates bare and tracked trainings so that both see the same load on the machine (the bare
training runs with that tracker's autolog disabled: the originals are back). With both trackers
at their defaults, a tracked training starts a run, logs params, every round's metrics, feature
importances and the model, and ends the run. Each row gives the median over the repeats after
one warm-up of each kind:

* ``wall``: the time the training call takes (what the user waits for);
* ``+flush``: for mltrail, the call plus ``mltrail.flush()`` (everything durable in the store);
* ``CPU``: CPU time of the whole process (all threads, the background writer and environment
  capture included) during the call: steadier than wall time on a busy machine;
* overheads: tracked minus bare, and as a percentage of bare.

Targets (issue 9): mltrail <= 5 % over bare; MLflow's overhead at least 5x mltrail's.
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

WORKLOADS = ("xgb-train", "xgb-sklearn", "lgb-train", "lgb-sklearn")
ROUNDS = 200


def _data() -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=10_000, n_features=20, n_informative=10, random_state=0)
    return X[:8000], y[:8000], X[8000:], y[8000:]


def _trainer(workload: str) -> Any:
    """A function that runs one training of ``workload`` (data prepared once, outside the timing)."""
    X, y, Xv, yv = _data()
    if workload.startswith("xgb"):
        import xgboost as xgb

        if workload == "xgb-train":
            dtrain, dvalid = xgb.DMatrix(X, y), xgb.DMatrix(Xv, yv)
            params = {"objective": "binary:logistic", "max_depth": 6, "nthread": 1, "eval_metric": "logloss"}
            return lambda: xgb.train(params, dtrain, ROUNDS, evals=[(dvalid, "valid")], verbose_eval=False)
        return lambda: xgb.XGBClassifier(n_estimators=ROUNDS, max_depth=6, n_jobs=1).fit(
            X, y, eval_set=[(Xv, yv)], verbose=False
        )
    import inspect

    import lightgbm as lgb

    if workload == "lgb-train":
        params = {"objective": "binary", "num_threads": 1, "verbose": -1}

        def train() -> Any:
            dtrain = lgb.Dataset(X, y)
            return lgb.train(params, dtrain, ROUNDS, valid_sets=[lgb.Dataset(Xv, yv, reference=dtrain)])

        return train
    if "eval_X" in inspect.signature(lgb.LGBMModel.fit).parameters:
        evals: dict[str, Any] = {"eval_X": Xv, "eval_y": yv}
    else:
        evals = {"eval_set": [(Xv, yv)]}
    return lambda: lgb.LGBMClassifier(n_estimators=ROUNDS, n_jobs=1, verbose=-1).fit(X, y, **evals)


def _toggle(tracker: str, workload: str, on: bool) -> None:
    framework = "xgboost" if workload.startswith("xgb") else "lightgbm"
    if tracker == "mltrail":
        import importlib

        importlib.import_module(f"mltrail.integrations.{framework}").autolog(disable=not on)
    else:
        import importlib

        mod = importlib.import_module(f"mlflow.{framework}")
        mod.autolog(disable=not on, silent=True)


def _worker(tracker: str, workload: str, repeats: int) -> dict[str, Any]:
    """Alternate bare and tracked trainings in this process; return the medians."""
    warnings.filterwarnings("ignore")
    store = tempfile.mkdtemp(prefix=f"bench-boosting-{tracker}-")
    flush = None
    if tracker == "mltrail":
        import mltrail

        mltrail.set_tracking_uri(store)
        flush = mltrail.flush
    else:
        import logging

        import mlflow

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    train = _trainer(workload)
    samples: dict[str, list[float]] = {k: [] for k in ("bare", "tracked", "flushed", "bare_cpu", "tracked_cpu")}
    for i in range(repeats + 1):  # the first round is a warm-up
        order = (False, True) if i % 2 else (True, False)
        for on in order:
            _toggle(tracker, workload, on)
            start, cpu = time.perf_counter(), time.process_time()
            train()
            wall = time.perf_counter() - start
            if on and flush is not None:
                flush()
            total, cpu = time.perf_counter() - start, time.process_time() - cpu
            if i == 0:
                continue
            if on:
                samples["tracked"].append(wall)
                samples["flushed"].append(total)
                samples["tracked_cpu"].append(cpu)
            else:
                samples["bare"].append(wall)
                samples["bare_cpu"].append(cpu)
    _toggle(tracker, workload, False)
    return {k: statistics.median(v) for k, v in samples.items()}


def _run_worker(tracker: str, workload: str, repeats: int) -> dict[str, Any] | str:
    env = dict(os.environ, MLTRAIL_AUTOLOG_STRICT="0", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", tracker, workload, str(repeats)],
        capture_output=True, text=True, env=env, timeout=3600,
    )
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mlflow-repeats", type=int, default=3)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--trackers", default="mltrail,mlflow")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tracker, workload, repeats = args.worker
        print(json.dumps(_worker(tracker, workload, int(repeats))))
        return
    import lightgbm
    import xgboost

    print(f"xgboost {xgboost.__version__}, lightgbm {lightgbm.__version__}, {ROUNDS} rounds, "
          f"make_classification(10000, 20), eval set logged every round, 1 thread; median of "
          f"{args.repeats} (mltrail) / {args.mlflow_repeats} (mlflow) alternating repeats\n")
    print("| workload | tracker | bare wall (s) | tracked wall (s) | +flush (s) | wall overhead | "
          "bare CPU (s) | tracked CPU (s) | CPU overhead |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for workload in args.workloads.split(","):
        overheads: dict[str, float] = {}
        for tracker in args.trackers.split(","):
            repeats = args.repeats if tracker == "mltrail" else args.mlflow_repeats
            res = _run_worker(tracker, workload, repeats)
            if isinstance(res, str):
                print(f"| {workload} | {tracker} | failed: {res} | | | | | | |")
                continue
            over = res["tracked"] - res["bare"]
            cpu_over = res["tracked_cpu"] - res["bare_cpu"]
            overheads[tracker] = cpu_over
            flushed = f"{res['flushed']:.3f}" if tracker == "mltrail" else "-"
            print(f"| {workload} | {tracker} | {res['bare']:.3f} | {res['tracked']:.3f} | {flushed} | "
                  f"{over:+.3f} s ({100 * over / res['bare']:+.1f} %) | {res['bare_cpu']:.3f} | "
                  f"{res['tracked_cpu']:.3f} | {cpu_over:+.3f} s ({100 * cpu_over / res['bare_cpu']:+.1f} %) |")
        if "mltrail" in overheads and "mlflow" in overheads:
            # A mltrail overhead under 10 ms is below what this machine can resolve: count it as 10 ms.
            ratio = overheads["mlflow"] / max(overheads["mltrail"], 0.010)
            print(f"| {workload} | MLflow's CPU overhead / mltrail's | | | | | | | {ratio:.0f}x |")


if __name__ == "__main__":
    main()
