"""Patching and reverting: every kind of attribute, subclasses, exact restore, one wrapper."""

from __future__ import annotations

from typing import Any

import pytest
import toyfw

from mltrail.autolog import AutologConfig, Patch, autolog_status, disable, enable, get_config
from mltrail.autolog._wrapping import PatchWrapper
from mltrail.core.errors import InvalidValueError


def _originals() -> dict[tuple[type | object, str], Any]:
    slots = [
        (toyfw, "train"),
        (toyfw.Estimator, "fit"),
        (toyfw.Estimator, "create"),
        (toyfw.Estimator, "describe"),
        (toyfw.Linear, "fit"),
        (toyfw.Ensemble, "fit"),
    ]
    return {(owner, attr): vars(owner)[attr] for owner, attr in slots}


def test_every_kind_of_attribute_is_wrapped_and_still_works(toy: Any) -> None:
    enable("toy")
    for (owner, attr), _ in _originals().items():
        assert isinstance(vars(owner)[attr], PatchWrapper), (owner, attr)
    # function, method, classmethod (via class and instance), staticmethod (via class and instance)
    assert toyfw.train([1.0, 3.0], epochs=1) == 2.0
    assert toyfw.Estimator(2.0).fit([1, 2]).coef_ == 6.0
    made = toyfw.Estimator.create(3.0)
    assert type(made) is toyfw.Estimator and made.scale == 3.0
    assert type(toyfw.Linear.create(1.0)) is toyfw.Linear
    assert toyfw.Estimator.describe(2) == "Estimator(scale=2)"
    assert toyfw.Estimator().describe(5) == "Estimator(scale=5)"
    assert toy.SEEN == [
        ("epoch", 0),
        ("train", 2.0),
        ("fit", "Estimator"),
        ("create", toyfw.Estimator),
        ("create", toyfw.Linear),
        ("describe", "Estimator(scale=2)"),
        ("describe", "Estimator(scale=5)"),
    ]


def test_subclass_overrides_are_patched_including_classes_defined_later(toy: Any) -> None:
    enable("toy")
    assert isinstance(vars(toyfw.Linear)["fit"], PatchWrapper)

    class Later(toyfw.Linear):
        def fit(self, data: Any) -> Later:
            return super().fit(data)

    class Inherits(toyfw.Linear):  # no fit of its own: nothing to patch, Linear's is used
        pass

    assert isinstance(vars(Later)["fit"], PatchWrapper)
    assert "fit" not in vars(Inherits)
    Later().fit([1])
    Inherits().fit([1])
    # Later.fit -> Linear.fit -> Estimator.fit: three wrappers, one logged call each time.
    assert toy.SEEN == [("fit", "Later"), ("fit", "Inherits")]


def test_include_selects_subclasses(toy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    patches = (
        Patch("toyfw", "Estimator.fit", subclasses=True, include=lambda cls: cls is not toyfw.Linear),
    )
    monkeypatch.setattr(toy, "PATCHES", patches)
    enable("toy")
    assert isinstance(vars(toyfw.Ensemble)["fit"], PatchWrapper)
    assert not isinstance(vars(toyfw.Linear)["fit"], PatchWrapper)


def test_disable_restores_every_original_exactly(toy: Any) -> None:
    before = _originals()
    init_subclass_before = vars(toyfw.Estimator).get("__init_subclass__")
    enable("toy")

    class Later(toyfw.Estimator):
        def fit(self, data: Any) -> Later:
            return self

    later_fit = vars(Later)["fit"]
    assert isinstance(later_fit, PatchWrapper)
    disable("toy")
    for (owner, attr), original in before.items():
        assert vars(owner)[attr] is original, (owner, attr)
    assert vars(Later)["fit"] is later_fit.__wrapped__
    assert vars(toyfw.Estimator).get("__init_subclass__") is init_subclass_before
    assert autolog_status()["toy"].patched == ()

    class AfterDisable(toyfw.Estimator):
        def fit(self, data: Any) -> AfterDisable:
            return self

    assert not isinstance(vars(AfterDisable)["fit"], PatchWrapper)


def test_a_slot_created_on_a_subclass_is_deleted_on_revert(toy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Patching Inheriting.predict creates a slot: predict lives in Estimator's __dict__.
    class Inheriting(toyfw.Estimator):
        pass

    toyfw.Inheriting = Inheriting  # type: ignore[attr-defined]
    try:
        monkeypatch.setattr(toy, "PATCHES", (Patch("toyfw", "Inheriting.predict", run="none"),))
        enable("toy")
        assert isinstance(vars(Inheriting)["predict"], PatchWrapper)
        disable("toy")
        assert "predict" not in vars(Inheriting)
        assert not isinstance(vars(toyfw.Estimator)["predict"], PatchWrapper)
    finally:
        del toyfw.Inheriting  # type: ignore[attr-defined]


def test_enabling_twice_leaves_one_wrapper(toy: Any) -> None:
    enable("toy")
    first = vars(toyfw.Estimator)["fit"]
    enable("toy")
    enable("toy", AutologConfig(log_models=False))
    assert vars(toyfw.Estimator)["fit"] is first
    assert not isinstance(first.__wrapped__, PatchWrapper)
    assert get_config("toy").log_models is False
    assert len([p for p in autolog_status()["toy"].patched if p.startswith("toyfw:")]) == 6
    toyfw.Estimator().fit([1])
    assert toy.SEEN == [("fit", "Estimator")]


def test_enable_disable_enable_again(toy: Any) -> None:
    original = vars(toyfw.Estimator)["fit"]
    for _ in range(3):
        enable("toy")
        assert vars(toyfw.Estimator)["fit"].__wrapped__ is original
        disable("toy")
        assert vars(toyfw.Estimator)["fit"] is original


def test_a_wrapper_kept_elsewhere_goes_inert_when_disabled(toy: Any) -> None:
    enable("toy")
    kept = toyfw.train  # like `from toyfw import train` after autolog()
    disable("toy")
    assert toyfw.train is not kept
    assert kept([1.0], epochs=1) == 1.0
    assert toy.SEEN == []


def test_status_tells_what_is_on_and_what_is_patched(toy: Any) -> None:
    status = autolog_status()["toy"]
    assert (status.enabled, status.state, status.patched) == (False, "off", ())
    enable("toy")
    status = autolog_status()["toy"]
    assert status.enabled and status.state == "active"
    assert {p for p in status.patched if p.startswith("toyfw:")} == {
        "toyfw:train", "toyfw:Estimator.fit", "toyfw:Linear.fit", "toyfw:Ensemble.fit",
        "toyfw:Estimator.create", "toyfw:Estimator.describe",
    }
    assert status.waiting_for == ()


def test_a_patch_whose_module_is_not_imported_waits_for_it(
    toy: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    (tmp_path / "toyfw_extra.py").write_text("def late(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(toy, "PATCHES", (Patch("toyfw_extra", "late", run="none"),))
    enable("toy")
    assert autolog_status()["toy"].waiting_for == ("toyfw_extra",)
    import toyfw_extra  # type: ignore[import-not-found]

    try:
        assert isinstance(vars(toyfw_extra)["late"], PatchWrapper)
        assert toyfw_extra.late(1) == 2
        assert autolog_status()["toy"].waiting_for == ()
    finally:
        disable("toy")
        import sys

        sys.modules.pop("toyfw_extra", None)


def test_unknown_integration_and_bad_options_are_clear_errors(toy: Any) -> None:
    with pytest.raises(InvalidValueError, match="no autolog integration is named 'nope'"):
        enable("nope")
    with pytest.raises(InvalidValueError, match="log_every_n_steps"):
        AutologConfig(log_every_n_steps=0)
    with pytest.raises(InvalidValueError, match="exclusive must be True or False"):
        AutologConfig(exclusive="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="extra_tags"):
        AutologConfig(extra_tags=["a"])  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match=r"subclasses=True\) needs path"):
        Patch("toyfw", "train", subclasses=True)
    from mltrail.autolog import autolog

    with pytest.raises(InvalidValueError, match="unknown integrations"):
        autolog(exclude=["nope"])


def test_config_is_frozen_and_extra_tags_are_read_only() -> None:
    config = AutologConfig(extra_tags={"team": "ml", "n": 3})  # type: ignore[dict-item]
    assert dict(config.extra_tags) == {"team": "ml", "n": "3"}
    with pytest.raises(AttributeError):
        config.silent = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.extra_tags["x"] = "y"  # type: ignore[index]


def test_a_patch_that_no_longer_fits_the_framework_warns_and_the_rest_apply(
    toy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness import non_strict
    from mltrail.autolog import AutologWarning

    monkeypatch.setattr(toy, "PATCHES", (
        Patch("toyfw", "Renamed.fit", run="none"),  # a framework release moved it
        Patch("toyfw", "train", run="none"),
    ))
    with non_strict(), pytest.warns(AutologWarning, match="toy: patch toyfw:Renamed.fit failed"):
        enable("toy")
    assert [p for p in autolog_status()["toy"].patched if p.startswith("toyfw:")] == ["toyfw:train"]
    disable("toy")
    with pytest.raises(Exception, match="Renamed"):  # strict mode (the test suite's) raises it
        enable("toy")


def test_version_ranges() -> None:
    from mltrail.autolog.registry import INTEGRATIONS, Integration, parse_version, supported_versions

    spec = Integration("x", ("x",), "x", ("x",), "1.4", "1.9")
    assert parse_version("2.1.0rc1+cpu") == (2, 1, 0)
    assert [spec.supports(v) for v in ("1.3.9", "1.4", "1.4.0", "1.9.7", "1.10.0", "2.0")] == [
        False, True, True, True, False, False,
    ]
    assert spec.version_range == ">=1.4, <=1.9.*"
    versions = supported_versions()
    assert "argparse" not in versions and versions["sklearn"] == (
        INTEGRATIONS["sklearn"].min_version, INTEGRATIONS["sklearn"].max_version,
    )
    with pytest.raises(InvalidValueError):
        parse_version("unknown")


def test_when_skips_calls_the_integration_does_not_want(toy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(toy, "PATCHES", (
        Patch("toyfw", "Estimator.fit", run="none", subclasses=True,
              when=lambda call: call.instance.scale > 1,
              post=lambda call, result: seen.append(type(call.instance).__name__)),
    ))
    enable("toy")
    toyfw.Estimator(1.0).fit([1])
    # The outer call was skipped, so it is not "a patched call": the inner one is logged.
    toyfw.Ensemble([toyfw.Estimator(2.0)], scale=1.0).fit([1])
    toyfw.Linear(3.0).fit([1])
    assert seen == ["Estimator", "Linear"]


def test_subclasses_of_a_base_without_the_method(toy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(toy, "PATCHES", (
        Patch("toyfw", "Estimator.transform", run="none", subclasses=True,
              post=lambda call, result: seen.append((type(call.instance).__name__, result))),
    ))
    enable("toy")

    class Transformer(toyfw.Linear):  # Estimator has no transform; this class brings one
        def transform(self, x: float) -> float:
            return 2 * x

    assert "transform" not in vars(toyfw.Estimator)
    assert isinstance(vars(Transformer)["transform"], PatchWrapper)
    assert Transformer().transform(3.0) == 6.0
    assert seen == [("Transformer", 6.0)]
    original = vars(Transformer)["transform"].__wrapped__
    disable("toy")
    assert vars(Transformer)["transform"] is original
    assert "transform" not in vars(toyfw.Estimator)


# ---------------------------------------------------------------------- two integrations, one slot
@pytest.fixture
def toy2() -> Any:
    import toy_integration2

    from mltrail.autolog import registry

    registry.register(registry.Integration("toy2", ("toyfw",), "toy_integration2"))
    toy_integration2.SEEN.clear()
    yield toy_integration2
    disable("toy2")
    registry.unregister("toy2")
    toy_integration2.SEEN.clear()


def _slots() -> dict[tuple[Any, str], Any]:
    """Every slot either toy integration touches, as it is in the class or module now."""
    slots = [*_originals(), (toyfw.Linear, "describe")]
    return {(owner, attr): vars(owner).get(attr) for owner, attr in slots}


@pytest.mark.parametrize("first_off", ["toy", "toy2"])
def test_two_integrations_on_the_same_slots_revert_in_any_order(toy: Any, toy2: Any, first_off: str) -> None:
    before = _slots()
    assert before[(toyfw.Linear, "describe")] is None  # inherited from Estimator
    enable("toy")
    enable("toy2")
    # Stacked: toy2's wrapper around toy's around the original, on the slots both patch.
    outer = vars(toyfw.Estimator)["fit"]
    assert outer._self_runtime.name == "toy2" and outer.__wrapped__._self_runtime.name == "toy"
    assert outer.__wrapped__.__wrapped__ is before[(toyfw.Estimator, "fit")]
    # A slot toy2 creates on a subclass wraps the original, not toy's wrapper on the base.
    assert vars(toyfw.Linear)["describe"].__wrapped__ is before[(toyfw.Estimator, "describe")]
    assert toyfw.Estimator(2.0).fit([1.0]).coef_ == 2.0
    enable("toy")  # autolog() again: still one wrapper of each
    assert vars(toyfw.Estimator)["fit"] is outer

    second_off = "toy2" if first_off == "toy" else "toy"
    disable(first_off)
    left = vars(toyfw.Estimator)["fit"]
    assert left._self_runtime.name == second_off and left.__wrapped__ is before[(toyfw.Estimator, "fit")]
    assert toyfw.Estimator(3.0).fit([1.0]).coef_ == 3.0  # still works, one layer
    assert toyfw.Linear.describe(1) == "Estimator(scale=1)"
    disable(second_off)
    assert _slots() == before
    assert "describe" not in vars(toyfw.Linear)
    for (owner, attr), original in before.items():
        assert vars(owner).get(attr) is original, (owner, attr)
