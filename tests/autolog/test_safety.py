"""Invariant 1: our failures never reach the user's call; the user's exceptions reach them unchanged."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import toyfw

from harness import check_fault_tolerance, check_user_exception, non_strict
from mltrail.autolog import AutologWarning, Call, Patch, _safety, enable, safe_hook

THIS_FILE = __file__


class OurBug(Exception):
    pass


def _broken_pre(call: Call) -> None:
    call.kwargs["epochs"] = 99  # half-done work that must not reach the original
    call.args = ([100.0],)
    raise OurBug("pre broke")


def _broken_post(call: Call, result: Any) -> None:
    raise OurBug("post broke")


def _use(toy: Any, monkeypatch: pytest.MonkeyPatch, *patches: Patch) -> None:
    monkeypatch.setattr(toy, "PATCHES", patches)
    enable("toy")


def test_a_failing_pre_step_calls_the_original_with_untouched_arguments(
    toy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(toy, monkeypatch, Patch("toyfw", "train", pre=_broken_pre, run="none"))
    with non_strict(), pytest.warns(AutologWarning, match="toy: pre failed") as record:
        assert toyfw.train([1.0, 3.0], epochs=1) == 2.0
    assert "OurBug: pre broke" in str(record[0].message)


def test_a_failing_post_step_still_returns_the_result(toy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(toy, monkeypatch, Patch("toyfw", "Estimator.fit", post=_broken_post, run="none"))
    est = toyfw.Estimator(2.0)
    with non_strict(), pytest.warns(AutologWarning, match="toy: post failed"):
        assert est.fit([1, 2]) is est
    assert est.coef_ == 6.0


def test_strict_mode_raises_our_error(toy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRAIL_AUTOLOG_STRICT", "1")
    _use(toy, monkeypatch, Patch("toyfw", "Estimator.fit", post=_broken_post, run="none"))
    with pytest.raises(OurBug, match="post broke"):
        toyfw.Estimator().fit([1])


def test_warns_once_per_step_and_points_at_the_users_line(toy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(
        toy, monkeypatch,
        Patch("toyfw", "train", pre=_broken_pre, post=_broken_post, run="none"),
        Patch("toyfw", "Estimator.fit", post=_broken_post, run="none", subclasses=True),
    )
    with non_strict(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            toyfw.train([1.0])
            toyfw.Ensemble([toyfw.Estimator()]).fit([1])  # the nested fit fails nothing: not run
    # One warning per (integration, step), however many calls and patches fail at that step.
    assert sorted(str(w.message).split(" failed")[0] for w in caught) == [
        "mltrail autolog for toy: post",
        "mltrail autolog for toy: pre",
    ]
    assert all(w.category is AutologWarning for w in caught)
    assert len(caught) == 2  # pre and post: once each, over six calls
    assert all(w.filename == THIS_FILE for w in caught)


def test_warnings_as_errors_do_not_turn_our_failure_into_the_users(
    toy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(toy, monkeypatch, Patch("toyfw", "Estimator.fit", post=_broken_post, run="none"))
    with non_strict(), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert toyfw.Estimator(3.0).fit([1]).coef_ == 3.0


def test_silent_integration_does_not_warn(toy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mltrail.autolog import AutologConfig

    monkeypatch.setattr(toy, "PATCHES", (Patch("toyfw", "train", post=_broken_post, run="none"),))
    enable("toy", AutologConfig(silent=True))
    with non_strict(), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert toyfw.train([2.0], epochs=1) == 2.0


def test_safe_hook_keeps_a_callback_from_raising_into_the_framework() -> None:
    class Callback:
        @safe_hook("toy", "on_epoch")
        def on_epoch(self, epoch: int, loss: float) -> None:
            raise OurBug("callback broke")

    with non_strict(), pytest.warns(AutologWarning, match="toy: on_epoch failed"):
        assert toyfw.train([1.0], epochs=2, callbacks=[Callback()]) == 1.5
    assert Callback.on_epoch.__name__ == "on_epoch"


def test_keyboard_interrupt_in_our_step_is_not_swallowed(toy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(call: Call, result: Any) -> None:
        raise KeyboardInterrupt

    _use(toy, monkeypatch, Patch("toyfw", "train", post=interrupted, run="none"))
    with non_strict(), pytest.raises(KeyboardInterrupt):
        toyfw.train([1.0])


# ---------------------------------------------------------------------- the harness, exercised
def test_harness_faults_every_step_of_the_toy_integration(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    points = check_fault_tolerance(
        lambda: toyfw.train([1.0, 2.0, 3.0], epochs=3), integration="toy",
        expect_points={"run_start", "pre", "post", "run_end", "on_epoch"},
    )
    assert points == ["on_epoch", "post", "pre", "run_end", "run_start"]
    check_fault_tolerance(
        lambda: toyfw.Ensemble([toyfw.Linear(2.0), toyfw.Estimator()]).fit([1, 2]).coef_,
        integration="toy",
        expect_points={"run_start", "pre", "post", "run_end"},
    )
    check_fault_tolerance(lambda: toyfw.Estimator.describe(1), integration="toy")


def test_harness_catches_an_integration_that_breaks_the_call(
    toy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def swallowing_pre(call: Call) -> None:
        try:
            _safety._fault_check("toy", "inner")
        except _safety.InjectedFault:
            call.args = ([0.0],)  # "recovers" by changing what the user asked for

    _use(toy, monkeypatch, Patch("toyfw", "train", pre=swallowing_pre, run="none"))
    with pytest.raises(AssertionError, match="fault at inner: result"):
        check_fault_tolerance(lambda: toyfw.train([4.0], epochs=1), integration="toy")


def test_harness_user_exception_propagates_unchanged(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    check_user_exception(lambda boom: toyfw.Estimator(hook=boom).fit([1]))
    check_user_exception(lambda boom: toyfw.Ensemble([toyfw.Linear(hook=boom)]).fit([1]))

    class Raising:
        def on_epoch(self, epoch: int, loss: float) -> None:
            self.boom()

    cb = Raising()
    check_user_exception(lambda boom: (setattr(cb, "boom", boom), toyfw.train([1.0], callbacks=[cb])))


def test_user_exception_is_the_same_object_in_strict_mode_too(toy: Any, sqlite_uri: str) -> None:
    enable("toy")
    error = ValueError("mine")

    def hook() -> None:
        raise error

    with pytest.raises(ValueError) as info:
        toyfw.Estimator(hook=hook).fit([1])
    assert info.value is error
    assert info.value.__context__ is None
    assert info.traceback[-1].name == "hook"
