"""Cost of logging a Keras ``fit``: bare training, mltrail, and MLflow's Keras autolog.

A small MLP (64 -> 64 -> 10, ReLU, Adam) trains on synthetic data for ``--steps`` steps of
``--batch`` rows; each (mode, repetition) runs in its own process after a short warm-up fit, and
the table shows medians over the repetitions, modes interleaved so that machine load hits them
alike. Modes:

* ``bare``: no tracking;
* ``mltrail epoch``: ``mltrail.keras.autolog(log_models=False)``: params, summary, dataset,
  metrics per epoch;
* ``mltrail batch``: the same plus ``batch/<metric>`` on **every** step (``log_every_n_steps=1``);
* ``mlflow epoch`` / ``mlflow batch``: ``mlflow.keras.autolog`` (``mlflow.tensorflow.autolog``
  on the TensorFlow backend) the same two ways, on a SQLite store, where MLflow is installed.

Overhead per step = (mode's fit time - bare fit time) / steps, from wall time and from process
CPU time (CPU time is less disturbed by other processes on a busy machine). Two in-process
measurements follow: mltrail's per-batch hook alone, called on the training thread; and
``--pairs`` alternating fits without and with ``MLTrailCallback(log_every_n_steps=1)`` in one
process, whose median difference cancels the drift of a busy machine's load.

Run: ``KERAS_BACKEND=torch python benchmarks/bench_keras.py [--steps 2000] [--repeats 5]
[--json out.json]``. Targets (issue 8): per-batch logging on every step costs <= 3 % of step
time, and >= 5x less than MLflow's autolog logging every step.
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
from pathlib import Path
from typing import Any

MODES = ("bare", "mltrail_epoch", "mltrail_batch", "mlflow_epoch", "mlflow_batch")
TITLES = {
    "bare": "bare",
    "mltrail_epoch": "mltrail, per epoch",
    "mltrail_batch": "mltrail, every step",
    "mlflow_epoch": "MLflow autolog, per epoch",
    "mlflow_batch": "MLflow autolog, every step",
}


# ---------------------------------------------------------------------- one measurement
def _single_thread() -> None:
    # Tiny ops: one compute thread. More only spin against each other on a small machine.
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(var, "1")


def _model(keras: Any) -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(steps: int, batch: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, 64)).astype("float32")
    y = (x[:, :10].argmax(axis=1)).astype("int64")
    return x, y


def worker(mode: str, steps: int, batch: int, epochs: int, workdir: str) -> dict[str, Any]:
    _single_thread()
    import keras

    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(1)
    x, y = _data(steps // epochs, batch)
    if mode.startswith("mltrail"):
        import mltrail

        mltrail.set_tracking_uri(os.path.join(workdir, "mltrail"))
        mltrail.keras.autolog(log_models=False, log_every_n_steps=1 if mode.endswith("batch") else None)
    elif mode.startswith("mlflow"):
        import mlflow

        mlflow.set_tracking_uri("sqlite:///" + os.path.join(workdir, "mlflow.db"))
        every = {"log_every_epoch": False, "log_every_n_steps": 1} if mode.endswith("batch") else {}
        if keras.backend.backend() == "tensorflow":
            mlflow.tensorflow.autolog(log_models=False, **every)
        else:
            mlflow.keras.autolog(log_models=False, **every)
    _model(keras).fit(x[: batch * 50], y[: batch * 50], batch_size=batch, epochs=1, verbose=0)  # warm-up
    model = _model(keras)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if mode.startswith("mltrail"):
        import mltrail

        t = time.perf_counter()
        mltrail.flush()
        drain = time.perf_counter() - t
    elif mode.startswith("mlflow"):
        import mlflow

        t = time.perf_counter()
        mlflow.flush_async_logging()
        drain = time.perf_counter() - t
    else:
        drain = 0.0
    return {"mode": mode, "wall_s": wall, "cpu_s": cpu, "steps": steps, "drain_s": drain,
            "backend": keras.backend.backend(), "keras": keras.__version__}


def paired(steps: int, batch: int, pairs: int, workdir: str) -> dict[str, Any]:
    """Alternate bare fits and fits with MLTrailCallback(log_every_n_steps=1) in one process.

    Differences of neighbouring fits cancel the slow drift of a busy machine's load better than
    fits in separate processes do; the median over the pairs is reported.
    """
    _single_thread()
    import keras

    import mltrail
    from mltrail.integrations import keras as mk

    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(1)
    mltrail.set_tracking_uri(os.path.join(workdir, "mltrail-paired"))
    x, y = _data(steps, batch)
    model = _model(keras)
    model.fit(x[: batch * 50], y[: batch * 50], batch_size=batch, epochs=1, verbose=0)  # warm-up
    wall_d, cpu_d, bare_wall, bare_cpu = [], [], [], []
    with mltrail.start_run():
        for i in range(pairs):
            timed = {}
            for which in (("bare", "ours") if i % 2 == 0 else ("ours", "bare")):
                callbacks = [mk.MLTrailCallback(log_every_n_steps=1, log_model_summary=False,
                                                log_datasets=False, log_params=False)] if which == "ours" else []
                w0, c0 = time.perf_counter(), time.process_time()
                model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
                timed[which] = (time.perf_counter() - w0, time.process_time() - c0)
            wall_d.append(timed["ours"][0] - timed["bare"][0])
            cpu_d.append(timed["ours"][1] - timed["bare"][1])
            bare_wall.append(timed["bare"][0])
            bare_cpu.append(timed["bare"][1])
    mltrail.flush()
    med = statistics.median
    return {
        "steps": steps, "pairs": pairs,
        "bare_wall_us": med(bare_wall) / steps * 1e6, "bare_cpu_us": med(bare_cpu) / steps * 1e6,
        "over_wall_us": med(wall_d) / steps * 1e6, "over_cpu_us": med(cpu_d) / steps * 1e6,
    }


def hook_cost(n: int = 20000) -> dict[str, float]:
    """Time mltrail's per-batch hook alone, on this thread: µs per call, logging every call."""
    _single_thread()
    import mltrail
    from mltrail.integrations import keras as mk

    with tempfile.TemporaryDirectory() as tmp:
        mltrail.set_tracking_uri(os.path.join(tmp, "store"))
        with mltrail.start_run() as active:
            from mltrail.autolog.runs import RunHandle

            out: dict[str, float] = {}
            for every in (1, 10):
                cb = mk.MLTrailCallback(log_every_n_steps=every)
                cb._run = RunHandle(active, "keras", owned=False)
                cb._steps = n
                logs = {"accuracy": 0.5, "loss": 1.25}
                hook = cb.on_train_batch_end
                t = time.perf_counter()
                for i in range(n):
                    hook(i, logs)
                out[f"every_{every}_us"] = (time.perf_counter() - t) / n * 1e6
        mltrail.flush()
    return out


# ---------------------------------------------------------------------- the table
def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--pairs", type=int, default=10, help="bare/mltrail fit pairs in one process")
    parser.add_argument("--worker", choices=(*MODES, "paired"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "paired":
        print(json.dumps(paired(args.steps // 4, args.batch, args.pairs, args.workdir)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch, args.epochs, args.workdir)))
        return

    modes = [m for m in MODES if not m.startswith("mlflow") or _installed("mlflow")]
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for rep in range(args.repeats):
        order = modes[rep % len(modes):] + modes[: rep % len(modes)]
        for mode in order:
            with tempfile.TemporaryDirectory(prefix="bench-keras-") as tmp:
                cmd = [sys.executable, __file__, "--worker", mode, "--workdir", tmp, "--steps", str(args.steps),
                       "--batch", str(args.batch), "--epochs", str(args.epochs)]
                env = dict(os.environ, PYTHONWARNINGS="ignore", MLTRAIL_CAPTURE_PACKAGES="false",
                           TF_CPP_MIN_LOG_LEVEL="3")
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=1800)
                if proc.returncode != 0:
                    print(f"{mode} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                    continue
                results[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"[rep {rep + 1}] {mode}: {results[mode][-1]['wall_s']:.2f} s", file=sys.stderr, flush=True)

    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s", "drain_s")}
           for m, rs in results.items() if rs}
    steps = args.steps
    bare = med["bare"]
    first = next(iter(r for rs in results.values() for r in rs))
    print(f"\nKeras {first['keras']} on {first['backend']}, MLP 64-64-10, batch {args.batch}, "
          f"{steps} steps, median of {args.repeats}\n")
    print("| mode | fit wall s | per step µs | overhead µs/step (wall) | overhead % (wall) "
          "| overhead µs/step (CPU) | overhead % (CPU) | drain after fit s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    table: dict[str, Any] = {}
    for mode, m in med.items():
        per_step = m["wall_s"] / steps * 1e6
        over_wall = (m["wall_s"] - bare["wall_s"]) / steps * 1e6
        over_cpu = (m["cpu_s"] - bare["cpu_s"]) / steps * 1e6
        pct_wall = 100 * over_wall / (bare["wall_s"] / steps * 1e6)
        pct_cpu = 100 * over_cpu / (bare["cpu_s"] / steps * 1e6)
        table[mode] = {**m, "over_wall_us": over_wall, "over_cpu_us": over_cpu,
                       "pct_wall": pct_wall, "pct_cpu": pct_cpu}
        print(f"| {TITLES[mode]} | {m['wall_s']:.2f} | {per_step:.0f} | {over_wall:+.1f} | {pct_wall:+.1f} % "
              f"| {over_cpu:+.1f} | {pct_cpu:+.1f} % | {m['drain_s']:.2f} |")
    hook = hook_cost()
    print(f"\nmltrail's per-batch hook alone, on the training thread: {hook['every_1_us']:.1f} µs per "
          f"logged step ({100 * hook['every_1_us'] / (bare['cpu_s'] / steps * 1e6):.2f} % of a bare step's "
          f"CPU time), {hook['every_10_us']:.2f} µs per step with log_every_n_steps=10")
    if "mlflow_batch" in table:
        # Differences of whole fits are noisy on a busy machine: never count ours as less than
        # what its hook alone was measured to cost.
        ours = max(table["mltrail_batch"]["over_cpu_us"], hook["every_1_us"])
        theirs = table["mlflow_batch"]["over_cpu_us"]
        print(f"\nEvery-step logging, CPU overhead per step: MLflow {theirs:.0f} µs, mltrail {ours:.0f} µs "
              f"-> MLflow costs {theirs / ours:.0f}x more")
    with tempfile.TemporaryDirectory(prefix="bench-keras-") as tmp:
        cmd = [sys.executable, __file__, "--worker", "paired", "--workdir", tmp, "--steps", str(args.steps),
               "--batch", str(args.batch), "--pairs", str(args.pairs)]
        env = dict(os.environ, PYTHONWARNINGS="ignore", MLTRAIL_CAPTURE_PACKAGES="false", TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=3600)
    pair: dict[str, Any] | None = None
    if proc.returncode == 0:
        pair = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"\nPaired in one process ({pair['pairs']} alternating fits of {pair['steps']} steps each, "
              f"median difference): every-step logging adds {pair['over_cpu_us']:+.1f} µs CPU "
              f"({100 * pair['over_cpu_us'] / pair['bare_cpu_us']:+.2f} %) and {pair['over_wall_us']:+.1f} µs "
              f"wall ({100 * pair['over_wall_us'] / pair['bare_wall_us']:+.2f} %) to a "
              f"{pair['bare_wall_us']:.0f} µs step")
    else:
        print(f"paired measurement failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"table": table, "hook": hook, "paired": pair, "raw": results}, indent=2))


if __name__ == "__main__":
    main()
