"""Run one measurement in a Python process of its own (used by the integration benchmarks).

Each tracker is measured in its own process, interleaved with bare rounds there. In one shared
process MLflow's rounds leave a heap several times larger (its autolog allocates millions of
objects per fit), and every garbage collection after that, in whichever round triggers it, takes
longer: the rounds that follow MLflow's pay for it. Its own process gives each tracker a bare
baseline under the same conditions as its tracked rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def in_own_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh (spawned) interpreter; ``fn`` must be a module-level function."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)
