"""Cost of system metrics and environment capture.

Measures:

1. the system-metrics sampler's CPU use at a 1 s interval over ~30 s, as % of one core: the
   sampler thread's own CPU time (``time.thread_time()`` read on that thread, cross-checked
   with the kernel's per-thread counters through psutil) divided by wall time;
2. the time ``capture_fast()`` takes on the caller's thread (first call and steady state),
   in a git repository made for the purpose; ``capture_slow()`` for comparison (background).

Run: ``python benchmarks/bench_system.py [--duration 30] [--interval 1] [--json out.json]``.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from mltrail.core import environment
from mltrail.core.system_metrics import SystemMetricsMonitor


def bench_sampler(duration: float, interval: float) -> dict[str, float]:
    samples: list[int] = []
    thread_cpu = [0.0]

    def log_metrics(metrics: dict[str, float], step: int) -> None:
        # Runs on the sampler thread, so thread_time() is that thread's CPU time so far.
        samples.append(len(metrics))
        thread_cpu[0] = time.thread_time()

    monitor = SystemMetricsMonitor(log_metrics, interval=interval)
    started = time.perf_counter()
    monitor.start()
    time.sleep(duration)
    native_id = monitor._thread.native_id if monitor._thread else None
    kernel_cpu = next(
        (t.user_time + t.system_time for t in psutil.Process().threads() if t.id == native_id),
        float("nan"),
    )
    wall = time.perf_counter() - started
    monitor.stop()
    return {
        "interval_s": interval,
        "wall_s": round(wall, 2),
        "samples": len(samples),
        "metrics_per_sample": samples[-1] if samples else 0,
        "thread_cpu_s": round(thread_cpu[0], 4),
        "percent_of_one_core": round(100 * thread_cpu[0] / wall, 3),
        "kernel_thread_cpu_s": round(kernel_cpu, 3),
        "kernel_percent_of_one_core": round(100 * kernel_cpu / wall, 3),
    }


def _make_repo(root: Path) -> Path:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)

    (root / "pkg").mkdir(parents=True)
    for i in range(50):
        (root / "pkg" / f"mod{i}.py").write_text(f"x = {i}\n" * 100)
    script = root / "train.py"
    script.write_text("print('train')\n")
    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    for i in range(200):  # a packed-refs file of some size, as in a lived-in repository
        git("branch", f"feature/{i}")
    git("pack-refs", "--all")
    git("remote", "add", "origin", "https://github.com/org/proj.git")
    (root / "pkg" / "mod0.py").write_text("changed\n")
    return script


def _timed(fn: object, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return times


def bench_capture(repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        script = _make_repo(Path(tmp) / "proj")
        argv = [str(script), "--epochs", "3"]
        first = _timed(lambda: environment.capture_fast(argv=argv), 1)[0]
        steady = sorted(_timed(lambda: environment.capture_fast(argv=argv), repeat))
        tags = environment.capture_fast(argv=argv).tags
        assert tags.get(environment.TAG_GIT_COMMIT), tags
        slow_cold = _timed(lambda: environment.capture_slow(argv=argv), 1)[0]
        slow_warm = statistics.median(_timed(lambda: environment.capture_slow(argv=argv), 5))
        # What the caller's thread pays to hand the slow part to a thread.
        done = threading.Event()
        start = time.perf_counter()
        thread = environment.start_slow_capture(lambda c: done.set(), argv=argv)
        handoff = time.perf_counter() - start
        thread.join()
    return {
        "capture_fast_first_ms": round(first * 1e3, 3),
        "capture_fast_median_ms": round(statistics.median(steady) * 1e3, 3),
        "capture_fast_p99_ms": round(steady[int(0.99 * (len(steady) - 1))] * 1e3, 3),
        "capture_slow_cold_ms": round(slow_cold * 1e3, 1),
        "capture_slow_warm_ms": round(slow_warm * 1e3, 1),
        "start_slow_capture_handoff_ms": round(handoff * 1e3, 3),
        "installed_distributions": len(environment.installed_requirements().splitlines()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    results = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "capture": bench_capture(args.repeat),
        "sampler": bench_sampler(args.duration, args.interval),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
