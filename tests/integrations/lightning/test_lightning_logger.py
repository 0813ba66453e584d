"""``MLTrailLogger``: the contract Lightning checks of its own loggers, and what we record.

Modelled on Lightning's ``tests/tests_pytorch/loggers/test_all.py`` (fit then test history,
pickling with the trainer, lazy experiment creation and rank-zero experiments under
``ddp_spawn``, prefix, default name), run for ``lightning.pytorch`` and ``pytorch_lightning``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import pickle
from argparse import Namespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from lightning_helpers import (  # noqa: E402
    LIGHTNING_WARNING_FILTERS,
    PACKAGES,
    boring,
    make_model,
    pl,
    trainer,
)

if not PACKAGES:
    pytest.skip("neither lightning nor pytorch_lightning is installed", allow_module_level=True)

import mltrail  # noqa: E402
from harness import check_user_exception  # noqa: E402
from mltrail.core.errors import InvalidValueError  # noqa: E402
from mltrail.integrations import lightning as mltrail_lightning  # noqa: E402

pytestmark = [pytest.mark.filterwarnings(f) for f in LIGHTNING_WARNING_FILTERS]


def _history(run_id: str, key: str) -> list[tuple[int, float]]:
    hist = mltrail.Client().get_metric_history(run_id, key)
    return [(int(s), float(v)) for s, v in zip(hist.steps, hist.values, strict=True)]


def _runs() -> list[Any]:
    return mltrail.search_runs(output_format="list")


# ---------------------------------------------------------------------- Lightning's own checks
@pytest.mark.parametrize("package", PACKAGES)
def test_fit_then_test_history(sqlite_uri: str, tmp_path: Any, package: str) -> None:
    """test_all.py's test_loggers_fit_test_all, with the store read back."""
    base = boring(package).BoringModel

    class CustomModel(base):  # type: ignore[misc, valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = self.step(batch)
            self.log("train_some_val", loss)
            return {"loss": loss}

        def on_validation_epoch_end(self) -> None:
            self.log_dict({"early_stop_on": torch.tensor(1.0), "val_loss": torch.tensor(0.5)})

        def on_test_epoch_end(self) -> None:
            self.log("test_loss", torch.tensor(2.0))

    logger_cls = mltrail_lightning.logger_class(package)

    class StoreHistoryLogger(logger_cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.history: list[tuple[int, dict[str, float]]] = []

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            super().log_metrics(metrics, step)
            self.history.append((step, metrics))

    logger = StoreHistoryLogger()
    t = pl(package).Trainer(
        max_epochs=1, logger=logger, limit_train_batches=1, limit_val_batches=1, log_every_n_steps=1,
        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    model = CustomModel()
    t.fit(model)
    t.test(model)
    assert [(s, sorted(m)) for s, m in logger.history] == [
        (0, ["epoch", "train_some_val"]),
        (0, ["early_stop_on", "epoch", "val_loss"]),
        (1, ["epoch", "test_loss"]),
    ]
    [run] = _runs()
    assert run.info.run_id == logger.version
    assert run.info.status == "FINISHED"  # ended after fit, resumed by test, ended again
    assert _history(run.info.run_id, "val_loss") == [(0, 0.5)]
    assert _history(run.info.run_id, "test_loss") == [(1, 2.0)]
    assert [s for s, _ in _history(run.info.run_id, "epoch")] == [0, 0, 1]


@pytest.mark.parametrize("package", PACKAGES)
def test_logger_and_trainer_pickle(sqlite_uri: str, package: str) -> None:
    """test_all.py's test_loggers_pickle_all: the copy logs into the same run."""
    logger = mltrail_lightning.logger_class(package)(experiment_name="pickled")
    _ = logger.experiment
    logger.log_metrics({"a": 1})
    logger.save()
    pickle.dumps(logger)
    t = pl(package).Trainer(max_epochs=1, logger=logger, enable_progress_bar=False)
    t2 = pickle.loads(pickle.dumps(t))
    t2.logger.log_metrics({"acc": 1.0})
    assert t2.logger.name == logger.name == "pickled"
    assert t2.logger.save_dir == logger.save_dir
    assert t2.logger.version == logger.version
    [run] = _runs_in("pickled")
    assert sorted(run.data.metrics) == ["a", "acc"]


def _runs_in(experiment: str) -> list[Any]:
    return mltrail.search_runs(experiment_names=[experiment], output_format="list")


def test_ddp_spawn_rank_zero_experiment_and_pickled_logger(sqlite_uri: str, tmp_path: Any) -> None:
    """test_all.py's test_logger_initialization: ddp_spawn on 2 CPU processes."""
    import ddp_spawn_checks

    package = PACKAGES[0]
    logger = mltrail_lightning.logger_class(package)(experiment_name="spawned")
    t = pl(package).Trainer(
        logger=logger, default_root_dir=tmp_path, strategy="ddp_spawn", accelerator="cpu", devices=2,
        max_steps=2, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        callbacks=ddp_spawn_checks.checks(package), enable_checkpointing=False,
    )
    t.fit(ddp_spawn_checks.LoggingModel())
    [run] = _runs_in("spawned")
    assert run.info.status == "FINISHED"
    assert [s for s, _ in _history(run.info.run_id, "train_loss")] == [0, 1]
    assert run.data.params["width"] == "32"


def test_prefix_and_default_name(sqlite_uri: str) -> None:
    cls = mltrail_lightning.logger_class(PACKAGES[0])
    logger = cls(prefix="tmp")
    logger.log_metrics({"test": 1.0}, step=0)
    assert logger.name == "Default"
    [run] = _runs()
    assert _history(run.info.run_id, "tmp-test") == [(0, 1.0)]
    assert cls(experiment_name="lightning_logs").name == "lightning_logs"


# ---------------------------------------------------------------------- our contract
def test_name_version_dirs_and_experiment_handle(sqlite_uri: str, tmp_path: Any) -> None:
    logger = mltrail_lightning.MLTrailLogger(
        experiment_name="exp", run_name="r1", save_dir=tmp_path, tags={"team": "ml"}
    )
    assert logger.save_dir == str(tmp_path)
    run_id = logger.version
    assert isinstance(run_id, str) and logger.run_id == run_id
    assert logger.root_dir == os.path.join(str(tmp_path), "exp")
    assert logger.log_dir == os.path.join(str(tmp_path), "exp", run_id)
    assert logger.group_separator == "/"
    logger.experiment.log_metric("extra", 3.0, step=7)
    logger.experiment.log_text("hello", "notes/hello.txt")
    assert logger.experiment.run_id == run_id
    logger.finalize("success")
    run = mltrail.get_run(run_id)
    assert run.info.run_name == "r1" and run.data.tags["team"] == "ml"
    assert run.info.status == "FINISHED"
    assert _history(run_id, "extra") == [(7, 3.0)]
    assert [f.path for f in mltrail.Client().list_artifacts(run_id, "notes")] == ["notes/hello.txt"]


@dataclasses.dataclass
class DataCfg:
    batch_size: int = 32
    paths: tuple[str, ...] = ("a", "b")


def test_hyperparameters_are_flattened(sqlite_uri: str, tmp_path: Any) -> None:
    logger = mltrail_lightning.MLTrailLogger()
    logger.log_hyperparams({
        "model": {"hidden": 64, "act": torch.nn.ReLU, "empty": {}},
        "opt": Namespace(lr=0.1, betas=(0.9, 0.99)),
        "data": DataCfg(),
        "weights": torch.tensor([1.0, 2.0]),
        "long": "x" * 7000,
        "bad key!": 1,
        "none": None,
    })
    logger.finalize("success")
    run = mltrail.get_run(logger.version)
    params = run.data.params
    assert params["model/hidden"] == "64"
    assert params["model/act"] == "torch.nn.modules.activation.ReLU"
    assert params["model/empty"] == "{}"
    assert params["opt/lr"] == "0.1" and params["opt/betas"] == "(0.9, 0.99)"
    assert params["data/batch_size"] == "32" and params["data/paths"] == "('a', 'b')"
    assert params["weights"] == "[1.0, 2.0]"
    assert params["long"].endswith("...") and len(params["long"]) == 6000
    assert params["bad key_"] == "1" and params["none"] == "None"
    path = mltrail.Client().download_artifacts(logger.version, "hparams.json", str(tmp_path))
    with open(path) as fh:
        document = json.load(fh)
    assert document["long"] == "x" * 7000 and document["data"] == {"batch_size": 32, "paths": ["a", "b"]}


def test_flatten_and_clean_key_helpers() -> None:
    flat = mltrail_lightning.flatten_hparams({"a": {"b": {"c": 1}}, "n": Namespace(x=[1, 2])})
    assert flat == {"a/b/c": 1, "n/x": [1, 2]}
    assert mltrail_lightning.clean_key("val/acc@1 (top)") == "val/acc_1 _top_"
    assert mltrail_lightning.clean_key("/../x") == "_/x"
    assert mltrail_lightning.map_status("success") == "FINISHED"
    assert mltrail_lightning.map_status("failed") == "FAILED"
    assert mltrail_lightning.map_status("failed", KeyboardInterrupt()) == "KILLED"
    assert mltrail_lightning.map_status("finished") == "FINISHED"


def test_non_numeric_and_oddly_named_metrics(sqlite_uri: str) -> None:
    logger = mltrail_lightning.MLTrailLogger()
    logger.log_metrics({"ok": 1.0, "text": "abc", "odd key!": 2, "t": torch.tensor(3.5)}, step=4)
    logger.finalize("success")
    run = mltrail.get_run(logger.version)
    assert run.data.metrics == {"ok": 1.0, "odd key_": 2.0, "t": 3.5}


def _checkpointing(tmp_path: Any, log_model: Any, **logger_kwargs: Any) -> tuple[Any, Any]:
    package = PACKAGES[0]
    logger = mltrail_lightning.logger_class(package)(log_model=log_model, **logger_kwargs)
    checkpoint = pl(package).callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{epoch}-{val_loss:.2f}", monitor="val_loss", save_top_k=2,
        save_last=True,
    )
    t = trainer(package, max_epochs=3, logger=logger, callbacks=[checkpoint], enable_checkpointing=True)
    t.fit(make_model(package))
    return logger, checkpoint


def _artifact_names(run_id: str) -> list[str]:
    return sorted(f.path for f in mltrail.Client().list_artifacts(run_id, "checkpoints"))


def test_log_model_all_logs_every_checkpoint_with_its_lightning_name(sqlite_uri: str, tmp_path: Any) -> None:
    logger, checkpoint = _checkpointing(tmp_path, "all")
    run = mltrail.get_run(logger.version)
    names = _artifact_names(logger.version)
    assert "checkpoints/last.ckpt" in names and "checkpoints/metadata.json" in names
    epochs = [n for n in names if n.startswith("checkpoints/epoch=")]
    assert len(epochs) == 3  # every checkpoint as written, the rotated-out one included
    assert all("-val_loss=" in n for n in epochs)
    best = "checkpoints/" + os.path.basename(checkpoint.best_model_path)
    assert run.data.tags["mltrail.checkpoint.best"] == best
    assert float(run.data.tags["mltrail.checkpoint.best_score"]) == pytest.approx(
        float(checkpoint.best_model_score)
    )
    assert run.data.tags["mltrail.checkpoint.monitor"] == "val_loss"
    path = mltrail.Client().download_artifacts(logger.version, "checkpoints/metadata.json", str(tmp_path / "dl"))
    with open(path) as fh:
        records = json.load(fh)["checkpoints"]
    by_name = {r["artifact"]: r for r in records}
    assert "best" in by_name[best]["aliases"]
    assert by_name[best]["score"] == pytest.approx(float(checkpoint.best_model_score))
    assert by_name[best]["monitor"] == "val_loss" and by_name[best]["mode"] == "min"
    local = mltrail.Client().download_artifacts(logger.version, best, str(tmp_path / "dl"))
    with open(local, "rb") as a, open(checkpoint.best_model_path, "rb") as b:
        assert a.read() == b.read()


def test_log_model_true_logs_best_and_last_at_the_end(sqlite_uri: str, tmp_path: Any) -> None:
    logger, checkpoint = _checkpointing(tmp_path, True)
    names = _artifact_names(logger.version)
    kept = sorted("checkpoints/" + os.path.basename(p) for p in checkpoint.best_k_models)
    assert names == sorted([*kept, "checkpoints/last.ckpt", "checkpoints/metadata.json"])


def test_log_model_false_logs_no_checkpoint(sqlite_uri: str, tmp_path: Any) -> None:
    logger, _ = _checkpointing(tmp_path, False)
    assert _artifact_names(logger.version) == []


def test_large_checkpoints_are_recorded_by_reference(sqlite_uri: str, tmp_path: Any) -> None:
    logger, checkpoint = _checkpointing(tmp_path, True, reference_checkpoints_over=100)
    names = _artifact_names(logger.version)
    assert names and all(n.endswith(".ref.json") or n.endswith("metadata.json") for n in names)
    best = "checkpoints/" + os.path.basename(checkpoint.best_model_path) + ".ref.json"
    assert mltrail.get_run(logger.version).data.tags["mltrail.checkpoint.best"] == best
    path = mltrail.Client().download_artifacts(logger.version, best, str(tmp_path / "dl"))
    with open(path) as fh:
        ref = json.load(fh)
    with open(checkpoint.best_model_path, "rb") as fh:
        data = fh.read()
    assert ref["path"] == os.path.abspath(checkpoint.best_model_path)
    assert ref["size"] == len(data) and ref["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_users_exception_propagates_and_the_run_ends_failed(sqlite_uri: str) -> None:
    logger = mltrail_lightning.MLTrailLogger()

    def fit(boom: Any) -> None:
        trainer(logger=logger).fit(make_model(boom=boom))

    check_user_exception(fit)
    assert mltrail.get_run(logger.version).info.status == "FAILED"


def test_logs_into_the_active_run_and_leaves_it_open(sqlite_uri: str) -> None:
    with mltrail.start_run() as run:
        logger = mltrail_lightning.MLTrailLogger()
        trainer(logger=logger, max_epochs=1).fit(make_model())
        assert logger.version == run.info.run_id
        assert mltrail.active_run() is run
        mltrail.log_metric("after", 1.0)
    final = mltrail.get_run(run.info.run_id)
    assert final.info.status == "FINISHED" and "train_loss" in final.data.metrics


def test_run_id_resumes_a_run(sqlite_uri: str) -> None:
    with mltrail.start_run() as first:
        mltrail.log_param("seed", 1)
    logger = mltrail_lightning.MLTrailLogger(run_id=first.info.run_id)
    trainer(logger=logger, max_epochs=1).fit(make_model())
    run = mltrail.get_run(first.info.run_id)
    assert run.info.status == "FINISHED" and "train_loss" in run.data.metrics and len(_runs()) == 1


def test_rank_nonzero_records_nothing(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_utilities.core.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    logger = mltrail_lightning.MLTrailLogger()
    assert isinstance(logger.experiment, logger._DUMMY)
    assert logger.experiment.log_metric("x", 1) is None
    logger.log_hyperparams({"a": 1})
    logger.log_metrics({"m": 1.0}, step=1)
    logger.finalize("success")
    assert logger.version is None
    assert _runs() == []


def _tensorboard_available() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


@pytest.mark.parametrize("other", ["csv", "tensorboard"])
def test_beside_csv_and_tensorboard_loggers(sqlite_uri: str, tmp_path: Any, other: str) -> None:
    if other == "tensorboard" and not _tensorboard_available():
        pytest.skip("TensorBoardLogger needs tensorboard or tensorboardX, not installed here")
    loggers = pl().loggers
    csv_logger = loggers.CSVLogger(tmp_path, name="csv")
    extra = [loggers.TensorBoardLogger(tmp_path, name="tb")] if other == "tensorboard" else []
    ours = mltrail_lightning.MLTrailLogger()
    t = trainer(logger=[csv_logger, *extra, ours], max_epochs=1)
    t.fit(make_model())
    with open(os.path.join(csv_logger.log_dir, "metrics.csv")) as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train_loss")]
    ours_history = _history(ours.version, "train_loss")
    assert [(int(r["step"]), pytest.approx(float(r["train_loss"]))) for r in rows] == ours_history
    for tb in extra:
        assert os.listdir(tb.log_dir)  # TensorBoard wrote its events as usual
    assert t.log_dir == csv_logger.log_dir  # the first logger still decides the directories


def test_save_does_nothing(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from mltrail.core.writer import get_writer

    logger = mltrail_lightning.MLTrailLogger()
    logger.log_metrics({"a": 1.0}, step=0)

    def no_io(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("save() must not touch the store")

    monkeypatch.setattr(get_writer(), "flush", no_io)
    for _ in range(1000):
        logger.save()
    monkeypatch.undo()
    logger.finalize("success")


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(InvalidValueError, match="log_model"):
        mltrail_lightning.MLTrailLogger(log_model="best")
    with pytest.raises(InvalidValueError, match="reference_checkpoints_over"):
        mltrail_lightning.MLTrailLogger(reference_checkpoints_over=-1)
    with pytest.raises(InvalidValueError, match="tags"):
        mltrail_lightning.MLTrailLogger(tags=["a"])  # type: ignore[arg-type]
