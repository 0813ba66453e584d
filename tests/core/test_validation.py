"""Bad input gets a clear MltrailError naming the problem, and nothing is written (invariant 5)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

import mltrail
from mltrail import Client

LONG_KEY = "k" * 251
LONG_PARAM = "v" * 6001
LONG_TAG = "t" * 8001


def _metric(key: Any, value: Any = 1.0, step: Any = None) -> Callable[[], None]:
    return lambda: mltrail.log_metric(key, value, step=step)


# (id, call, expected error, text the message must contain)
BAD_INPUTS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("empty metric key", _metric(""), mltrail.InvalidKeyError, "empty"),
    ("over-long metric key", _metric(LONG_KEY), mltrail.InvalidKeyError, "250"),
    ("metric key not a str", _metric(3), mltrail.InvalidKeyError, "str"),
    ("metric key with ..", _metric("a/../b"), mltrail.InvalidKeyError, ".."),
    ("absolute metric key", _metric("/etc/passwd"), mltrail.InvalidKeyError, "'/'"),
    ("metric key with newline", _metric("a\nb"), mltrail.InvalidKeyError, "not allowed"),
    ("metric key with backslash", _metric("a\\b"), mltrail.InvalidKeyError, "not allowed"),
    ("metric value a str", _metric("m", "0.5"), mltrail.InvalidValueError, "real number"),
    ("metric value None", _metric("m", None), mltrail.InvalidValueError, "real number"),
    ("metric value bool", _metric("m", True), mltrail.InvalidValueError, "real number"),
    ("metric value a list", _metric("m", [1.0]), mltrail.InvalidValueError, "real number"),
    ("metric value an array", _metric("m", __import__("numpy").ones(3)), mltrail.InvalidValueError, "single real number"),
    ("step a float", _metric("m", 1.0, 1.5), mltrail.InvalidValueError, "step"),
    ("step a str", _metric("m", 1.0, "3"), mltrail.InvalidValueError, "step"),
    ("step beyond int64", _metric("m", 1.0, 2**64), mltrail.InvalidValueError, "64 bits"),
    ("timestamp a str", lambda: mltrail.log_metric("m", 1.0, timestamp="now"), mltrail.InvalidValueError, "timestamp"),
    ("log_metrics not a dict", lambda: mltrail.log_metrics([("a", 1)]), mltrail.InvalidValueError, "dict"),
    ("log_metrics one bad value", lambda: mltrail.log_metrics({"good": 1.0, "bad": "x"}), mltrail.InvalidValueError, "'bad'"),
    ("empty param key", lambda: mltrail.log_param("", 1), mltrail.InvalidKeyError, "empty"),
    ("over-long param key", lambda: mltrail.log_param(LONG_KEY, 1), mltrail.InvalidKeyError, "250"),
    ("param key with ..", lambda: mltrail.log_param("../x", 1), mltrail.InvalidKeyError, ".."),
    ("over-long param value", lambda: mltrail.log_param("p", LONG_PARAM), mltrail.InvalidValueError, "6000"),
    ("log_params not a dict", lambda: mltrail.log_params(["a"]), mltrail.InvalidValueError, "dict"),
    ("over-long tag value", lambda: mltrail.set_tag("t", LONG_TAG), mltrail.InvalidValueError, "8000"),
    ("tag key with ..", lambda: mltrail.set_tag("..", "x"), mltrail.InvalidKeyError, ".."),
    ("artifact path absolute", lambda: mltrail.log_text("x", "/tmp/evil.txt"), mltrail.PathTraversalError, "absolute"),
    ("artifact path escaping", lambda: mltrail.log_text("x", "../../evil.txt"), mltrail.PathTraversalError, ".."),
    ("artifact dir escaping", lambda: mltrail.log_dict({}, "a/../../b.json"), mltrail.PathTraversalError, ".."),
    ("artifact windows drive", lambda: mltrail.log_text("x", "C:\\evil.txt"), mltrail.PathTraversalError, "absolute"),
    ("artifact NUL", lambda: mltrail.log_text("x", "a\x00b"), mltrail.PathTraversalError, "NUL"),
    ("artifact empty name", lambda: mltrail.log_text("x", ""), mltrail.InvalidValueError, "empty"),
    ("log_text not a str", lambda: mltrail.log_text(b"bytes", "a.txt"), mltrail.InvalidValueError, "str"),
    ("log_dict not serialisable", lambda: mltrail.log_dict({"f": object()}, "a.json"), mltrail.InvalidValueError, "JSON"),
    ("log_image wrong shape", lambda: mltrail.log_image(__import__("numpy").zeros((2, 2, 7)), "a.png"), mltrail.InvalidValueError, "shape"),
    ("log_image float out of range", lambda: mltrail.log_image(__import__("numpy").full((2, 2), 2.0), "a.png"), mltrail.InvalidValueError, "[0, 1]"),
    ("log_figure not a figure", lambda: mltrail.log_figure("fig", "a.png"), mltrail.InvalidValueError, "figure"),
    ("log_artifact missing file", lambda: mltrail.log_artifact("/nonexistent/file.bin"), mltrail.InvalidValueError, "not a file"),
    ("log_artifacts missing dir", lambda: mltrail.log_artifacts("/nonexistent/dir"), mltrail.InvalidValueError, "not a directory"),
    ("run name empty", lambda: mltrail.start_run(run_name="  ", nested=True), mltrail.InvalidValueError, "run_name"),
    ("experiment name empty", lambda: mltrail.create_experiment(""), mltrail.InvalidValueError, "experiment name"),
    ("experiment name not str", lambda: mltrail.create_experiment(5), mltrail.InvalidValueError, "experiment name"),
    ("set_experiment both", lambda: mltrail.set_experiment("a", "1"), mltrail.InvalidValueError, "exactly one"),
    ("resume_key empty", lambda: mltrail.start_run(resume_key="", nested=True), mltrail.InvalidValueError, "resume_key"),
    ("end status bogus", lambda: Client().set_terminated(mltrail.active_run().info.run_id, "DONE"), mltrail.InvalidValueError, "status"),
    ("search output format", lambda: mltrail.search_runs(output_format="json"), mltrail.InvalidValueError, "output_format"),
    ("search max_results zero", lambda: Client().search_runs(["0"], max_results=0), mltrail.InvalidValueError, "max_results"),
    ("missing run id", lambda: Client().log_metric("0" * 32, "m", 1.0), mltrail.RunNotFoundError, "0" * 32),
    ("missing experiment id", lambda: mltrail.start_run(experiment_id="999", nested=True), mltrail.ExperimentNotFoundError, "999"),
]


@pytest.mark.parametrize(("call", "error", "text"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_rejected_and_nothing_is_written(
    tracking_uri: str, call: Callable[[], Any], error: type[Exception], text: str
) -> None:
    with mltrail.start_run() as run:
        with pytest.raises(error) as caught:
            call()
        assert isinstance(caught.value, mltrail.MltrailError)
        assert text in str(caught.value)
    got = mltrail.get_run(run.info.run_id)
    assert got.data.metrics == {}
    assert got.data.params == {}
    user_tags = {k for k in got.data.tags if not k.startswith("mltrail.")}
    assert user_tags == set()
    artifacts = {f.path for f in Client().list_artifacts(run.info.run_id)} - {"environment"}
    assert artifacts == set()
    # No run was left behind by a rejected start_run.
    assert [r.info.run_id for r in mltrail.search_runs(output_format="list")] == [run.info.run_id]


def test_symlink_out_of_artifact_root_is_refused(sqlite_uri: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    outside.mkdir()
    with mltrail.start_run() as run:
        root = Client().get_artifact_uri(run.info.run_id)
        os.makedirs(root, exist_ok=True)
        os.symlink(outside, os.path.join(root, "link"))
        with pytest.raises(mltrail.PathTraversalError, match="outside"):
            mltrail.log_text("x", "link/evil.txt")
    assert list(outside.iterdir()) == []


def test_missing_optional_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from mltrail.core.errors import MissingDependencyError, require

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'mltrail\[postgres\]'"):
        require("psycopg", "postgres")
