"""Child process: start (or resume) a run and log a metric, then end in the way asked.

Writes its progress as JSON to STATUS (atomically): run_id, pid, logged, phase.

    log_points.py STATUS [--key K] [--start S] [--count N] [--resume-key R] [--run-name N]
                  [--flush-every F] [--keep-logging] [--own-sigterm CODE MARKER] [--gate FILE]
                  [--then exit|end|raise|interrupt|wait|flush-then-wait]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def write_status(path: str, **data: object) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("status")
    parser.add_argument("--key", default="x")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--resume-key")
    parser.add_argument("--run-name")
    parser.add_argument("--flush-every", type=int, default=0)
    parser.add_argument("--keep-logging", action="store_true")
    parser.add_argument("--own-sigterm", nargs=2, metavar=("CODE", "MARKER"))
    parser.add_argument("--gate", help="wait for this file to exist before the --then step")
    parser.add_argument(
        "--then", default="exit", choices=["exit", "end", "raise", "interrupt", "wait", "flush-then-wait"]
    )
    args = parser.parse_args()

    if args.own_sigterm:
        code, marker = int(args.own_sigterm[0]), args.own_sigterm[1]

        def handler(signum: int, frame: object) -> None:
            with open(marker, "w") as fh:
                fh.write("called")
            sys.exit(code)

        signal.signal(signal.SIGTERM, handler)

    import mltrail

    run = mltrail.start_run(run_name=args.run_name, resume_key=args.resume_key)
    status = {"run_id": run.info.run_id, "pid": os.getpid()}
    write_status(args.status, **status, logged=0, phase="started")
    log_metric = mltrail.log_metric
    key = args.key
    end = args.start + args.count
    for i in range(args.start, end):
        log_metric(key, float(i), step=i)
        if args.flush_every and (i + 1) % args.flush_every == 0:
            mltrail.flush()
            write_status(args.status, **status, logged=i + 1 - args.start, phase="logging")
    write_status(args.status, **status, logged=args.count, phase="logged")

    if args.keep_logging:  # "training goes on": more points, slowly, until killed
        i = end
        while True:
            for _ in range(100):
                log_metric(key, float(i), step=i)
                i += 1
            time.sleep(0.01)

    if args.gate:
        while not os.path.exists(args.gate):
            time.sleep(0.02)
    if args.then == "end":
        mltrail.end_run()
    elif args.then == "raise":
        raise RuntimeError("training blew up")
    elif args.then == "interrupt":
        raise KeyboardInterrupt  # as Ctrl-C would
    elif args.then == "wait":
        while True:
            time.sleep(1)
    elif args.then == "flush-then-wait":
        write_status(args.status, **status, logged=args.count, phase="flushing")
        mltrail.flush()
        write_status(args.status, **status, logged=args.count, phase="flushed")
        while True:
            time.sleep(1)
    # "exit": leave the run open; interpreter exit drains the queue and ends it FINISHED.


if __name__ == "__main__":
    main()
