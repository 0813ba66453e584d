"""A tiny, real "framework" that the engine's tests patch (a module, not a mock).

It has what real frameworks have: a module-level training function taking callbacks, a base
estimator whose subclasses override ``fit``, a meta-estimator that fits others inside its own
``fit``, a classmethod, a staticmethod, and a way for the user's code to raise from inside.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def train(data: Sequence[float], *, epochs: int = 2, callbacks: Sequence[Any] = ()) -> float:
    """Return the mean of ``data`` times ``epochs``; calls each callback's ``on_epoch(epoch, loss)``."""
    total = 0.0
    for epoch in range(epochs):
        loss = sum(data) / max(len(data), 1) / (epoch + 1)
        total += loss
        for cb in callbacks:
            cb.on_epoch(epoch, loss)
    return total


class Estimator:
    """Fits a scale factor; ``fit`` returns self, as scikit-learn estimators do."""

    def __init__(self, scale: float = 1.0, hook: Callable[[], Any] | None = None) -> None:
        self.scale = scale
        self.hook = hook
        self.coef_: float | None = None

    def fit(self, data: Sequence[float]) -> Estimator:
        if self.hook is not None:
            self.hook()  # the user's code, running inside fit
        self.coef_ = self.scale * sum(data)
        return self

    def predict(self, x: float) -> float:
        assert self.coef_ is not None
        return self.coef_ * x

    @classmethod
    def create(cls, scale: float) -> Estimator:
        return cls(scale=scale)

    @staticmethod
    def describe(scale: float) -> str:
        return f"Estimator(scale={scale})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    __hash__ = None  # type: ignore[assignment]


class Linear(Estimator):
    """A subclass with its own ``fit`` that calls the base's."""

    def fit(self, data: Sequence[float]) -> Linear:
        super().fit([2 * x for x in data])
        return self


class Ensemble(Estimator):
    """A meta-estimator: its ``fit`` fits its members (nested patched calls)."""

    def __init__(self, members: Sequence[Estimator] = (), scale: float = 1.0) -> None:
        super().__init__(scale)
        self.members = list(members)

    def fit(self, data: Sequence[float]) -> Ensemble:
        for member in self.members:
            member.fit(data)
        self.coef_ = sum(m.coef_ or 0.0 for m in self.members)
        return self
