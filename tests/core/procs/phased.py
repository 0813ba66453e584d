"""Child process: log a metric in phases, waiting for a gate file between phases.

    phased.py STATUS N TIMEOUT:GATE [TIMEOUT:GATE ...]

Logs N points, flushes waiting at most TIMEOUT seconds (recording whether it succeeded), writes
its status (run_id, phase, flushed: [...]), waits for the gate file to exist, and so on; after
the last gate it logs a final N points and ends the run.
"""

from __future__ import annotations

import json
import os
import sys
import time

import mltrail
from mltrail.core.writer import get_writer


def write_status(path: str, **data: object) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def main() -> None:
    status, n, gates = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    run = mltrail.start_run()
    flushed: list[bool] = []
    step = 0
    for phase, spec in enumerate(gates):
        timeout, gate = spec.split(":", 1)
        for _ in range(n):
            mltrail.log_metric("x", float(step), step=step)
            step += 1
        flushed.append(get_writer().flush(timeout=float(timeout)))
        write_status(status, run_id=run.info.run_id, phase=phase, flushed=flushed)
        while not os.path.exists(gate):
            time.sleep(0.02)
    for _ in range(n):
        mltrail.log_metric("x", float(step), step=step)
        step += 1
    mltrail.end_run()
    write_status(status, run_id=run.info.run_id, phase=len(gates), flushed=flushed, done=True)


if __name__ == "__main__":
    main()
