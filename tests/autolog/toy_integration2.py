"""A second toy integration patching the same slots as the first (sklearn and XGBoost both
patch ``XGBClassifier.fit``): for the tests of stacked wrappers."""

from __future__ import annotations

from typing import Any

from mltrail.autolog import AutologConfig, Call, Patch, enable

NAME = "toy2"
SEEN: list[tuple[str, Any]] = []


def _post(call: Call, result: Any) -> None:
    SEEN.append((call.patch.path, call.integration))


PATCHES = (
    Patch(owner="toyfw", path="train", post=_post),
    Patch(owner="toyfw", path="Estimator.fit", post=_post, subclasses=True),
    Patch(owner="toyfw", path="Estimator.create", post=_post, run="none"),
    Patch(owner="toyfw", path="Linear.describe", post=_post, run="none"),  # inherited: a slot we create
)


def autolog(**options: Any) -> None:
    enable(NAME, AutologConfig(**options))
