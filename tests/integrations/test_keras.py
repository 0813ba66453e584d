"""The Keras integration, end to end: real small models on real data, read back from the store.

An MLP on the digits, a small CNN on the 8x8 digit images, a model with a validation split,
early stopping, a learning-rate schedule and ReduceLROnPlateau; the callback used by hand and
autolog of ``fit`` / ``evaluate``; the fault-injection harness on both patches; the seven
behaviours of STYLE.md; both import orders in a subprocess.

Runs on whatever backend is installed: with TensorFlow present, Keras's default (TensorFlow,
also reached as ``tf.keras``); without it, the PyTorch backend.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HAS_TF = importlib.util.find_spec("tensorflow") is not None
if not HAS_TF:
    # Keras 3 defaults to TensorFlow; without it, the PyTorch backend (set before the import).
    os.environ.setdefault("KERAS_BACKEND", "torch")
# Tiny models on a 2-core machine: one compute thread each. Several threads per op only spin
# against each other (and against other processes), which makes a 1-second fit take ten.
for _var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_var, "1")

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")
sk_datasets = pytest.importorskip("sklearn.datasets")

import mltrail  # noqa: E402
from harness import check_fault_tolerance, check_user_exception, non_strict  # noqa: E402
from mltrail.autolog import AutologWarning, _safety, autolog_status, engine, registry, runs  # noqa: E402
from mltrail.autolog._safety import InjectedFault, inject_fault  # noqa: E402
from mltrail.integrations import keras as mk  # noqa: E402

pytestmark = [
    # TensorFlow's and Keras's own import-time and first-use chatter, not ours.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:tensorflow.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
    pytest.mark.filterwarnings("ignore:.*np.object.*:FutureWarning"),
]

BACKEND = keras.backend.backend()
if BACKEND == "torch":
    import torch

    torch.set_num_threads(1)
# On TensorFlow, tracing a graph for every new model costs seconds; these models are tiny.
EAGER = BACKEND == "tensorflow"


@pytest.fixture(autouse=True)
def _autolog_off() -> Iterator[None]:
    yield
    engine.disable_all()
    runs._reset_for_tests()
    _safety.reset_warnings()
    mk._trained_in.clear()


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    X, y = sk_datasets.load_digits(return_X_y=True)
    X = (X / 16.0).astype("float32")
    return {"X": X[:320], "y": y[:320], "X_test": X[320:480], "y_test": y[320:480]}


def mlp(lr: Any = 0.01, metrics: tuple[str, ...] = ("accuracy",)) -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="sparse_categorical_crossentropy",
        metrics=list(metrics),
        run_eagerly=EAGER,
    )
    return model


def cnn() -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"], run_eagerly=EAGER)
    return model


def _run(run_id: str) -> Any:
    mltrail.flush()
    return mltrail.get_run(run_id)


def _history(run_id: str, key: str) -> list[tuple[int, float]]:
    mltrail.flush()
    return [(m.step, m.value) for m in mltrail.Client().get_metric_history(run_id, key)]


def _artifacts(run_id: str, path: str | None = None) -> list[str]:
    return sorted(f.path for f in mltrail.Client().list_artifacts(run_id, path))


def _inputs(run: Any) -> dict[str, Any]:
    return {
        di.tags.get("mltrail.data.context"): di.dataset for di in run.inputs.dataset_inputs
    }


def _only_run() -> Any:
    mltrail.flush()
    found = mltrail.search_runs(output_format="list")
    assert len(found) == 1, [r.info.run_id for r in found]
    return found[0]


# ---------------------------------------------------------------------- pure helpers
def test_metric_keys_and_logs() -> None:
    assert mk.metric_key("val_loss") == "val_loss"
    assert mk.metric_key("top@5(acc)") == "top_5_acc_"
    assert mk.numeric_logs({"loss": 0.5, "acc": np.float32(0.25), "name": "x", "n": None}, "batch/") == {
        "batch/loss": 0.5,
        "batch/acc": 0.25,
    }
    assert mk.numeric_logs(None) == {}
    assert mk.to_float(True) is None and mk.to_float("1") is None and mk.to_float(3) == 3.0


def test_flatten_config_turns_a_schedule_into_params() -> None:
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=5, decay_rate=0.5)
    params = mk.optimizer_params(keras.optimizers.SGD(learning_rate=schedule, momentum=0.9))
    assert params["optimizer"] == "SGD"
    assert params["optimizer.learning_rate"] == "ExponentialDecay"
    assert params["optimizer.learning_rate.initial_learning_rate"] == "0.1"
    assert params["optimizer.learning_rate.decay_steps"] == "5"
    assert params["optimizer.momentum"] == "0.9"
    assert not any(k.endswith(".name") for k in params)
    assert "optimizer.clipnorm" not in params  # None values say nothing
    plain = mk.optimizer_params(keras.optimizers.Adam(learning_rate=0.005))
    assert plain["optimizer.learning_rate"] == "0.005"


def test_describe_losses_and_metrics() -> None:
    assert mk.describe("mse") == "mse"
    assert mk.describe(["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")]) == "accuracy, top3"
    assert mk.describe({"out_a": "mse", "out_b": "mae"}) == "out_a: mse, out_b: mae"
    assert mk.describe({"module": "builtins", "class_name": "function", "config": "my_loss"}) == "my_loss"
    assert mk.describe(None) is None


def test_compile_model_and_callback_params(digits: dict[str, Any]) -> None:
    model = mlp(metrics=("accuracy", "mae"))
    assert mk.compile_params(model) == {"loss": "sparse_categorical_crossentropy", "metrics": "accuracy, mae"}
    params = mk.model_params(model)
    assert params == {"model_class": "Sequential", "total_params": "1210", "trainable_params": "1210"}
    cbs = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=2),
    ]
    cp = mk.callback_params(cbs)
    assert cp["early_stopping.monitor"] == "val_loss"
    assert cp["early_stopping.patience"] == "3"
    assert cp["early_stopping.restore_best_weights"] == "True"
    assert cp["reduce_lr.factor"] == "0.5"
    text = mk.model_summary(model)
    assert text is not None and "dense" in text and "\x1b" not in text


def test_dataset_fingerprints(digits: dict[str, Any]) -> None:
    X, y = digits["X"], digits["y"]
    ds = mk.dataset_fingerprint(X, y)
    assert ds is not None and ds.source_type == "numpy"
    assert json.loads(ds.profile)["num_rows"] == 320
    assert mk.dataset_fingerprint(X, y).digest == ds.digest
    assert mk.dataset_fingerprint(X[:-1], y[:-1]).digest != ds.digest
    multi = mk.dataset_fingerprint({"a": X, "b": X[:, :3]}, y)
    assert multi is not None and json.loads(multi.schema)["features"]["b"]["shape"] == [-1, 3]
    assert mk.dataset_fingerprint(iter([X])) is None  # a generator is not iterated
    assert mk.dataset_fingerprint([[1.0, 2.0]]) is None  # nor are Python lists copied

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()

        def __len__(self) -> int:
            return 7

        def __getitem__(self, i: int) -> Any:
            return X[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]

    py = mk.dataset_fingerprint(Batches())
    assert py is not None and py.source_type == "keras.PyDataset"
    assert json.loads(py.profile)["num_batches"] == 7


@pytest.mark.skipif(not HAS_TF, reason="tf.data needs TensorFlow, which this environment does not install")
def test_tf_data_fingerprint(digits: dict[str, Any]) -> None:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((digits["X"], digits["y"])).batch(32)
    fp = mk.dataset_fingerprint(ds)
    assert fp is not None and fp.source_type == "tf.data.Dataset"
    spec = json.loads(fp.schema)["element_spec"]
    assert spec == [{"shape": [None, 64], "dtype": "float32"}, {"shape": [None], "dtype": "int64"}]
    assert json.loads(fp.profile) == {"num_batches": 10, "infinite": False}
    assert json.loads(mk.dataset_fingerprint(ds.repeat()).profile)["infinite"] is True


def test_split_for_validation_matches_keras(digits: dict[str, Any]) -> None:
    X, y = digits["X"], digits["y"]
    x_train, _, x_val, y_val = mk.split_for_validation(X, y, 0.25)
    assert len(x_train) == 240 and len(x_val) == 80
    assert np.shares_memory(x_train, X)  # views, not copies
    assert (y_val == y[240:]).all()


def test_checkpoint_filename_pattern() -> None:
    pattern = mk._filename_pattern("ckpt-{epoch:02d}-{val_loss:.2f}.keras")
    assert pattern.fullmatch("ckpt-03-0.41.keras")
    assert not pattern.fullmatch("other.keras")
    assert mk._filename_pattern("best.weights.h5").fullmatch("best.weights.h5")


# ---------------------------------------------------------------------- the callback by hand
def test_callback_in_a_user_run_logs_params_metrics_summary_data(sqlite_uri: str, digits: dict[str, Any]) -> None:
    model = mlp()
    with mltrail.start_run() as active:
        history = model.fit(
            digits["X"], digits["y"], epochs=3, batch_size=32, validation_split=0.25, verbose=0,
            callbacks=[mk.MLTrailCallback()],
        )
    run = _run(active.info.run_id)
    p = run.data.params
    assert p["epochs"] == "3" and p["batch_size"] == "32" and p["steps_per_epoch"] == "8"
    assert p["validation_split"] == "0.25" and p["initial_epoch"] == "0"
    assert p["optimizer"] == "Adam" and p["optimizer.learning_rate"] == "0.01"
    assert p["loss"] == "sparse_categorical_crossentropy" and p["metrics"] == "accuracy"
    assert p["model_class"] == "Sequential" and p["total_params"] == "1210"
    assert run.data.tags["keras.backend"] == BACKEND
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        steps = [s for s, _ in _history(active.info.run_id, key)]
        assert steps == [0, 1, 2], key
        assert _history(active.info.run_id, key)[-1][1] == pytest.approx(history.history[key][-1])
    assert [v for _, v in _history(active.info.run_id, "learning_rate")] == pytest.approx([0.01] * 3)
    assert not any(k.startswith("batch/") for k in run.data.metrics)  # per epoch only by default
    assert "model_summary.txt" in _artifacts(active.info.run_id)
    assert "model" not in _artifacts(active.info.run_id)  # the model only on request
    inputs = _inputs(run)
    assert json.loads(inputs["training"].profile)["num_rows"] == 240  # the split Keras trained on
    assert json.loads(inputs["validation"].profile)["num_rows"] == 80
    assert inputs["training"].digest == mk.dataset_fingerprint(digits["X"][:240], digits["y"][:240]).digest


def test_callback_with_no_run_starts_and_ends_one(sqlite_uri: str, digits: dict[str, Any]) -> None:
    cb = mk.MLTrailCallback(log_model_summary=False, log_datasets=False)
    mlp().fit(digits["X"], digits["y"], epochs=2, verbose=0, callbacks=[cb])
    assert mltrail.active_run() is None
    run = _only_run()
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "2"
    assert [s for s, _ in _history(run.info.run_id, "loss")] == [0, 1]
    # the same callback again, in a run of the user's: logs there, no new run
    with mltrail.start_run() as active:
        mlp().fit(digits["X"], digits["y"], epochs=1, verbose=0, callbacks=[cb])
    assert "loss" in _run(active.info.run_id).data.metrics


def test_callback_run_left_by_a_failed_fit_is_ended_failed(sqlite_uri: str, digits: dict[str, Any]) -> None:
    cb = mk.MLTrailCallback(log_model_summary=False, log_datasets=False)

    def fail(epoch: int, logs: Any) -> None:
        raise KeyError("user bug")

    with pytest.raises(KeyError):
        mlp().fit(digits["X"], digits["y"], epochs=2, verbose=0,
                  callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=fail), cb])
    failed_id = mltrail.active_run().info.run_id  # Keras told no callback that fit raised
    mlp().fit(digits["X"], digits["y"], epochs=1, verbose=0, callbacks=[cb])
    assert mltrail.active_run() is None
    assert _run(failed_id).info.status == "FAILED"
    runs_ = mltrail.search_runs(output_format="list")
    assert len(runs_) == 2
    assert {r.info.status for r in runs_} == {"FAILED", "FINISHED"}


def test_callback_with_run_id_and_validation_data(sqlite_uri: str, digits: dict[str, Any]) -> None:
    run_id = mltrail.Client().create_run("0").info.run_id
    cb = mk.MLTrailCallback(run_id=run_id, log_model=True)
    model = mlp()
    model.fit(
        digits["X"], digits["y"], epochs=2, batch_size=64, verbose=0, callbacks=[cb],
        validation_data=(digits["X_test"], digits["y_test"]),
    )
    run = _run(run_id)
    assert run.data.params["batch_size"] == "64"
    assert [s for s, _ in _history(run_id, "val_loss")] == [0, 1]
    inputs = _inputs(run)
    assert json.loads(inputs["validation"].profile)["num_rows"] == 160
    loaded = mk.load_model(run_id)
    np.testing.assert_allclose(
        loaded.predict(digits["X_test"], verbose=0), model.predict(digits["X_test"], verbose=0), rtol=1e-5
    )


def test_per_batch_metrics_every_n_steps(sqlite_uri: str, digits: dict[str, Any]) -> None:
    with mltrail.start_run() as active:
        mlp().fit(
            digits["X"], digits["y"], epochs=2, batch_size=32, verbose=0,
            callbacks=[mk.MLTrailCallback(log_every_n_steps=3)],
        )
    # 10 batches per epoch, 20 in all: global steps 0, 3, ..., 18
    assert [s for s, _ in _history(active.info.run_id, "batch/loss")] == list(range(0, 20, 3))
    assert [s for s, _ in _history(active.info.run_id, "batch/accuracy")] == list(range(0, 20, 3))
    assert "batch/learning_rate" not in _run(active.info.run_id).data.metrics  # fixed rate


def test_batch_hooks_are_overridden_only_when_asked() -> None:
    from keras.src import utils as keras_utils

    quiet = mk.MLTrailCallback()
    chatty = mk.MLTrailCallback(log_every_n_steps=10)
    batch_hooks = ("on_batch_end", "on_train_batch_end", "on_test_batch_end", "on_predict_batch_end")
    for name in batch_hooks:
        assert name not in vars(type(quiet)) and name not in vars(quiet), name
    assert "on_train_batch_end" in vars(chatty)
    assert not any(name in vars(chatty) for name in batch_hooks if name != "on_train_batch_end")
    if keras_utils.is_default(keras.callbacks.Callback.on_train_batch_end):
        # Keras versions that mark the base hooks look at which ones a callback overrides
        assert keras_utils.is_default(quiet.on_train_batch_end)
        assert not keras_utils.is_default(chatty.on_train_batch_end)
    assert chatty.async_safe is True
    listed = keras.callbacks.CallbackList([chatty])
    if hasattr(listed, "_async_train") and "async_safe" in _callback_list_source():
        # Keras dispatches asynchronously where the backend allows it: never made to wait for us.
        thread_safe = getattr(keras.src.backend, "IS_THREAD_SAFE", True)
        assert listed._async_train is bool(thread_safe)
    with pytest.raises(mltrail.InvalidValueError):
        mk.MLTrailCallback(log_every_n_steps=0)


def _callback_list_source() -> str:
    import inspect

    from keras.src.callbacks import callback_list

    return inspect.getsource(callback_list)


def test_learning_rate_schedule_per_epoch_and_per_batch(sqlite_uri: str, digits: dict[str, Any]) -> None:
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=10, decay_rate=0.5)
    with mltrail.start_run() as active:
        mlp(lr=schedule).fit(
            digits["X"], digits["y"], epochs=3, batch_size=32, verbose=0,
            callbacks=[mk.MLTrailCallback(log_every_n_steps=5)],
        )
    run_id = active.info.run_id
    # epoch e ends after 10 (e + 1) steps: the rate for the next step
    assert [v for _, v in _history(run_id, "learning_rate")] == pytest.approx([0.025, 0.0125, 0.00625], rel=1e-5)
    per_batch = _history(run_id, "batch/learning_rate")
    assert [s for s, _ in per_batch] == [0, 5, 10, 15, 20, 25]
    assert [v for _, v in per_batch] == pytest.approx([0.05 * 0.5 ** (s / 10) for s in range(0, 30, 5)], rel=1e-5)
    assert _run(run_id).data.params["optimizer.learning_rate.decay_rate"] == "0.5"


def test_reduce_lr_on_plateau_shows_in_learning_rate(sqlite_uri: str, digits: dict[str, Any]) -> None:
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=100.0)
    with mltrail.start_run() as active:
        mlp(lr=0.02).fit(digits["X"], digits["y"], epochs=3, verbose=0, callbacks=[plateau, mk.MLTrailCallback()])
    # the rate each epoch ran with: the first epoch sets the best loss, the second misses it
    # by min_delta, so the third runs at half the rate
    assert [v for _, v in _history(active.info.run_id, "learning_rate")] == pytest.approx([0.02, 0.02, 0.01])
    assert _run(active.info.run_id).data.params["reduce_lr.factor"] == "0.5"


def test_early_stopping_with_restored_weights(sqlite_uri: str, digits: dict[str, Any]) -> None:
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=100.0, restore_best_weights=True)
    with mltrail.start_run() as active:
        history = mlp().fit(digits["X"], digits["y"], epochs=20, verbose=0, callbacks=[stopper, mk.MLTrailCallback()])
    run = _run(active.info.run_id)
    assert len(history.history["loss"]) == 2
    assert run.data.metrics["early_stopping.stopped_epoch"] == 1.0
    assert run.data.metrics["early_stopping.best_epoch"] == 0.0
    assert run.data.metrics["early_stopping.restored_epoch"] == 0.0
    assert run.data.params["early_stopping.patience"] == "1"
    assert run.data.params["early_stopping.restore_best_weights"] == "True"
    assert [s for s, _ in _history(active.info.run_id, "loss")] == [0, 1]


def test_model_checkpoint_files_become_artifacts(sqlite_uri: str, digits: dict[str, Any], tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "weights-99.weights.h5").write_bytes(b"from an earlier run")  # not this fit's
    (ckpt / "notes.txt").write_text("unrelated")
    every = keras.callbacks.ModelCheckpoint(str(ckpt / "weights-{epoch:02d}.weights.h5"), save_weights_only=True)
    best = keras.callbacks.ModelCheckpoint(str(ckpt / "best.keras"), monitor="loss", save_best_only=True)
    with mltrail.start_run() as active:
        mlp().fit(digits["X"], digits["y"], epochs=3, verbose=0, callbacks=[every, best, mk.MLTrailCallback()])
    files = _artifacts(active.info.run_id, "checkpoints")
    assert files == [
        "checkpoints/best.keras",
        "checkpoints/weights-01.weights.h5",
        "checkpoints/weights-02.weights.h5",
        "checkpoints/weights-03.weights.h5",
    ]
    local = mltrail.Client().download_artifacts(active.info.run_id, "checkpoints/best.keras")
    assert Path(local).read_bytes() == (ckpt / "best.keras").read_bytes()
    assert _run(active.info.run_id).data.params["checkpoint.save_weights_only"] == "True"


def test_batch_logging_failure_is_reported_from_the_training_thread(
    sqlite_uri: str, digits: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = mk.callback_class()

    def broken(self: Any, step: int, logs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cls, "_log_batch", broken)
    mk.autolog(log_every_n_steps=1, log_models=False)
    with non_strict(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = mlp().fit(digits["X"], digits["y"], epochs=2, verbose=0)
    ours = [w for w in caught if issubclass(w.category, AutologWarning)]
    assert len(ours) == 1 and "on_train_batch_end failed" in str(ours[0].message)
    assert os.path.samefile(ours[0].filename, __file__)  # names the user's line, not Keras's thread
    assert len(history.history["loss"]) == 2
    run = _only_run()
    assert run.info.status == "FINISHED"
    assert [s for s, _ in _history(run.info.run_id, "loss")] == [0, 1]  # the rest still logged
    # by hand, without autolog: still one warning, training unharmed
    _safety.reset_warnings()
    with non_strict(), warnings.catch_warnings(record=True) as caught, mltrail.start_run():
        warnings.simplefilter("always")
        mlp().fit(digits["X"], digits["y"], epochs=2, verbose=0, callbacks=[mk.MLTrailCallback(log_every_n_steps=1)])
    assert len([w for w in caught if issubclass(w.category, AutologWarning)]) == 1
    # strict mode: the failure comes out of fit
    _safety.reset_warnings()
    with pytest.raises(RuntimeError, match="disk on fire"), mltrail.start_run():
        mlp().fit(digits["X"], digits["y"], epochs=1, verbose=0, callbacks=[mk.MLTrailCallback(log_every_n_steps=1)])


def test_strict_mode_raises_our_errors(sqlite_uri: str, digits: dict[str, Any]) -> None:
    assert os.environ.get("MLTRAIL_AUTOLOG_STRICT") == "1"
    mk.autolog()
    with inject_fault("keras", "params"), pytest.raises(InjectedFault):
        mlp().fit(digits["X"], digits["y"], epochs=1, verbose=0)


# ---------------------------------------------------------------------- autolog
def test_autolog_cnn_on_digit_images(sqlite_uri: str, digits: dict[str, Any]) -> None:
    mk.autolog(log_models=False)
    images = digits["X"].reshape(-1, 8, 8, 1)
    history = cnn().fit(images, digits["y"], epochs=2, batch_size=16, validation_split=0.2, verbose=0)
    run = _only_run()
    assert run.info.status == "FINISHED"
    assert run.data.tags["mltrail.autolog"] == "keras"
    p = run.data.params
    assert p["optimizer"] == "SGD" and p["batch_size"] == "16" and p["steps_per_epoch"] == "16"
    assert p["total_params"] == str(cnn().count_params())
    assert run.data.metrics["val_accuracy"] == pytest.approx(history.history["val_accuracy"][-1])
    assert [s for s, _ in _history(run.info.run_id, "val_loss")] == [0, 1]
    summary = Path(mltrail.Client().download_artifacts(run.info.run_id, "model_summary.txt")).read_text()
    assert "conv2d" in summary
    training = _inputs(run)["training"]
    assert json.loads(training.schema)["features"]["shape"] == [-1, 8, 8, 1]
    assert json.loads(training.profile)["num_rows"] == 256


def test_autolog_logs_model_and_evaluate_goes_to_the_run(sqlite_uri: str, digits: dict[str, Any]) -> None:
    mk.autolog(log_every_n_steps=4)
    model = mlp()
    model.fit(digits["X"], digits["y"], epochs=2, validation_split=0.25, verbose=0)
    run = _only_run()
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert not any(k.startswith("eval_") for k in run.data.metrics)  # validation is part of fit
    assert [s for s, _ in _history(run_id, "batch/loss")] == [0, 4, 8, 12]  # 2 epochs of 8 steps
    result = model.evaluate(digits["X_test"], digits["y_test"], verbose=0, return_dict=True)
    after = _only_run()  # no new run: back into the fit's run
    assert after.info.run_id == run_id and after.info.status == "FINISHED"
    assert after.data.metrics["eval_loss"] == pytest.approx(result["loss"])
    assert after.data.metrics["eval_accuracy"] == pytest.approx(result["accuracy"])
    assert json.loads(_inputs(after)["evaluation"].profile)["num_rows"] == 160
    loaded = mk.load_model(f"runs:/{run_id}/model")
    np.testing.assert_allclose(
        loaded.predict(digits["X_test"], verbose=0), model.predict(digits["X_test"], verbose=0), rtol=1e-5
    )
    assert sorted(_artifacts(run_id, "model")) == ["model/mltrail_model.json", "model/model.keras"]


def test_autolog_inside_a_user_run_and_second_fit_is_a_child(sqlite_uri: str, digits: dict[str, Any]) -> None:
    mk.autolog(log_models=False)
    model = mlp()
    with mltrail.start_run() as active:
        model.fit(digits["X"], digits["y"], epochs=1, verbose=0)
        model.fit(digits["X"], digits["y"], epochs=2, verbose=0)
        model.evaluate(digits["X_test"], digits["y_test"], verbose=0)
    parent = _run(active.info.run_id)
    assert parent.data.params["epochs"] == "1"
    assert "eval_loss" in parent.data.metrics
    children = mltrail.search_runs(
        filter_string=f"tags.mltrail.parentRunId = '{active.info.run_id}'", output_format="list"
    )
    assert len(children) == 1 and children[0].data.params["epochs"] == "2"


def test_autolog_evaluate_without_a_run_of_the_model_logs_nothing(sqlite_uri: str, digits: dict[str, Any]) -> None:
    mk.autolog()
    model = mlp()
    model.evaluate(digits["X_test"], digits["y_test"], verbose=0)
    assert mltrail.search_runs(output_format="list") == []


def test_autolog_with_callbacks_passed_positionally(sqlite_uri: str, digits: dict[str, Any]) -> None:
    mk.autolog(log_models=False)
    seen: list[int] = []
    user_cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    mlp().fit(digits["X"], digits["y"], 32, 2, 0, [user_cb])
    assert seen == [0, 1]
    assert [s for s, _ in _history(_only_run().info.run_id, "loss")] == [0, 1]


@pytest.mark.skipif(not HAS_TF, reason="tf.keras needs TensorFlow, which this environment does not install")
def test_tf_keras_is_patched_once(sqlite_uri: str, digits: dict[str, Any]) -> None:
    import tensorflow as tf

    mk.autolog(log_models=False)
    assert tf.keras.Model is keras.Model  # Keras 3 behind tf.keras: one class, one patch
    patched = autolog_status()["keras"].patched
    assert sum(p.endswith("Model.fit") for p in patched) == 1, patched
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((64,)), tf.keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    data = tf.data.Dataset.from_tensor_slices((digits["X"], digits["y"])).batch(64)
    model.fit(data, epochs=2, verbose=0, shuffle=False)  # a dataset shuffles itself
    run = _only_run()
    assert [s for s, _ in _history(run.info.run_id, "loss")] == [0, 1]
    training = _inputs(run)["training"]
    assert training.source_type == "tf.data.Dataset"
    assert json.loads(training.profile)["num_batches"] == 5


@pytest.mark.skipif(not HAS_TF, reason="steps_per_execution > 1 needs the TensorFlow (or JAX) backend")
def test_per_batch_logging_with_steps_per_execution(sqlite_uri: str, digits: dict[str, Any]) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", steps_per_execution=4)
    with mltrail.start_run() as active:
        model.fit(digits["X"], digits["y"], epochs=2, verbose=0, callbacks=[mk.MLTrailCallback(log_every_n_steps=5)])
    # Keras reports steps 3, 7, 9 (as 11) of each 10-step epoch; each report that covers a
    # multiple of 5 is logged, at the step it reports
    assert [s for s, _ in _history(active.info.run_id, "batch/loss")] == [3, 7, 13, 17]


def test_autolog_pydataset(sqlite_uri: str, digits: dict[str, Any]) -> None:
    X, y = digits["X"], digits["y"]

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()

        def __len__(self) -> int:
            return 5

        def __getitem__(self, i: int) -> Any:
            return X[i * 64 : (i + 1) * 64], y[i * 64 : (i + 1) * 64]

    mk.autolog(log_models=False)
    mlp().fit(Batches(), epochs=1, verbose=0)
    run = _only_run()
    assert run.data.params["steps_per_epoch"] == "5"
    assert json.loads(_inputs(run)["training"].profile)["num_batches"] == 5


# ---------------------------------------------------------------------- the seven behaviours
def test_user_exception_propagates_and_the_run_fails(sqlite_uri: str, digits: dict[str, Any]) -> None:
    mk.autolog()

    def fit_calling(boom: Any) -> None:
        stop = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: boom())
        mlp().fit(digits["X"], digits["y"], epochs=2, verbose=0, callbacks=[stop])

    check_user_exception(fit_calling)
    run = _only_run()
    assert run.info.status == "FAILED"
    assert mltrail.active_run() is None


def test_fit_survives_every_failure_of_ours(sqlite_uri: str, digits: dict[str, Any], tmp_path: Path) -> None:
    mk.autolog(log_every_n_steps=2)
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=5)

    def train() -> list[float]:
        # ~35 fits: the smallest model and data that still reach every step (4 batches)
        checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "w-{epoch}.weights.h5"), save_weights_only=True)
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", run_eagerly=EAGER)
        model.fit(digits["X"][:64], digits["y"][:64], epochs=2, verbose=0, callbacks=[stopper, checkpoint])
        return np.round(model.predict(digits["X_test"][:8], verbose=0), 5).ravel().tolist()

    points = check_fault_tolerance(
        train,
        integration="keras",
        expect_points={"pre", "post", "on_train_begin", "on_epoch_end", "on_train_end", "params",
                       "model_summary", "datasets", "checkpoints", "on_train_batch_end", "log_model",
                       "early_stopping"},
    )
    assert "run_start" in points and "when" in points


def test_evaluate_survives_every_failure_of_ours(sqlite_uri: str, digits: dict[str, Any]) -> None:
    model = mlp()
    model.fit(digits["X"], digits["y"], epochs=1, verbose=0)
    mk.autolog()

    def evaluate() -> float:
        with mltrail.start_run():
            return round(float(model.evaluate(digits["X_test"], digits["y_test"], verbose=0)[0]), 6)

    check_fault_tolerance(evaluate, integration="keras", expect_points={"pre", "post", "on_test_end"})


def test_disable_restores_the_originals() -> None:
    fit_before = vars(keras.Model).get("fit")
    evaluate_before = vars(keras.Model).get("evaluate")
    inherited_fit = keras.Model.fit
    mk.autolog()
    assert vars(keras.Model)["fit"] is not fit_before
    mk.autolog(disable=True)
    assert vars(keras.Model).get("fit") is fit_before
    assert vars(keras.Model).get("evaluate") is evaluate_before
    assert keras.Model.fit is inherited_fit
    assert autolog_status()["keras"].patched == ()


def test_autolog_twice_leaves_one_wrapper(sqlite_uri: str, digits: dict[str, Any]) -> None:
    mk.autolog()
    first = vars(keras.Model)["fit"]
    mk.autolog(log_model_summary=False)
    # the package-wide switch (other integrations left out): same integration, same wrappers
    mltrail.autolog(exclude=[name for name in registry.INTEGRATIONS if name != "keras"])
    assert vars(keras.Model)["fit"] is first
    assert len(engine._patched_objects("keras")) == 2
    assert autolog_status()["keras"].config.log_model_summary is False  # Keras's own options kept
    mlp().fit(digits["X"], digits["y"], epochs=2, verbose=0)
    run_id = _only_run().info.run_id
    assert [s for s, _ in _history(run_id, "loss")] == [0, 1]
    assert "model_summary.txt" not in _artifacts(run_id) and "model" in _artifacts(run_id)


def test_no_double_logging_with_our_callback_and_autolog(sqlite_uri: str, digits: dict[str, Any]) -> None:
    mk.autolog(log_every_n_steps=1)
    mlp().fit(digits["X"], digits["y"], epochs=2, verbose=0, callbacks=[mk.MLTrailCallback(log_every_n_steps=5)])
    run = _only_run()
    assert [s for s, _ in _history(run.info.run_id, "loss")] == [0, 1]
    # every 5 steps, as the user's callback says (not every step, as autolog would)
    assert [s for s, _ in _history(run.info.run_id, "batch/loss")] == [0, 5, 10, 15]
    assert "model" not in _artifacts(run.info.run_id)


IMPORT_ORDER = """
import json, os, sys
import mltrail
from mltrail.integrations import keras as mk
{before}
{import_keras}
{after}
import numpy as np
from sklearn.datasets import load_digits
X, y = load_digits(return_X_y=True)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
model.fit((X[:200] / 16).astype("float32"), y[:200], epochs=2, verbose=0)
mltrail.flush()
runs = mltrail.search_runs(output_format="list")
print(json.dumps({{
    "runs": len(runs),
    "epochs": runs[0].data.params.get("epochs"),
    "loss_steps": [m.step for m in mltrail.Client().get_metric_history(runs[0].info.run_id, "loss")],
    "patched": list(mltrail.autolog_status()["keras"].patched),
}}))
"""


@pytest.mark.parametrize(
    "order,import_keras",
    [
        ("autolog_first", "import keras"),
        ("keras_first", "import keras"),
        pytest.param(
            "autolog_first", "import tensorflow as tf\nkeras = tf.keras", id="autolog_first-tf.keras",
            marks=pytest.mark.skipif(not HAS_TF, reason="tf.keras needs TensorFlow, not installed here"),
        ),
    ],
)
def test_both_import_orders(tmp_path: Path, order: str, import_keras: str) -> None:
    switch = "mk.autolog(log_models=False)"
    check = "assert 'keras' not in sys.modules, 'autolog imported keras'"
    script = IMPORT_ORDER.format(
        before=f"{switch}\n{check}" if order == "autolog_first" else "",
        import_keras=import_keras,
        after=switch if order == "keras_first" else "",
    )
    env = dict(os.environ, MLTRAIL_AUTOLOG_STRICT="1", MLTRAIL_TRACKING_URI=str(tmp_path / "store"))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["runs"] == 1 and out["epochs"] == "2" and out["loss_steps"] == [0, 1]
    assert sum(p.endswith("Model.fit") for p in out["patched"]) == 1


def test_importing_the_integration_does_not_import_keras() -> None:
    code = (
        "import sys, mltrail\n"
        "from mltrail.integrations import keras as mk\n"
        "mk.autolog()\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules and 'torch' not in sys.modules\n"
        "mltrail.keras.load_model\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
