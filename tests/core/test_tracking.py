"""The tracking API end to end, on SQLite and PostgreSQL: what a user logs is what they read back."""

from __future__ import annotations

import json
import math
import os
import struct
import zlib

import numpy as np
import pytest

import mltrail
from mltrail import Client, RunStatus


def test_default_experiment_and_generated_name(tracking_uri: str) -> None:
    with mltrail.start_run() as run:
        pass
    got = mltrail.get_run(run.info.run_id)
    assert got.info.experiment_id == "0"
    assert mltrail.get_experiment("0").name == "Default"
    name = got.info.run_name
    adjective, noun, number = name.split("-")
    assert adjective.isalpha() and noun.isalpha() and 1 <= int(number) <= 999
    assert got.data.tags["mltrail.runName"] == name
    assert got.info.status == "FINISHED"
    assert got.info.end_time is not None and got.info.end_time >= got.info.start_time


def test_experiments_create_get_list_delete_restore_tags(tracking_uri: str) -> None:
    client = Client()
    exp_id = mltrail.create_experiment("vision", tags={"team": "cv"})
    exp = mltrail.get_experiment(exp_id)
    assert exp.name == "vision" and exp.tags == {"team": "cv"} and exp.lifecycle_stage == "active"
    assert mltrail.get_experiment_by_name("vision").experiment_id == exp_id
    assert mltrail.get_experiment_by_name("missing") is None
    client.set_experiment_tag(exp_id, "owner", "ada")
    assert mltrail.get_experiment(exp_id).tags == {"team": "cv", "owner": "ada"}
    with pytest.raises(mltrail.ExperimentExistsError, match="vision"):
        mltrail.create_experiment("vision")

    same = mltrail.set_experiment("vision")
    assert same.experiment_id == exp_id
    created = mltrail.set_experiment("nlp")  # set_experiment creates a missing one
    assert mltrail.get_experiment_by_name("nlp").experiment_id == created.experiment_id
    names = {e.name for e in mltrail.search_experiments()}
    assert {"Default", "vision", "nlp"} <= names

    client.delete_experiment(exp_id)
    assert mltrail.get_experiment(exp_id).lifecycle_stage == "deleted"
    assert "vision" not in {e.name for e in mltrail.search_experiments()}
    with pytest.raises(mltrail.RunStateError, match="deleted"):
        mltrail.set_experiment("vision")
    client.restore_experiment(exp_id)
    assert mltrail.get_experiment(exp_id).lifecycle_stage == "active"
    client.rename_experiment(exp_id, "vision-v2")
    assert mltrail.get_experiment(exp_id).name == "vision-v2"


def test_runs_land_in_the_active_experiment(tracking_uri: str) -> None:
    exp = mltrail.set_experiment("digits")
    with mltrail.start_run(run_name="baseline", description="first try") as run:
        mltrail.log_param("lr", 0.01)
    got = mltrail.get_run(run.info.run_id)
    assert got.info.experiment_id == exp.experiment_id
    assert got.info.run_name == "baseline"
    assert got.data.tags["mltrail.note.content"] == "first try"
    assert got.info.artifact_uri.endswith(f"/{run.info.run_id}/artifacts")


def test_params_immutable_same_value_ok(tracking_uri: str) -> None:
    with mltrail.start_run() as run:
        mltrail.log_params({"lr": 0.1, "layers": [64, 32], "name": "mlp", "flag": True, "none": None})
        mltrail.log_param("lr", 0.1)  # same value again: fine
        with pytest.raises(mltrail.ParamConflictError, match=r"'lr'.*0\.1.*0\.2"):
            mltrail.log_param("lr", 0.2)
        with pytest.raises(mltrail.ParamConflictError):
            mltrail.log_params({"new": 1, "lr": 0.3})
    params = mltrail.get_run(run.info.run_id).data.params
    # The rejected batch logged nothing, not even its valid part.
    assert params == {"lr": "0.1", "layers": "[64, 32]", "name": "mlp", "flag": "True", "none": "None"}


def test_param_conflict_detected_after_resume(tracking_uri: str) -> None:
    with mltrail.start_run() as run:
        mltrail.log_param("seed", 1)
    with mltrail.start_run(run_id=run.info.run_id):
        mltrail.log_param("seed", 1)
        with pytest.raises(mltrail.ParamConflictError):
            mltrail.log_param("seed", 2)


def test_metric_history_steps_timestamps_and_duplicates(tracking_uri: str) -> None:
    with mltrail.start_run() as run:
        for step in range(5):
            mltrail.log_metric("loss", 1.0 / (step + 1), step=step)
        # A restart from a checkpoint logs steps 3 and 4 again: both points are kept.
        mltrail.log_metric("loss", 0.3, step=3, timestamp=1_700_000_000_000)
        mltrail.log_metric("loss", 0.2, step=4)
        mltrail.log_metric("acc", 7)  # int, default step 0
    hist = Client().get_metric_history(run.info.run_id, "loss")
    assert hist.steps.tolist() == [0, 1, 2, 3, 4, 3, 4]
    assert hist.values.tolist() == [1.0, 0.5, 1 / 3, 0.25, 0.2, 0.3, 0.2]
    assert hist.timestamps[5] == 1_700_000_000_000
    assert [m.step for m in hist] == [0, 1, 2, 3, 4, 3, 4]
    assert hist[0].value == 1.0 and hist[-1].step == 4
    assert hist.values.dtype == np.float64 and hist.steps.dtype == np.int64
    data = mltrail.get_run(run.info.run_id).data
    # Latest = highest step, then latest timestamp.
    assert data.metrics["loss"] == 0.2
    assert data.metrics["acc"] == 7.0
    summary = data.metric_summaries["loss"]
    assert (summary.min, summary.max, summary.count, summary.step) == (0.2, 1.0, 7, 4)
    empty = Client().get_metric_history(run.info.run_id, "never-logged")
    assert len(empty) == 0


def test_nan_and_infinities_round_trip_exactly(tracking_uri: str) -> None:
    nan_payload = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_1234))[0]
    values = [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308, nan_payload]
    with mltrail.start_run() as run:
        for i, v in enumerate(values):
            mltrail.log_metric("x", v, step=i)
        mltrail.log_metrics({"only_nan": float("nan"), "pinf": float("inf"), "ninf": float("-inf")})
    hist = Client().get_metric_history(run.info.run_id, "x")
    sent = np.array(values, dtype="<f8").view("<u8")
    assert hist.values.view("<u8").tolist() == sent.tolist()  # bit for bit, NaN payload too
    metrics = mltrail.get_run(run.info.run_id).data.metrics
    assert math.isnan(metrics["only_nan"])
    assert metrics["pinf"] == math.inf and metrics["ninf"] == -math.inf
    summary = mltrail.get_run(run.info.run_id).data.metric_summaries["x"]
    assert summary.min == -math.inf and summary.max == math.inf


def test_numpy_scalars_are_metric_values(tracking_uri: str) -> None:
    with mltrail.start_run() as run:
        mltrail.log_metric("a", np.float32(0.5), step=np.int64(3))
        mltrail.log_metric("b", np.array(2.5))
    data = mltrail.get_run(run.info.run_id).data.metrics
    assert data == {"a": 0.5, "b": 2.5}
    assert Client().get_metric_history(run.info.run_id, "a").steps.tolist() == [3]


def test_tags_set_overwrite_delete(tracking_uri: str) -> None:
    with mltrail.start_run(tags={"team": "ml"}) as run:
        mltrail.set_tag("stage", "dev")
        mltrail.set_tags({"stage": "prod", "k": 1})
        mltrail.delete_tag("k")
        mltrail.set_tag("gone", "x")
        mltrail.delete_tag("gone")
        mltrail.set_tag("gone", "back")
    tags = mltrail.get_run(run.info.run_id).data.tags
    assert tags["team"] == "ml" and tags["stage"] == "prod" and tags["gone"] == "back"
    assert "k" not in tags


def test_nested_runs_record_parent(tracking_uri: str) -> None:
    with mltrail.start_run(run_name="parent") as parent:
        with mltrail.start_run(run_name="child", nested=True) as child:
            assert mltrail.active_run().info.run_id == child.info.run_id
            mltrail.log_metric("fold", 1)
        assert mltrail.active_run().info.run_id == parent.info.run_id
        with pytest.raises(mltrail.RunStateError, match="nested=True"):
            mltrail.start_run()
    got = mltrail.get_run(child.info.run_id)
    assert got.data.tags["mltrail.parentRunId"] == parent.info.run_id
    assert got.parent_run_id == parent.info.run_id
    assert got.info.status == "FINISHED"
    assert mltrail.active_run() is None


def test_exception_in_with_block_ends_run_failed(tracking_uri: str) -> None:
    error = ValueError("boom")
    with pytest.raises(ValueError) as caught:
        with mltrail.start_run() as run:
            mltrail.log_metric("loss", 1.0)
            raise error
    assert caught.value is error
    got = mltrail.get_run(run.info.run_id)
    assert got.info.status == "FAILED"
    assert got.data.metrics["loss"] == 1.0


def test_end_run_statuses_and_resume(tracking_uri: str) -> None:
    run = mltrail.start_run()
    mltrail.log_metric("m", 1, step=0)
    mltrail.end_run("KILLED")
    assert mltrail.get_run(run.info.run_id).info.status == "KILLED"
    with mltrail.start_run(run_id=run.info.run_id) as resumed:
        assert resumed.info.status == "RUNNING"
        mltrail.log_metric("m", 2, step=1)
    got = mltrail.get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert Client().get_metric_history(run.info.run_id, "m").values.tolist() == [1.0, 2.0]
    assert mltrail.last_active_run().info.run_id == run.info.run_id


def test_logging_to_a_finished_run_is_an_error(tracking_uri: str) -> None:
    with mltrail.start_run() as run:
        pass
    client = Client()
    with pytest.raises(mltrail.RunStateError, match="finished"):
        client.log_metric(run.info.run_id, "x", 1.0)
    with pytest.raises(mltrail.RunStateError):
        client.log_param(run.info.run_id, "p", 1)
    with pytest.raises(mltrail.RunStateError):
        client.set_tag(run.info.run_id, "t", 1)
    assert mltrail.get_run(run.info.run_id).data.metrics == {}


def test_missing_ids_raise_not_found(tracking_uri: str) -> None:
    client = Client()
    with pytest.raises(mltrail.RunNotFoundError, match="deadbeef"):
        mltrail.get_run("deadbeef")
    with pytest.raises(mltrail.RunNotFoundError):
        client.log_metric("deadbeef", "x", 1.0)
    with pytest.raises(mltrail.RunNotFoundError):
        client.get_metric_history("deadbeef", "x")
    with pytest.raises(mltrail.ExperimentNotFoundError, match="424242"):
        mltrail.get_experiment("424242")
    with pytest.raises(mltrail.ExperimentNotFoundError):
        mltrail.start_run(experiment_id="424242")
    with pytest.raises(mltrail.ExperimentNotFoundError):
        mltrail.get_experiment("not-a-number")
    with pytest.raises(mltrail.RunNotFoundError):
        mltrail.start_run(run_id="0123456789abcdef")


def test_delete_and_restore_run(tracking_uri: str) -> None:
    client = Client()
    with mltrail.start_run() as run:
        pass
    client.delete_run(run.info.run_id)
    assert mltrail.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    assert mltrail.search_runs(output_format="list") == []
    with pytest.raises(mltrail.RunStateError, match="deleted"):
        mltrail.start_run(run_id=run.info.run_id)
    client.restore_run(run.info.run_id)
    assert [r.info.run_id for r in mltrail.search_runs(output_format="list")] == [run.info.run_id]


def test_client_create_run_log_batch_and_terminate(tracking_uri: str) -> None:
    from mltrail import Metric, Param, RunTag

    client = Client()
    exp_id = client.create_experiment("batch")
    run = client.create_run(exp_id, run_name="manual", tags={"a": "b"})
    run_id = run.info.run_id
    assert run.info.status == "RUNNING" and run.info.run_name == "manual"
    client.log_batch(
        run_id,
        metrics=[Metric("loss", 0.5, 1_700_000_000_000, 1), Metric("loss", 0.25, 1_700_000_000_500, 2)],
        params=[Param("opt", "adam")],
        tags=[RunTag("phase", "train")],
    )
    with pytest.raises(mltrail.InvalidKeyError):
        client.log_batch(run_id, metrics=[Metric("ok", 1.0, 0, 0), Metric("", 1.0, 0, 0)])
    client.set_terminated(run_id, "FAILED")
    got = client.get_run(run_id)
    assert got.info.status == "FAILED"
    assert got.data.params == {"opt": "adam"}
    assert got.data.tags["phase"] == "train" and got.data.tags["a"] == "b"
    assert "ok" not in got.data.metrics  # the invalid batch logged nothing
    hist = client.get_metric_history(run_id, "loss")
    assert hist.timestamps.tolist() == [1_700_000_000_000, 1_700_000_000_500]


def test_artifacts_log_list_download(tracking_uri: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.bin").write_bytes(b"\x00\x01")
    single = tmp_path / "model.pkl"
    single.write_bytes(b"weights")
    with mltrail.start_run() as run:
        mltrail.log_artifact(str(single))
        mltrail.log_artifact(str(single), artifact_path="models/best")
        mltrail.log_artifacts(str(src), artifact_path="data")
        mltrail.log_dict({"lr": 0.1, "layers": [1, 2]}, "config/params.json")
        mltrail.log_dict({"lr": 0.1}, "config/params.yaml")
        mltrail.log_text("hello\n", "notes.txt")
    client = Client()
    # environment/ holds what start_run captured (entry point, git diff, requirements).
    top = {(f.path, f.is_dir) for f in client.list_artifacts(run.info.run_id)} - {("environment", True)}
    assert top == {("model.pkl", False), ("models", True), ("data", True), ("config", True), ("notes.txt", False)}
    data = {(f.path, f.file_size) for f in client.list_artifacts(run.info.run_id, "data")}
    assert data == {("data/a.txt", 1), ("data/sub", None)}
    assert [f.path for f in client.list_artifacts(run.info.run_id, "data/sub")] == ["data/sub/b.bin"]
    out = client.download_artifacts(run.info.run_id, "config", str(tmp_path / "dl"))
    assert json.loads((tmp_path / "dl" / "config" / "params.json").read_text()) == {"lr": 0.1, "layers": [1, 2]}
    assert "lr: 0.1" in (tmp_path / "dl" / "config" / "params.yaml").read_text()
    assert os.path.isdir(out)
    whole = client.download_artifacts(run.info.run_id, dst_path=str(tmp_path / "all"))
    with open(os.path.join(whole, "data", "sub", "b.bin"), "rb") as fh:
        assert fh.read() == b"\x00\x01"
    with open(os.path.join(whole, "models", "best", "model.pkl"), "rb") as fh:
        assert fh.read() == b"weights"
    with pytest.raises(mltrail.NotFoundError):
        client.download_artifacts(run.info.run_id, "nope", str(tmp_path / "x"))


def _png_size(data: bytes) -> tuple[int, int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, _depth, color = struct.unpack(">IIBB", data[16:26])
    return width, height, color


def test_log_image_numpy_and_pil_and_figure(tracking_uri: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[0, 0] = [255, 0, 0]
    gray = np.linspace(0, 1, 20).reshape(4, 5)
    with mltrail.start_run() as run:
        mltrail.log_image(rgb, "images/rgb.png")
        mltrail.log_image(gray, "images/gray.png")
        from PIL import Image

        mltrail.log_image(Image.new("RGB", (3, 2), (0, 255, 0)), "images/pil.png")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([1, 2, 3])
        mltrail.log_figure(fig, "plots/line.png")
        mltrail.log_figure(fig, "plots/line.svg")
        plt.close(fig)
    root = tmp_path / "dl"
    Client().download_artifacts(run.info.run_id, "", str(root))
    assert _png_size((root / "images" / "rgb.png").read_bytes()) == (6, 4, 2)
    assert _png_size((root / "images" / "gray.png").read_bytes()) == (5, 4, 0)
    # Our encoder's pixels decode back: first row starts with the red pixel.
    raw = (root / "images" / "rgb.png").read_bytes()
    idat = raw[raw.index(b"IDAT") + 4 : raw.index(b"IEND") - 8]
    assert zlib.decompress(idat)[1:4] == b"\xff\x00\x00"
    pil = Image.open(root / "images" / "pil.png")
    assert pil.size == (3, 2) and pil.getpixel((0, 0)) == (0, 255, 0)
    assert _png_size((root / "plots" / "line.png").read_bytes())[0] > 100
    assert b"<svg" in (root / "plots" / "line.svg").read_bytes()


def test_datasets_from_numpy_and_pandas(tracking_uri: str) -> None:
    import pandas as pd

    X = np.arange(60, dtype=np.float32).reshape(20, 3)
    y = np.arange(20) % 2
    frame = pd.DataFrame({"a": range(5), "b": list("abcde")})
    ds_np = mltrail.data.from_numpy(X, y, name="train", source="s3://bucket/train.npy")
    ds_pd = mltrail.data.from_pandas(frame, targets="b")
    with mltrail.start_run() as run:
        mltrail.log_input(ds_np, context="training")
        mltrail.log_input(ds_pd, context="eval")
    inputs = mltrail.get_run(run.info.run_id).inputs.dataset_inputs
    by_name = {i.dataset.name: i for i in inputs}
    train = by_name["train"]
    assert train.dataset.digest == ds_np.digest and train.dataset.source_type == "numpy"
    assert json.loads(train.dataset.schema)["features"] == {"dtype": "float32", "shape": [-1, 3]}
    assert json.loads(train.dataset.profile)["num_rows"] == 20
    assert json.loads(train.dataset.source) == {"source": "s3://bucket/train.npy"}
    assert train.tags == {"mltrail.data.context": "training"}
    frame_ds = by_name[ds_pd.name].dataset
    columns = json.loads(frame_ds.schema)["columns"]
    assert [c["name"] for c in columns] == ["a", "b"] and columns[0]["type"] == "int64"
    assert json.loads(frame_ds.profile) == {"num_rows": 5, "num_columns": 2}
    # Same data, same digest; changed data, different digest.
    assert mltrail.data.from_numpy(X.copy(), y).digest == ds_np.digest
    X2 = X.copy()
    X2[3, 1] += 1
    assert mltrail.data.from_numpy(X2, y).digest != ds_np.digest


def test_dataset_fingerprint_does_not_copy_large_arrays() -> None:
    import tracemalloc

    X = np.ones((200_000, 50))  # 80 MB
    tracemalloc.start()
    mltrail.data.from_numpy(X)
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < X.nbytes / 10


def test_search_runs_pandas_and_list(tracking_uri: str) -> None:
    for i in range(3):
        with mltrail.start_run(run_name=f"r{i}"):
            mltrail.log_param("i", i)
            mltrail.log_metric("score", i / 10)
            mltrail.set_tag("even", str(i % 2 == 0))
    frame = mltrail.search_runs()
    assert len(frame) == 3
    assert {"run_id", "experiment_id", "status", "start_time", "end_time", "params.i", "metrics.score", "tags.even"} <= set(frame.columns)
    assert sorted(frame["params.i"]) == ["0", "1", "2"]
    runs = mltrail.search_runs(output_format="list")
    assert {r.info.run_name for r in runs} == {"r0", "r1", "r2"}
    named = mltrail.search_runs(experiment_names=["Default"], output_format="list")
    assert len(named) == 3
    with pytest.raises(mltrail.ExperimentNotFoundError):
        mltrail.search_runs(experiment_names=["nope"])


def test_log_metric_without_active_run_starts_one(tracking_uri: str) -> None:
    mltrail.log_metric("auto", 1.0)
    run = mltrail.active_run()
    assert run is not None
    mltrail.end_run()
    assert mltrail.get_run(run.info.run_id).data.metrics == {"auto": 1.0}


def test_thread_without_own_run_logs_to_main_run(tracking_uri: str) -> None:
    import threading

    with mltrail.start_run() as run:
        t = threading.Thread(target=lambda: mltrail.log_metric("from_thread", 3.0))
        t.start()
        t.join()
    assert mltrail.get_run(run.info.run_id).data.metrics == {"from_thread": 3.0}


def test_run_status_enum_values() -> None:
    assert {s.value for s in RunStatus} >= {"RUNNING", "FINISHED", "FAILED", "KILLED", "CRASHED"}


def test_unsupported_tracking_uris(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mltrail.core.store import get_store

    with pytest.raises(mltrail.UnsupportedTrackingURIError, match="tracking server"):
        get_store("https://tracking.example.com")
    with pytest.raises(mltrail.UnsupportedTrackingURIError, match="scheme"):
        get_store("ftp://x/y")
    store = get_store(f"sqlite:///{tmp_path}/explicit.db")
    assert store.get_experiment("0").name == "Default"
    assert os.path.exists(tmp_path / "explicit.db")
