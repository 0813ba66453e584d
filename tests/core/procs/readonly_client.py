"""Child process: log through Client into an existing run while the store file is read-only.

    readonly_client.py DB_PATH RUN_ID N_BEFORE N_DURING N_AFTER

The test starts this process unable to override file modes, with the store's database file at
mode 0444. It logs N_BEFORE points, tries a short flush (which must fail: the data is held),
logs N_DURING more, makes the file writable again, flushes (which must succeed: its connections
are re-opened), logs N_AFTER more from step 10,000 on and flushes again. Prints the three flush
results as JSON.
"""

from __future__ import annotations

import json
import os
import sys

import mltrail
from mltrail.core.writer import get_writer


def main() -> None:
    db, run_id = sys.argv[1], sys.argv[2]
    n_before, n_during, n_after = (int(a) for a in sys.argv[3:6])
    client = mltrail.Client()
    step = 0
    for _ in range(n_before):
        client.log_metric(run_id, "x", float(step), step=step)
        step += 1
    held = get_writer().flush(timeout=1.0)
    for _ in range(n_during):
        client.log_metric(run_id, "x", float(step), step=step)
        step += 1
    os.chmod(db, 0o644)
    recovered = get_writer().flush(timeout=30.0)
    for step in range(10_000, 10_000 + n_after):
        client.log_metric(run_id, "x", float(step), step=step)
    after = get_writer().flush(timeout=30.0)
    print(json.dumps({"held": held, "recovered": recovered, "after": after}))


if __name__ == "__main__":
    main()
