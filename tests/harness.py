"""The fault-injection harness every integration's tests use (DESIGN invariant 1).

Two checks, for one patched entry point at a time:

``check_fault_tolerance(call, integration=...)``
    Runs ``call()`` once to learn which of our hook points it reaches (pre, post, run_start,
    run_end, callbacks decorated with ``safe_hook``, the steps of the background jobs it
    queued — each call is followed by waiting for those...), then, for each point in turn, makes
    that point raise and runs ``call()`` twice more. Each time the user's call must return
    the same result as with nothing injected and raise nothing; across both runs exactly one
    ``AutologWarning`` must name the point (warn once), attributed to the user's line.

``check_user_exception(call)``
    ``call(boom)`` must arrange for the user's code to call ``boom()`` from inside the patched
    call (an estimator's ``fit``, a callback, a ``type=`` converter...). The exception ``boom``
    raises must come out of the patched call as the very same object, its traceback still
    ending at the line that raised it, with nothing of ours chained to it.

Both run with strict mode off, as a user would; the rest of the suite runs strict.

Example::

    from harness import check_fault_tolerance, check_user_exception

    def test_fit_survives_our_failures(sqlite_uri):
        mltrail.integrations.sklearn.autolog()
        X, y = load_iris(return_X_y=True)
        check_fault_tolerance(
            lambda: LogisticRegression(max_iter=50).fit(X, y).predict(X).tolist(),
            integration="sklearn",
        )
"""

from __future__ import annotations

import operator
import os
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from mltrail.autolog import AutologWarning, _safety, jobs

T = TypeVar("T")
__all__ = ["UserError", "check_fault_tolerance", "check_user_exception", "non_strict"]


class UserError(Exception):
    """The exception "the user's code" raises in :func:`check_user_exception`."""


@contextmanager
def non_strict() -> Iterator[None]:
    """Turn ``MLTRAIL_AUTOLOG_STRICT`` off inside the block: our errors warn, as for users."""
    previous = os.environ.get(_safety.STRICT_ENV)
    os.environ[_safety.STRICT_ENV] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_safety.STRICT_ENV, None)
        else:
            os.environ[_safety.STRICT_ENV] = previous


def check_fault_tolerance(
    call: Callable[[], T],
    *,
    integration: str,
    same: Callable[[T, T], bool] = operator.eq,
    expect_points: set[str] | None = None,
    user_file: str | None = None,
) -> list[str]:
    """Make each hook point ``call()`` reaches raise in turn; the user's call must not notice.

    Args:
        call: runs the patched entry point the way a user would and returns something
            comparable (a prediction, a score), the same on every run.
        integration: the integration whose hook points are faulted.
        same: how to compare results (default ``==``).
        expect_points: points that must be among those reached (a guard against a test that
            silently stopped reaching a step).
        user_file: the file the warning must be attributed to; default: where ``call`` is defined.

    Returns:
        The points that were faulted, sorted.
    """
    if user_file is None:
        code = getattr(call, "__code__", None)
        user_file = code.co_filename if code is not None else None
    jobs.flush()  # work queued before the check is not part of call()
    with non_strict():
        _safety.reset_warnings()
        with warnings.catch_warnings(record=True) as clean:
            warnings.simplefilter("always")
            with _safety.record_points() as reached:
                baseline = _drained(call)
        ours = [w for w in clean if issubclass(w.category, AutologWarning)]
        assert not ours, f"a clean run warned: {[str(w.message) for w in ours]}"
        points = sorted(point for name, point in reached if name == integration)
        assert points, f"call() reached no hook point of {integration!r}: is it patched and on?"
        if expect_points is not None:
            missing = set(expect_points) - set(points)
            assert not missing, f"call() did not reach {sorted(missing)} (reached {points})"
        for point in points:
            _safety.reset_warnings()
            with warnings.catch_warnings(record=True) as caught, _safety.inject_fault(integration, point):
                warnings.simplefilter("always")
                first = _drained(call)
                second = _drained(call)
            assert same(first, baseline), f"fault at {point}: result {first!r} != {baseline!r}"
            assert same(second, baseline), f"fault at {point}: result {second!r} != {baseline!r}"
            ours = [w for w in caught if issubclass(w.category, AutologWarning)]
            assert len(ours) == 1, (
                f"fault at {point}: expected one AutologWarning over two calls, got "
                f"{[str(w.message) for w in ours]}"
            )
            message = str(ours[0].message)
            assert f"{integration}: {point} failed" in message, message
            if user_file is not None:
                assert os.path.samefile(ours[0].filename, user_file), (
                    f"fault at {point}: the warning points at {ours[0].filename}:{ours[0].lineno}, "
                    f"not at the user's code in {user_file}"
                )
        _safety.reset_warnings()
    return points


def _drained(call: Callable[[], T]) -> T:
    """``call()``, then wait for the background jobs it queued: their steps are hook points too."""
    result = call()
    jobs.flush()
    return result


def check_user_exception(call: Callable[[Callable[[], None]], Any]) -> UserError:
    """The user's exception must propagate out of the patched call unchanged.

    Args:
        call: ``call(boom)`` runs the patched entry point so that the user's code inside it
            calls ``boom()``.

    Returns:
        The exception, for further checks (e.g. that the run ended FAILED).
    """
    raised: list[UserError] = []

    def boom() -> None:
        exc = UserError("raised by the user's code")
        raised.append(exc)
        raise exc

    with non_strict(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call(boom)
        except UserError as exc:
            caught_exc = exc
        else:
            raise AssertionError("the user's exception did not come out of the patched call")
    assert raised, "boom() was never called: the test does not reach the user's code"
    assert caught_exc is raised[-1], "the exception that came out is not the one the user raised"
    innermost = traceback.extract_tb(caught_exc.__traceback__)[-1]
    assert innermost.name == "boom" and os.path.samefile(innermost.filename, __file__), (
        f"the traceback no longer ends where the user raised: {innermost}"
    )
    assert caught_exc.__cause__ is None and caught_exc.__context__ is None, (
        "something was chained onto the user's exception"
    )
    ours = [w for w in caught if issubclass(w.category, AutologWarning)]
    assert not ours, f"the user's exception made autolog warn: {[str(w.message) for w in ours]}"
    return caught_exc
