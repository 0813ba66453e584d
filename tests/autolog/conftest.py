"""Fixtures for the autolog engine's tests: the toy integration, and a clean engine per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mltrail.autolog import _safety, engine, jobs, registry, runs

TOY = registry.Integration("toy", ("toyfw",), "toy_integration")


@pytest.fixture(autouse=True)
def _clean_engine() -> Iterator[None]:
    """Every test starts and ends with autolog off and nothing remembered."""
    yield
    engine.disable_all()
    runs._reset_for_tests()
    _safety.reset_warnings()
    _safety.silenced.clear()
    registry.unregister("toy")


@pytest.fixture
def toy() -> Iterator[object]:
    """The toy integration, registered (not yet enabled); yields its module."""
    import toy_integration

    registry.register(TOY)
    toy_integration.SEEN.clear()
    yield toy_integration
    jobs.flush(timeout=30)
    toy_integration.SEEN.clear()
    toy_integration.LATER.clear()
