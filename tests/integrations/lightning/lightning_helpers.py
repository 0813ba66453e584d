"""Small models and trainers shared by the Lightning tests (tiny, CPU, a few steps)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import torch

# Lightning noise under filterwarnings=error (each ignore narrow, with its reason).
LIGHTNING_WARNING_FILTERS = [
    # torch 2.13 deprecates LeafSpec, which Lightning's _pytree still uses (Lightning's business).
    "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated",
    # tiny CPU dataloaders in tests: more workers would only slow the tests down.
    "ignore:The '.*dataloader' does not have many workers",
    "ignore:The number of training batches .* is smaller than the logging interval",
    # Lightning's hint about its own cloud logger.
    "ignore:.*litlogger",
    # ModelCheckpoint reusing tmp dirs across the fault-injection reruns.
    "ignore:Checkpoint directory .* exists and is not empty",
    # tensorboardX on protobuf 7 (TensorBoardLogger beside ours).
    "ignore::DeprecationWarning:tensorboardX",
    "ignore::DeprecationWarning:google.protobuf",
    # a 1-batch validation run: Lightning warns that the val metrics of a batch are averaged.
    "ignore:.*`LightningModule.log\\(..., batch_size=...\\)`",
    "ignore:Experiment logs directory .* exists and is not empty",
    # Lightning 2.2 (the oldest tested) imports pkg_resources to declare its namespace package.
    "ignore:pkg_resources is deprecated as an API",
    "ignore:Deprecated call to `pkg_resources.declare_namespace",
]

PACKAGES = [
    p for p in ("lightning.pytorch", "pytorch_lightning")
    if importlib.util.find_spec(p.split(".")[0]) is not None
]


def pl(package: str = "") -> Any:
    return importlib.import_module(package or PACKAGES[0])


def boring(package: str = "") -> Any:
    return importlib.import_module(f"{package or PACKAGES[0]}.demos.boring_classes")


def make_model(package: str = "", *, boom: Any = None, **hparams: Any) -> Any:
    """A BoringModel that logs train_loss/val_loss/test_loss (and calls ``boom`` in training)."""
    base = boring(package).BoringModel

    class Model(base):  # type: ignore[misc, valid-type]
        def __init__(self, **kw: Any) -> None:
            super().__init__()
            if kw:
                self.save_hyperparameters(kw)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if boom is not None:
                boom()
            out = super().training_step(batch, batch_idx)
            self.log("train_loss", out["loss"])
            return out

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            out = super().validation_step(batch, batch_idx)
            self.log("val_loss", out["x"])
            return out

        def test_step(self, batch: Any, batch_idx: int) -> Any:
            out = super().test_step(batch, batch_idx)
            self.log("test_loss", out["y"])
            return out

    torch.manual_seed(0)
    return Model(**hparams)


def trainer(package: str = "", **kwargs: Any) -> Any:
    options: dict[str, Any] = dict(
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=1,
        limit_test_batches=1,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
    )
    options.update(kwargs)
    return pl(package).Trainer(**options)


def weights(model: Any) -> list[float]:
    return [round(float(p.detach().sum()), 6) for p in model.parameters()]
