"""Nothing we patch breaks pickling or processes (pickle, cloudpickle, joblib/loky, multiprocessing)."""

from __future__ import annotations

import copy
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cloudpickle
import joblib
import pytest
import toyfw

import mltrail
from mltrail.autolog import enable
from mltrail.autolog._wrapping import PatchWrapper

HERE = Path(__file__).parent


class Scaled(toyfw.Linear):
    """A user subclass in an importable module, defined before autolog is enabled."""

    def fit(self, data: Any) -> Scaled:
        super().fit([10 * x for x in data])
        return self


def fit_predict(est: toyfw.Estimator) -> tuple[str, float]:
    """A worker's job: fit a patched estimator and predict (module level: importable)."""
    return type(est).__name__, est.fit([1, 2]).predict(2.0)


def _estimators() -> list[toyfw.Estimator]:
    return [toyfw.Estimator(2.0), toyfw.Linear(3.0), toyfw.Ensemble([toyfw.Estimator()]), Scaled()]


EXPECTED = [("Estimator", 12.0), ("Linear", 36.0), ("Ensemble", 6.0), ("Scaled", 120.0)]


@pytest.mark.parametrize(
    ("dumps", "loads"),
    [
        (pickle.dumps, pickle.loads),
        (cloudpickle.dumps, cloudpickle.loads),
        (lambda obj: pickle.dumps(obj, protocol=2), pickle.loads),
    ],
    ids=["pickle", "cloudpickle", "pickle-protocol-2"],
)
def test_patched_instances_methods_and_functions_round_trip(
    toy: Any, sqlite_uri: str, dumps: Any, loads: Any
) -> None:
    enable("toy")
    assert isinstance(vars(Scaled)["fit"], PatchWrapper)
    for est, expected in zip(_estimators(), EXPECTED, strict=True):
        fitted = est.fit([1, 2])
        again = loads(dumps(fitted))
        assert again == fitted and type(again) is type(fitted)
        assert fit_predict(loads(dumps(est))) == expected
        bound = loads(dumps(est.fit))  # joblib.delayed(est.fit) pickles a bound method
        assert bound([1, 2]).predict(2.0) == expected[1]
    assert loads(dumps(toyfw.train))([2.0], epochs=1) == 2.0
    assert loads(dumps(toyfw.Estimator.create))(4.0).scale == 4.0
    assert loads(dumps(vars(toyfw.Estimator)["fit"])) is not None


def test_joblib_dump_and_copies(toy: Any, tmp_path: Path, sqlite_uri: str) -> None:
    enable("toy")
    est = Scaled().fit([1])
    joblib.dump(est, tmp_path / "est.joblib")
    assert joblib.load(tmp_path / "est.joblib") == est
    assert copy.deepcopy(est) == est and copy.copy(est) == est
    holder = {"fit": est.fit, "train": toyfw.train}
    cloned = copy.deepcopy(holder)
    assert cloned["fit"]([2]).coef_ == 40.0 and cloned["train"] is toyfw.train


# Python 3.12+ warns that fork() in a process with threads (our background writer) may
# deadlock; the fork start method is exactly what this test is about.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_forked_workers_run_patched_calls(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(fit_predict, _estimators()) == EXPECTED
    # The parent's own calls still log as usual afterwards.
    toyfw.Estimator().fit([1])
    mltrail.flush()
    runs = mltrail.search_runs(output_format="list")
    assert runs and all(r.info.status == "FINISHED" for r in runs)


MAIN_SCRIPT = """
import multiprocessing, sys
import joblib
import mltrail
from mltrail.autolog import enable, registry
import toyfw

class MainEstimator(toyfw.Estimator):          # defined in __main__ after autolog(): patched
    def fit(self, data):
        super().fit([x + 1 for x in data])
        return self

def job(est):
    return est.fit([1, 2]).predict(1.0)

def fitted(est):
    return est.predict(1.0)

if __name__ == "__main__":
    registry.register(registry.Integration("toy", ("toyfw",), "toy_integration"))
    enable("toy")
    from mltrail.autolog._wrapping import PatchWrapper
    assert isinstance(vars(MainEstimator)["fit"], PatchWrapper)
    # MainEstimator travels by value with loky (cloudpickle), with its original fit; toyfw's
    # classes and the bound methods travel by reference.
    ests = [MainEstimator(1.0), MainEstimator(2.0), toyfw.Linear(3.0), toyfw.Ensemble([toyfw.Estimator()])]
    parallel = joblib.Parallel(n_jobs=2, backend="loky")
    results = {"loky": parallel(joblib.delayed(job)(e) for e in ests)}
    results["loky-bound"] = [fitted(f) for f in parallel(joblib.delayed(e.fit)([1, 2]) for e in ests)]
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(2) as pool:
            results[method] = pool.map(job, ests)
    results["here"] = [job(e) for e in ests]
    print(results)
"""


FORK_WARNING = "ignore:This process:DeprecationWarning"  # Python 3.12+: fork with threads


def test_a_class_defined_in_main_after_autolog_crosses_processes(tmp_path: Path) -> None:
    script = tmp_path / "main_script.py"
    script.write_text(textwrap.dedent(MAIN_SCRIPT))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        MLTRAIL_AUTOLOG_STRICT="1",
        MLTRAIL_TRACKING_URI=str(tmp_path / "store"),
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-W", FORK_WARNING, str(script)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    expected = [5.0, 10.0, 18.0, 3.0]
    assert proc.stdout.strip().splitlines()[-1] == str(
        {"loky": expected, "loky-bound": expected, "fork": expected, "spawn": expected, "here": expected}
    )
