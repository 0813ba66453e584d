"""Child process: the disk fills up mid-run (RLIMIT_FSIZE), then space comes back.

    disk_full.py

Starts a run, logs 1,000 points and flushes; then caps the size of every file it writes just
above the store's current files, logs 200,000 points (the writes now fail with EFBIG, SIGXFSZ
being ignored), tries a short flush (which must fail), logs 1,000 more, lifts the cap, flushes
(which must succeed) and ends the run. Prints the run id and the flush results as JSON.
"""

from __future__ import annotations

import json
import os
import resource
import signal

import mltrail
from mltrail.core.writer import get_writer


def main() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the cap fail with EFBIG instead
    run = mltrail.start_run()
    step = 0

    def log(n: int) -> None:
        nonlocal step
        for _ in range(n):
            mltrail.log_metric("x", float(step), step=step)
            step += 1

    log(1000)
    mltrail.flush()
    db = os.path.join(os.environ["MLTRAIL_TRACKING_URI"], "mltrail.db")
    sizes = [os.path.getsize(p) for p in (db, db + "-wal", db + "-shm") if os.path.exists(p)]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + 64 * 1024, hard))
    log(200_000)
    full = get_writer().flush(timeout=1.0)
    log(1000)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    recovered = get_writer().flush(timeout=30.0)
    mltrail.end_run()
    print(json.dumps({"run_id": run.info.run_id, "full": full, "recovered": recovered, "logged": step}))


if __name__ == "__main__":
    main()
