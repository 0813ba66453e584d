"""XGBoost/LightGBM autolog overhead in instructions on the training thread (callgrind).

Wall time for a one-second training moves by ±10 % between runs on a small shared machine;
instructions executed do not. This runs the training of one ``bench_boosting.py`` workload under
``valgrind --tool=callgrind --separate-threads=yes`` four times — autolog off and on, each with
zero and with one measured training after a warm-up — and reports, for the main thread, the
instructions of one training (the difference of the two counts) and mltrail's share. The
tracked count includes the ``mltrail.flush()`` after the training (its writing runs on the
calling thread), so it is an upper bound for what the training itself pays. Needs valgrind;
takes a few minutes per workload::

    python benchmarks/boosting_instructions.py --workload lgb-train
    python benchmarks/boosting_instructions.py --workload xgb-sklearn
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor


def _child(workload: str, on: bool, measured: int) -> None:
    """Inside valgrind: warm up once, then train ``measured`` times."""
    import warnings

    warnings.filterwarnings("ignore")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_boosting import _toggle, _trainer

    import mltrail

    mltrail.set_tracking_uri(tempfile.mkdtemp(prefix="bench-instructions-"))
    train = _trainer(workload)
    if on:
        _toggle("mltrail", workload, True)
    for _ in range(1 + measured):
        train()
        mltrail.flush()


def _main_thread_instructions(out_prefix: str) -> int:
    """The ``summary:`` of the main thread's callgrind file (``<prefix>-01``)."""
    with open(f"{out_prefix}-01") as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no summary in {out_prefix}-01")


def _run(workload: str, on: bool, measured: int, workdir: str) -> int:
    prefix = os.path.join(workdir, f"cg.{int(on)}.{measured}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={prefix}",
         sys.executable, os.path.abspath(__file__), "--child", workload, str(int(on)), str(measured)],
        check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return _main_thread_instructions(prefix)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="lgb-train")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="callgrind-")
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = {(on, n): pool.submit(_run, args.workload, on, n, workdir) for on in (False, True) for n in (0, 1)}
        got = {k: f.result() for k, f in counts.items()}
    bare = got[(False, 1)] - got[(False, 0)]
    tracked = got[(True, 1)] - got[(True, 0)]
    print(f"{args.workload}: one training on the main thread: bare {bare:,} instructions, "
          f"autologged {tracked:,} (+{100 * (tracked - bare) / bare:.2f} %, flush included)")


if __name__ == "__main__":
    main()
