"""Child process: fork while the writer's locks are held, and fork while the writer writes.

Prints one JSON line: run_id, the parent's point count, each forked child's exit code (or
"hung" if it had to be killed after 60 s).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import mltrail
import mltrail.core.writer
from mltrail.core.store import get_store
from mltrail.core.writer import get_writer

# A fork waits up to this long for a write in progress; the held-lock case below would wait it
# out on every run, so keep it short here.
mltrail.core.writer._FORK_WAIT = 0.1


DEADLINE = time.monotonic() + 60.0  # for all children together


def wait_child(pid: int) -> int | str:
    deadline = DEADLINE
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hung"
        time.sleep(0.01)


def log(key: str, start: int, n: int) -> int:
    for i in range(start, start + n):
        mltrail.log_metric(key, float(i), step=i)
    return start + n


def main() -> None:
    run = mltrail.start_run()
    writer = get_writer()
    store = get_store()
    step = log("parent", 0, 500)  # still unwritten at the first fork

    # 1. Another thread holds the writer's and the store's locks at the moment of the fork
    #    (as the writer thread does in the middle of a write).
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with writer._io_lock, writer._registry_lock, store._all_lock:  # type: ignore[attr-defined]
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        log("held_locks_child", 0, 1000)
        mltrail.flush()  # would wait forever on an inherited lock
        os._exit(0)
    held_locks = wait_child(pid)
    release.set()
    holder.join()

    # 2. Fork right after waking the writer on a large backlog, so forks land mid-write; each
    #    child logs and leaves by normal interpreter exit (atexit drains it).
    pids = []
    for k in range(8):
        step = log("parent", step, 5000)
        writer.wake()
        pid = os.fork()
        if pid == 0:
            log(f"child{k}", 0, 500)
            sys.exit(0)
        pids.append(pid)
    children = [wait_child(p) for p in pids]
    mltrail.end_run()
    print(
        json.dumps(
            {
                "run_id": run.info.run_id,
                "parent_points": step,
                "held_locks": held_locks,
                "children": children,
            }
        )
    )


if __name__ == "__main__":
    main()
