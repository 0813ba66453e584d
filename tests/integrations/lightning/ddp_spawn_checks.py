"""Module-level model and callbacks for the ``ddp_spawn`` test (spawned workers import them).

The callbacks are Lightning's own checks from ``test_all.py``: the experiment exists by
``setup`` on rank zero, and every other rank sees a dummy experiment whose methods do nothing.
"""

from __future__ import annotations

from typing import Any

from lightning_helpers import PACKAGES, boring, pl

_PACKAGE = PACKAGES[0]
_Callback = pl(_PACKAGE).Callback


class LoggingModel(boring(_PACKAGE).BoringModel):  # type: ignore[misc]
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"])
        return out


class LazyInitExperimentCheck(_Callback):  # type: ignore[misc]
    def setup(self, trainer: Any, pl_module: Any, stage: Any = None) -> None:
        if trainer.global_rank > 0:
            return
        assert trainer.logger._experiment


class RankZeroLoggerCheck(_Callback):  # type: ignore[misc]
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        is_dummy = isinstance(trainer.logger.experiment, trainer.logger._DUMMY)
        if trainer.is_global_zero:
            assert not is_dummy
        else:
            assert is_dummy
            assert pl_module.logger.experiment.something(foo="bar") is None


def checks(package: str) -> list[Any]:
    assert package == _PACKAGE
    return [LazyInitExperimentCheck(), RankZeroLoggerCheck()]
