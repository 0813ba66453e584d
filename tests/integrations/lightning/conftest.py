"""Fixtures for the Lightning integration's tests: a clean autolog engine and integration per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning_utilities")


@pytest.fixture(autouse=True)
def _clean_autolog() -> Iterator[None]:
    """Every test starts and ends with autolog off and nothing remembered."""
    yield
    from mltrail.autolog import _safety, engine, runs
    from mltrail.integrations import torch as mltrail_torch

    engine.disable_all()
    mltrail_torch._reset_for_tests()
    runs._reset_for_tests()
    _safety.reset_warnings()
    _safety.silenced.clear()
