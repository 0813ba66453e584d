"""Child process: multiprocessing workers (fork Process, fork Pool, spawn Process) that log.

The fork workers log into the run they inherited through the fluent API; the spawn workers
address it by id. No worker calls flush: each one's exit must drain what it logged. Prints one
JSON line: run_id and the workers' exit codes.
"""

from __future__ import annotations

import json
import multiprocessing as mp

import mltrail


def fork_worker(rank: int) -> None:
    for i in range(2000):
        mltrail.log_metric(f"fork{rank}", float(i), step=i)


def pool_task(task: int) -> int:
    for i in range(1000):
        mltrail.log_metric(f"pool{task}", float(i), step=i)
    return task


def spawn_worker(run_id: str, rank: int) -> None:
    for i in range(1000):
        mltrail.log_metric(f"spawn{rank}", float(i), step=i, run_id=run_id)


def main() -> None:
    run = mltrail.start_run()
    for i in range(3000):  # unwritten when the workers fork: must not be written twice
        mltrail.log_metric("parent", float(i), step=i)
    fork = mp.get_context("fork")
    procs = [fork.Process(target=fork_worker, args=(r,)) for r in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    pool = fork.Pool(2)
    assert pool.map(pool_task, range(4)) == [0, 1, 2, 3]
    pool.close()
    pool.join()
    spawn = mp.get_context("spawn")
    sprocs = [spawn.Process(target=spawn_worker, args=(run.info.run_id, r)) for r in range(2)]
    for p in sprocs:
        p.start()
    for p in sprocs:
        p.join(90)
    mltrail.end_run()
    print(
        json.dumps(
            {
                "run_id": run.info.run_id,
                "exitcodes": [p.exitcode for p in procs + sprocs],
            }
        )
    )


if __name__ == "__main__":
    main()
