"""Lightning autolog: what ``Trainer.fit``/``validate``/``test`` record, and the seven behaviours."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from lightning_helpers import LIGHTNING_WARNING_FILTERS, PACKAGES, make_model, pl, trainer, weights  # noqa: E402

if not PACKAGES:
    pytest.skip("neither lightning nor pytorch_lightning is installed", allow_module_level=True)

import mltrail  # noqa: E402
from harness import check_fault_tolerance, check_user_exception  # noqa: E402
from mltrail.autolog._wrapping import PatchWrapper  # noqa: E402
from mltrail.integrations import lightning as mltrail_lightning  # noqa: E402
from mltrail.integrations import torch as mltrail_torch  # noqa: E402

pytestmark = [pytest.mark.filterwarnings(f) for f in LIGHTNING_WARNING_FILTERS]


def _trainer_classes() -> list[type]:
    return [importlib.import_module(f"{p}.trainer.trainer").Trainer for p in PACKAGES]


def _history(run_id: str, key: str) -> list[tuple[int, float]]:
    hist = mltrail.Client().get_metric_history(run_id, key)
    return [(int(s), float(v)) for s, v in zip(hist.steps, hist.values, strict=True)]


def _only_run() -> Any:
    runs = mltrail.search_runs(output_format="list")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def _loaders(package: str = "") -> tuple[Any, Any]:
    data = torch.utils.data.TensorDataset(torch.randn(12, 32), torch.randn(12, 2))
    val = torch.utils.data.TensorDataset(torch.randn(4, 32))
    dl = torch.utils.data.DataLoader
    return dl(data, batch_size=4), dl(val, batch_size=4)


def _pairs_model(package: str = "", **kw: Any) -> Any:
    """A model whose training batches are (x, y) pairs from a TensorDataset."""
    model = make_model(package, **kw)

    def training_step(batch: Any, batch_idx: int) -> Any:
        x, _ = batch
        loss = model.loss(model(x))
        model.log("train_loss", loss)
        return {"loss": loss}

    def validation_step(batch: Any, batch_idx: int) -> Any:
        (x,) = batch
        model.log("val_loss", model.loss(model(x)))

    model.training_step = training_step
    model.validation_step = validation_step
    return model


# ---------------------------------------------------------------------- what is logged
def test_fit_records_optimizer_lr_trainer_model_early_stopping_datasets_and_model(
    sqlite_uri: str, tmp_path: Any
) -> None:
    mltrail_lightning.autolog(log_every_n_steps=1)
    callbacks = pl().callbacks
    early = callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=0.5)
    ckpt = callbacks.ModelCheckpoint(monitor="val_loss")
    t = trainer(max_epochs=4, default_root_dir=tmp_path, callbacks=[early, ckpt], enable_checkpointing=True)
    model = _pairs_model(width=16)
    train_dl, val_dl = _loaders()
    t.fit(model, train_dl, val_dl)
    run = _only_run()
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.autolog"] == "lightning"
    p = run.data.params
    assert p["width"] == "16"  # the module's hyperparameters, through the logger
    assert p["optimizer/name"] == "SGD" and p["optimizer/lr"] == "0.1"
    assert p["lr_scheduler/name"] == "StepLR" and p["lr_scheduler/interval"] == "epoch"
    assert p["trainer/max_epochs"] == "4" and p["trainer/log_every_n_steps"] == "1"
    assert p["model/total_params"] == "66" and p["model/trainable_params"] == "66"
    assert p["early_stopping/monitor"] == "val_loss" and p["early_stopping/patience"] == "1"
    assert p["early_stopping/min_delta"] == "0.5" and p["early_stopping/mode"] == "min"
    rid = run.info.run_id
    lr = _history(rid, "lr")
    assert [s for s, _ in lr] == list(range(len(lr))) and len(lr) == t.global_step
    assert lr[0][1] == pytest.approx(0.1) and lr[-1][1] == pytest.approx(0.1 * 0.1 ** (t.current_epoch - 1))
    assert _history(rid, "early_stopping/stopped_epoch") == [(t.global_step, float(early.stopped_epoch))]
    assert early.stopped_epoch > 0  # min_delta=0.5 makes it stop early
    assert _history(rid, "epochs") == [(t.global_step, float(t.current_epoch))]
    assert len(_history(rid, "train_loss")) == t.global_step
    # directories are Lightning's own: the autolog logger is not the first logger's stand-in
    assert ckpt.dirpath == os.path.join(str(tmp_path), "checkpoints")
    assert t.log_dir == str(tmp_path)
    client = mltrail.Client()
    names = {f.path for f in client.list_artifacts(rid)}
    assert {"hparams.json", "model", "model_summary.txt"} <= names
    summary = client.download_artifacts(rid, "model_summary.txt", str(tmp_path / "dl"))
    with open(summary) as fh:
        text = fh.read()
    assert "layer" in text and "Linear" in text and "Total params: 66" in text
    local = client.download_artifacts(rid, "model/model.ckpt", str(tmp_path / "dl"))
    restored = type(model).load_from_checkpoint(local, weights_only=False)
    assert weights(restored) == weights(model) and restored.hparams.width == 16
    inputs = sorted(
        (i.tags.get("mltrail.data.context", ""), i.dataset.name, json.loads(i.dataset.profile)["num_rows"])
        for i in run.inputs.dataset_inputs
    )
    assert inputs == [("training", "TensorDataset", 12), ("validation", "TensorDataset", 4)]


def test_validate_and_test_after_fit_go_to_the_same_run(sqlite_uri: str) -> None:
    mltrail_lightning.autolog()
    t = trainer()
    model = make_model()
    t.fit(model)
    t.validate(model)
    t.test(model)
    run = _only_run()
    assert run.info.status == "FINISHED"
    assert {"train_loss", "val_loss", "test_loss"} <= set(run.data.metrics)
    assert sum(isinstance(lg, mltrail_lightning._LoggerMixin) for lg in t.loggers) == 1


def test_test_alone_starts_and_ends_its_own_run(sqlite_uri: str) -> None:
    mltrail_lightning.autolog()
    trainer().test(make_model())
    run = _only_run()
    assert run.info.status == "FINISHED" and "test_loss" in run.data.metrics


def test_inside_the_users_run_and_exclusive(sqlite_uri: str) -> None:
    mltrail_lightning.autolog()
    with mltrail.start_run() as run:
        trainer(max_epochs=1).fit(make_model())
    assert "train_loss" in mltrail.get_run(run.info.run_id).data.metrics
    mltrail_lightning.autolog(exclusive=True)
    with mltrail.start_run() as other:
        t = trainer(max_epochs=1)
        t.fit(make_model())
    assert mltrail.get_run(other.info.run_id).data.metrics == {}
    assert t.loggers == []


def test_pytorch_lightning_trainers_get_their_own_logger_class(sqlite_uri: str) -> None:
    if "pytorch_lightning" not in PACKAGES:
        pytest.skip("pytorch_lightning is not installed in this environment")
    mltrail_lightning.autolog()
    t = trainer("pytorch_lightning", max_epochs=1)
    t.fit(make_model("pytorch_lightning"))
    [logger] = t.loggers
    import pytorch_lightning

    assert isinstance(logger, pytorch_lightning.loggers.Logger)
    assert type(logger).__qualname__ == "_MLTrailLoggerForPL"
    assert "train_loss" in _only_run().data.metrics


# ---------------------------------------------------------------------- the seven behaviours
def test_a_users_exception_propagates_unchanged_and_the_run_ends_failed(sqlite_uri: str) -> None:
    mltrail_lightning.autolog()
    check_user_exception(lambda boom: trainer().fit(make_model(boom=boom)))
    assert _only_run().info.status == "FAILED"


def test_injected_failures_do_not_stop_training_and_warn_once(sqlite_uri: str, tmp_path: Any) -> None:
    mltrail_lightning.autolog(log_every_n_steps=1, log_checkpoints="all")

    def fit() -> list[float]:
        model = make_model(width=3)
        t = trainer(max_epochs=1, limit_train_batches=2, default_root_dir=tmp_path, enable_checkpointing=True)
        t.fit(model)
        t.test(model)
        return weights(model)

    points = check_fault_tolerance(fit, integration="lightning")
    assert {"pre", "log_metrics", "log_hyperparams", "after_save_checkpoint", "finalize", "open_run",
            "on_train_start", "on_train_batch_start", "on_fit_end", "on_test_start"} <= set(points)


def test_disable_restores_every_original(sqlite_uri: str) -> None:
    slots = [(cls, name) for cls in _trainer_classes() for name in ("fit", "validate", "test")]
    originals = {slot: vars(slot[0])[slot[1]] for slot in slots}
    mltrail_lightning.autolog()
    for cls, name in slots:
        assert isinstance(vars(cls)[name], PatchWrapper), (cls, name)
    mltrail_lightning.autolog(disable=True)
    for cls, name in slots:
        assert vars(cls)[name] is originals[(cls, name)], (cls, name)
    t = trainer(max_epochs=1)
    t.fit(make_model())
    assert t.loggers == [] and mltrail.search_runs(output_format="list") == []


def test_autolog_twice_leaves_one_wrapper(sqlite_uri: str) -> None:
    mltrail_lightning.autolog()
    mltrail_lightning.autolog()
    mltrail.autolog()
    for cls in _trainer_classes():
        slot = vars(cls)["fit"]
        assert isinstance(slot, PatchWrapper) and not isinstance(slot.__wrapped__, PatchWrapper)
    t = trainer(max_epochs=1)
    t.fit(make_model())
    assert len(t.loggers) == 1
    assert len(_history(_only_run().info.run_id, "train_loss")) == 3


def test_no_double_logging_when_the_user_passes_our_logger(sqlite_uri: str) -> None:
    mltrail.autolog()  # Lightning and PyTorch both on
    logger = mltrail_lightning.MLTrailLogger(experiment_name="mine")
    t = trainer(logger=logger, max_epochs=1)
    t.fit(make_model())
    assert t.loggers == [logger]
    runs = mltrail.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1 and runs[0].info.run_id == logger.version
    rid = logger.version
    assert [s for s, _ in _history(rid, "train_loss")] == [0, 1, 2]  # once per step
    assert runs[0].data.params["optimizer/name"] == "SGD"  # autolog's callback used our logger
    assert "loss" not in runs[0].data.metrics  # the plain-PyTorch hooks stood aside
    assert mltrail_torch._opt_states.get(t.optimizers[0]) is None


@pytest.mark.parametrize("order", ["autolog_first", "lightning_first"])
def test_both_import_orders(tmp_path: Any, order: str) -> None:
    package = PACKAGES[0]
    imports = ["import mltrail; mltrail.autolog()", f"import {package} as pl_pkg"]
    if order == "lightning_first":
        imports.reverse()
    script = textwrap.dedent(
        """
        {first}
        {second}
        import mltrail, torch
        from {package}.demos.boring_classes import BoringModel
        mltrail.set_tracking_uri({uri!r})

        class Model(BoringModel):
            def training_step(self, batch, batch_idx):
                out = super().training_step(batch, batch_idx)
                self.log("train_loss", out["loss"])
                return out

        trainer = pl_pkg.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                                 log_every_n_steps=1, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        trainer.fit(Model())
        """
    ).format(first=imports[0], second=imports[1], package=package, uri=str(tmp_path / "store"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mltrail.set_tracking_uri(str(tmp_path / "store"))
    run = _only_run()
    assert run.info.status == "FINISHED"
    assert [s for s, _ in _history(run.info.run_id, "train_loss")] == [0, 1]
    assert run.data.params["optimizer/name"] == "SGD"
