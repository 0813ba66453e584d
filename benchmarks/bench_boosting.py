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

For each workload and tracker, one process interleaves bare and tracked trainings round by
round, alternating their order, so that both see the same load on the machine (a bare training
runs with every autolog disabled: the originals are back); each tracker writes to a fresh store
in a temporary directory. mltrail and MLflow are measured in separate processes of the same run
(``isolated.py`` says why); each tracked row is compared with the bare rounds of its own
process. With both trackers
at their defaults, a tracked training starts a run, logs params, every round's metrics, feature
importances and the model, and ends the run. Each row gives the median over the repeats after
one warm-up of each kind:

* ``wall``: the time the training call takes (what the user waits for);
* ``+flush``: for mltrail, the call plus ``mltrail.flush()`` (everything durable in the store);
* ``caller CPU``: CPU time of the calling thread during the call (what training itself pays;
  the steadiest figure on a busy machine);
* ``CPU``: CPU time of the whole process (all threads, the background writer and environment
  capture included) during the call, for mltrail until its flush returned: steadier than wall
  time on a busy machine;
* overheads: tracked minus bare, and as a percentage of bare.

Targets (issue 9): mltrail <= 5 % over bare; MLflow's overhead at least 5x mltrail's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from typing import Any

from isolated import in_own_process

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
    import importlib

    framework = "xgboost" if workload.startswith("xgb") else "lightgbm"
    if tracker == "mltrail":
        importlib.import_module(f"mltrail.integrations.{framework}").autolog(disable=not on)
    else:
        importlib.import_module(f"mlflow.{framework}").autolog(disable=not on, silent=True)


def measure(workload: str, repeats: int, trackers: list[str]) -> dict[str, dict[str, float]]:
    """Interleave bare and tracked trainings in this process, rotating the order each round."""
    warnings.filterwarnings("ignore")
    if "mltrail" in trackers:
        import mltrail

        mltrail.set_tracking_uri(tempfile.mkdtemp(prefix="bench-boosting-mltrail-"))
    if "mlflow" in trackers:
        import logging

        import mlflow

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        mlflow.set_tracking_uri(f"sqlite:///{tempfile.mkdtemp(prefix='bench-boosting-mlflow-')}/mlflow.db")
    train = _trainer(workload)
    kinds = ["bare", *trackers]
    samples: dict[str, dict[str, list[float]]] = {k: {"wall": [], "flushed": [], "cpu": [], "tcpu": []} for k in kinds}
    for i in range(repeats + 1):  # round 0 warms up
        shift = i % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            if kind != "bare":
                _toggle(kind, workload, True)
            start, cpu, tcpu = time.perf_counter(), time.process_time(), time.thread_time()
            train()
            wall, tcpu = time.perf_counter() - start, time.thread_time() - tcpu
            if kind == "mltrail":
                mltrail.flush()
            total, cpu = time.perf_counter() - start, time.process_time() - cpu
            if kind != "bare":
                _toggle(kind, workload, False)
            if i:
                samples[kind]["wall"].append(wall)
                samples[kind]["flushed"].append(total)
                samples[kind]["cpu"].append(cpu)
                samples[kind]["tcpu"].append(tcpu)
    return {k: {m: statistics.median(v) for m, v in s.items()} for k, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--trackers", default="mltrail,mlflow")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import lightgbm
    import xgboost

    trackers = args.trackers.split(",")
    print(f"xgboost {xgboost.__version__}, lightgbm {lightgbm.__version__}, {ROUNDS} rounds, "
          f"make_classification(10000, 20), eval set logged every round, 1 thread; median of "
          f"{args.repeats} rounds interleaved with bare ones, one process per tracker ({', '.join(trackers)}); load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| workload | bare wall (s) | tracker | tracked wall (s) | wall overhead | +flush (s) | "
          "caller CPU overhead | bare CPU (s) | tracked CPU (s) | process CPU overhead |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for workload in args.workloads.split(","):
        overheads: dict[str, float] = {}
        for tracker in trackers:
            # Each tracker in a process of its own, against its own bare rounds (see isolated.py).
            res = in_own_process(measure, workload, args.repeats, [tracker])
            bare, t = res["bare"], res[tracker]
            over = t["wall"] - bare["wall"]
            cpu_over = t["cpu"] - bare["cpu"]
            overheads[tracker] = max(t["flushed"] - bare["wall"], 0.0) if tracker == "mltrail" else over
            flushed = f"{t['flushed']:.3f}" if tracker == "mltrail" else "-"
            tover = t["tcpu"] - bare["tcpu"]
            print(f"| {workload} | {bare['wall']:.3f} | {tracker} | {t['wall']:.3f} | "
                  f"{over:+.3f} s ({100 * over / bare['wall']:+.1f} %) | {flushed} | "
                  f"{tover:+.3f} s ({100 * tover / bare['tcpu']:+.1f} %) | {bare['cpu']:.3f} | "
                  f"{t['cpu']:.3f} | {cpu_over:+.3f} s ({100 * cpu_over / bare['cpu']:+.1f} %) |", flush=True)
        if "mltrail" in overheads and "mlflow" in overheads:
            # An mltrail overhead under 10 ms is below what this machine can resolve: count it as 10 ms.
            ratio = overheads["mlflow"] / max(overheads["mltrail"], 0.010)
            print(f"| {workload} | | MLflow's wall overhead / mltrail's (+flush) | | {ratio:.0f}x | | | | | |")
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
