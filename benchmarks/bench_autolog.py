"""What a patched call costs when autolog is on but has nothing to log.

Standalone: ``python benchmarks/bench_autolog.py``. Prints a markdown table of the time per
call (best of repeats, in thread CPU time) of a trivial method, bare and through each kind of patch, and the
overhead over the bare call in microseconds. Target: under 5 µs.

Cases:
  bare               the method, unpatched
  wrapt floor        a bare wrapt.FunctionWrapper passing straight through (what wrapt's binding
                     and call cost before any code of ours runs)
  steps, no run      Patch(run="none") with no-op pre and post steps
  no steps, no run   Patch(run="none") without steps
  active run wanted  Patch(run="active"), no run active (argparse's case with no run)
  nested             a patched call inside another patched call (the nesting guard's pass-through)
  disabled           a bound wrapper kept after autolog(disable=True) (inert; bound once)
"""

from __future__ import annotations

import sys
import tempfile
import time
import timeit
from typing import Any

import wrapt

from mltrail.autolog import Call, Patch, enable, registry
from mltrail.autolog.engine import disable


class Target:
    def bare(self, x: int) -> int:
        return x + 1

    def steps(self, x: int) -> int:
        return x + 1

    def plain(self, x: int) -> int:
        return x + 1

    def active(self, x: int) -> int:
        return x + 1

    def outer(self, n: int) -> int:
        inner = self.plain
        total = 0
        for i in range(n):
            total += inner(i)
        return total


def _pre(call: Call) -> None:
    pass


def _post(call: Call, result: Any) -> None:
    pass


PATCHES = (
    Patch("__main__", "Target.steps", pre=_pre, post=_post, run="none"),
    Patch("__main__", "Target.plain", run="none"),
    Patch("__main__", "Target.active", run="active"),
    Patch("__main__", "Target.outer", run="none"),
)


def _per_call_us(fn: Any, number: int, repeat: int) -> float:
    # CPU time of this thread: what the call costs, not what other processes on the box take.
    times = timeit.repeat(fn, number=number, repeat=repeat, timer=time.thread_time)
    return min(times) / number * 1e6  # the least-disturbed repeat, as timeit advises


def main() -> None:
    import mltrail

    mltrail.set_tracking_uri(tempfile.mkdtemp(prefix="mltrail-bench-"))
    registry.register(registry.Integration("bench", ("__main__",), "__main__"))
    target = Target()
    number, repeat = 200_000, 7
    results: dict[str, float] = {}
    results["bare"] = _per_call_us(lambda: target.bare(1), number, repeat)

    class Floor:
        bare = wrapt.FunctionWrapper(vars(Target)["bare"], lambda w, i, a, k: w(*a, **k))

    floor = Floor()
    results["wrapt floor"] = _per_call_us(lambda: floor.bare(1), number, repeat)
    enable("bench")
    results["steps, no run"] = _per_call_us(lambda: target.steps(1), number, repeat)
    results["no steps, no run"] = _per_call_us(lambda: target.plain(1), number, repeat)
    results["active run wanted"] = _per_call_us(lambda: target.active(1), number, repeat)
    # Inside Target.outer (patched), n calls of the patched Target.plain pass straight through.
    n = 1000
    outer_us = _per_call_us(lambda: target.outer(n), number // n, repeat)
    loop_bare = _per_call_us(lambda: sum(target.bare(i) for i in range(n)), number // n, repeat)
    results["nested"] = results["bare"] + (outer_us - loop_bare) / n
    kept = target.plain
    disable("bench")
    results["disabled"] = _per_call_us(lambda: kept(1), number, repeat)

    bare = results["bare"]
    print(f"Python {sys.version.split()[0]}, {number:,} calls x {repeat} repeats, best repeat, thread CPU time\n")
    print("| case | µs per call | overhead µs |")
    print("|---|---:|---:|")
    for case, us in results.items():
        overhead = "" if case == "bare" else f"{us - bare:.2f}"
        print(f"| {case} | {us:.3f} | {overhead} |")
    worst = max(us - bare for case, us in results.items() if case not in ("bare", "wrapt floor"))
    print(f"\nworst overhead: {worst:.2f} µs (target < 5 µs): {'OK' if worst < 5 else 'OVER'}")


if __name__ == "__main__":
    main()
