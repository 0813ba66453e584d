"""The ``mltrail`` command, on runs recorded through the public API.

Most tests call :func:`mltrail.cli.main` in-process (fast); a few run ``python -m mltrail`` as
a real subprocess to check exit codes, stderr and the entry point.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import mltrail
from mltrail.cli import main, parse_columns, render_table, sparkline

REQ_A = "numpy==1.26.0\nscipy==1.11.0\nPandas==2.0.0\nonly-in-a==1.0\n"
REQ_B = "numpy==2.0.0\nscipy==1.11.0\npandas==2.0.0\nonly_in_b==2.0\n"


@dataclass(frozen=True)
class Recorded:
    uri: str
    baseline: str  # experiment "digits": lr 0.1, loss with a NaN, a dataset, artifacts
    tuned: str  # experiment "digits": lr 0.2, different tags/env/git/packages
    other: str  # experiment "Default", nothing much
    digest: str


@pytest.fixture
def recorded(sqlite_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Recorded:
    """Three runs in two experiments, with everything the CLI shows."""
    # Environment tags are set by hand below; automatic capture would race with them.
    for part in ("GIT", "PACKAGES", "ENTRY_POINT", "SYSTEM"):
        monkeypatch.setenv(f"MLTRAIL_CAPTURE_{part}", "false")
    return _record(sqlite_uri, tmp_path)


def _record(uri: str, tmp_path: Path) -> Recorded:
    curve = tmp_path / "curve.txt"
    curve.write_text("0.1 0.2 0.3\n")
    features = np.arange(12, dtype=np.float64).reshape(4, 3)
    dataset = mltrail.data.from_numpy(features, name="train-set")

    mltrail.set_experiment("digits")
    with mltrail.start_run(run_name="baseline") as run:
        mltrail.log_params({"lr": 0.1, "model": "mlp", "only_a": "x"})
        for step, value in enumerate([1.0, 0.5, math.nan, 0.25, 0.2]):
            mltrail.log_metric("loss", value, step=step)
        mltrail.log_metric("acc", 0.91)
        mltrail.log_metric("grad", 1.0, step=0)
        mltrail.log_metric("grad", math.inf, step=1)
        mltrail.set_tags(
            {
                "team": "ml",
                "stage": "dev",
                "mltrail.source.git.commit": "a" * 40,
                "mltrail.source.git.branch": "main",
                "mltrail.source.git.dirty": "false",
                "mltrail.python_version": "3.11.7",
                "mltrail.host": "box-a",
            }
        )
        mltrail.log_artifact(str(curve), "plots")
        mltrail.log_text("hello", "notes.txt")
        mltrail.log_text(REQ_A, "environment/requirements.txt")
        mltrail.log_input(dataset, context="training")
        baseline = run.info.run_id
    with mltrail.start_run(run_name="tuned") as run:
        mltrail.log_params({"lr": 0.2, "model": "mlp", "only_b": "y"})
        for step, value in enumerate([0.9, 0.3, 0.1]):
            mltrail.log_metric("loss", value, step=step)
        mltrail.log_metric("acc", 0.95)
        mltrail.set_tags(
            {
                "team": "ml",
                "extra": "1",
                "mltrail.source.git.commit": "b" * 40,
                "mltrail.source.git.branch": "main",
                "mltrail.source.git.dirty": "true",
                "mltrail.python_version": "3.12.1",
                "mltrail.host": "box-a",
            }
        )
        mltrail.log_text(REQ_B, "environment/requirements.txt")
        tuned = run.info.run_id
    mltrail.set_experiment(experiment_id="0")
    with mltrail.start_run(run_name="stray") as run:
        mltrail.log_param("lr", 0.3)
        other = run.info.run_id
    mltrail.flush()
    return Recorded(uri, baseline, tuned, other, dataset.digest)


def cli(capsys: pytest.CaptureFixture[str], uri: str, *args: str) -> tuple[int, str, str]:
    """Run the command in-process; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["--tracking-uri", uri, *args])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], uri: str, *args: str) -> object:
    code, out, err = cli(capsys, uri, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.splitlines()]


# ---------------------------------------------------------------------------- experiments ls
def test_experiments_ls_table_and_json(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, recorded.uri, "experiments", "ls")
    assert code == 0
    rows = _rows(out)
    assert rows[0][:3] == ["id", "name", "created"]
    assert [r[:2] for r in rows[2:]] == [["0", "Default"], ["1", "digits"]]

    data = cli_json(capsys, recorded.uri, "experiments", "ls")
    assert [e["name"] for e in data] == ["Default", "digits"]
    assert set(data[0]) == {
        "experiment_id",
        "name",
        "artifact_location",
        "lifecycle_stage",
        "creation_time",
        "last_update_time",
        "tags",
    }
    assert data[1]["experiment_id"] == "1" and data[1]["lifecycle_stage"] == "active"

    mltrail.Client().delete_experiment("1")
    assert [e["name"] for e in cli_json(capsys, recorded.uri, "experiments", "ls")] == ["Default"]
    all_exps = cli_json(capsys, recorded.uri, "experiments", "ls", "--all")
    assert {e["name"]: e["lifecycle_stage"] for e in all_exps} == {"Default": "active", "digits": "deleted"}


# ---------------------------------------------------------------------------- runs ls
def test_runs_ls_lists_every_experiment_by_default(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, recorded.uri, "runs", "ls")
    assert code == 0
    rows = _rows(out)
    assert rows[0] == ["run_id", "run_name", "experiment", "status", "start_time", "duration"]
    by_id = {r[0]: r for r in rows[2:]}
    assert set(by_id) == {recorded.baseline, recorded.tuned, recorded.other}
    assert by_id[recorded.baseline][1:4] == ["baseline", "digits", "FINISHED"]
    assert by_id[recorded.other][1:4] == ["stray", "Default", "FINISHED"]


def test_runs_ls_experiment_and_json_records(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    data = cli_json(capsys, recorded.uri, "runs", "ls", "--experiment", "digits")
    assert {r["run_id"] for r in data} == {recorded.baseline, recorded.tuned}
    base = next(r for r in data if r["run_id"] == recorded.baseline)
    assert list(base) == [
        "run_id",
        "run_name",
        "experiment_id",
        "experiment_name",
        "status",
        "lifecycle_stage",
        "user_id",
        "start_time",
        "end_time",
        "artifact_uri",
        "parent_run_id",
        "params",
        "metrics",
        "tags",
    ]
    assert base["experiment_name"] == "digits" and base["run_name"] == "baseline"
    assert base["params"] == {"lr": "0.1", "model": "mlp", "only_a": "x"}
    assert base["metrics"] == {"acc": 0.91, "grad": "Infinity", "loss": 0.2}
    assert base["tags"]["team"] == "ml"
    assert isinstance(base["start_time"], int) and base["end_time"] >= base["start_time"]

    # An experiment may also be named by id; several may be given.
    both = cli_json(capsys, recorded.uri, "runs", "ls", "-e", "0", "-e", "digits")
    assert {r["run_id"] for r in both} == {recorded.baseline, recorded.tuned, recorded.other}

    code, _, err = cli(capsys, recorded.uri, "runs", "ls", "--experiment", "nope")
    assert code == 1 and err.startswith("error: ") and "'nope'" in err


def test_runs_ls_filter_order_columns_max_results(
    recorded: Recorded, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        capsys,
        recorded.uri,
        "runs",
        "ls",
        "--filter",
        "params.lr = '0.2'",
        "--columns",
        "run_name,params.lr,metrics.acc,status",
    )
    assert code == 0
    assert _rows(out) == [
        ["run_name", "params.lr", "metrics.acc", "status"],
        ["--------", "---------", "-----------", "--------"],
        ["tuned", "0.2", "0.95", "FINISHED"],
    ]

    ordered = cli_json(
        capsys,
        recorded.uri,
        "runs",
        "ls",
        "-e",
        "digits",
        "--order-by",
        "metrics.acc DESC",
        "--columns",
        "run_name,metrics.acc",
    )
    assert ordered == [
        {"run_name": "tuned", "metrics.acc": 0.95},
        {"run_name": "baseline", "metrics.acc": 0.91},
    ]
    ascending = cli_json(
        capsys,
        recorded.uri,
        "runs",
        "ls",
        "-e",
        "digits",
        "--order-by",
        "metrics.acc ASC",
        "-c",
        "run_name",
    )
    assert ascending == [{"run_name": "baseline"}, {"run_name": "tuned"}]

    combined = cli_json(
        capsys,
        recorded.uri,
        "runs",
        "ls",
        "--filter",
        "metrics.acc > 0.9 AND tags.team = 'ml'",
        "--columns",
        "run_name",
        "--order-by",
        "attributes.run_name",
    )
    assert combined == [{"run_name": "baseline"}, {"run_name": "tuned"}]

    code, out, err = cli(
        capsys,
        recorded.uri,
        "runs",
        "ls",
        "-e",
        "digits",
        "--order-by",
        "metrics.acc DESC",
        "--max-results",
        "1",
        "--json",
        "-c",
        "run_name",
    )
    assert code == 0 and json.loads(out) == [{"run_name": "tuned"}]
    assert "first 1 matching runs" in err

    # Wildcards, attribute aliases and missing values.
    wide = cli_json(
        capsys,
        recorded.uri,
        "runs",
        "ls",
        "-e",
        "digits",
        "--order-by",
        "attributes.run_name",
        "--columns",
        "name,params.*,tags.extra",
    )
    assert wide == [
        {
            "run_name": "baseline",
            "params.lr": "0.1",
            "params.model": "mlp",
            "params.only_a": "x",
            "params.only_b": None,
            "tags.extra": None,
        },
        {
            "run_name": "tuned",
            "params.lr": "0.2",
            "params.model": "mlp",
            "params.only_a": None,
            "params.only_b": "y",
            "tags.extra": "1",
        },
    ]


def test_runs_ls_errors(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, recorded.uri, "runs", "ls", "--filter", "metrics.acc >")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "position" in err and "Traceback" not in err
    code, _, err = cli(capsys, recorded.uri, "runs", "ls", "--columns", "run_name,bogus")
    assert code == 1 and "unknown column 'bogus'" in err
    code, _, err = cli(capsys, recorded.uri, "runs", "ls", "--max-results", "0")
    assert code == 2 and "positive integer" in err


def test_parse_columns_backticks_and_aliases(recorded: Recorded) -> None:
    runs = [mltrail.get_run(recorded.baseline)]
    cols = parse_columns(["metrics.`a,b`,attributes.status", "tag.team,user"], runs)
    assert [c.name for c in cols] == ["metrics.a,b", "status", "tags.team", "user_id"]
    assert [c.name for c in parse_columns(["metrics.*"], runs)] == [
        "metrics.acc",
        "metrics.grad",
        "metrics.loss",
    ]


# ---------------------------------------------------------------------------- runs show
def test_runs_show_table(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, recorded.uri, "runs", "show", recorded.baseline)
    assert code == 0
    assert out.startswith(f"Run {recorded.baseline}\n")
    sections = {block.split("\n", 1)[0]: block for block in out.split("\n\n")}
    assert ["name", "baseline"] in _rows(sections[f"Run {recorded.baseline}"])
    assert ["experiment", "digits", "(id", "1)"] in _rows(sections[f"Run {recorded.baseline}"])
    params = _rows(sections["Params (3)"])
    assert ["lr", "0.1"] in params and ["model", "mlp"] in params
    metrics = _rows(sections["Metrics (3)"])
    assert metrics[1] == ["key", "last", "step", "min", "max", "count"]
    assert ["loss", "0.2", "4", "0.2", "1.0", "5"] in metrics
    assert ["acc", "0.91", "0", "0.91", "0.91", "1"] in metrics
    tags = _rows(sections["Tags (9)"])
    assert tags[3] == ["stage", "dev"]  # user tags first, then mltrail.* ones
    assert ["mltrail.host", "box-a"] in tags
    datasets = _rows(sections["Datasets (1)"])
    assert ["train-set", recorded.digest, "training", "numpy", "in-memory", "4"] in datasets
    artifacts = _rows(sections["Artifacts (3)"])
    assert [r[0] for r in artifacts[3:]] == ["environment/requirements.txt", "notes.txt", "plots/curve.txt"]
    assert ["plots/curve.txt", "12", "B"] in artifacts

    code, out, _ = cli(capsys, recorded.uri, "runs", "show", recorded.other)
    assert code == 0 and "Datasets: none" in out and "Artifacts: none" in out


def test_runs_show_json(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    data = cli_json(capsys, recorded.uri, "runs", "show", recorded.baseline)
    assert data["run_id"] == recorded.baseline and data["experiment_name"] == "digits"
    assert data["params"] == {"lr": "0.1", "model": "mlp", "only_a": "x"}
    assert data["metrics"]["loss"] == {
        "last": 0.2,
        "step": 4,
        "timestamp": data["metrics"]["loss"]["timestamp"],
        "min": 0.2,
        "max": 1.0,
        "count": 5,
    }
    assert data["metrics"]["grad"]["last"] == "Infinity" and data["metrics"]["grad"]["min"] == 1.0
    assert data["tags"]["mltrail.source.git.commit"] == "a" * 40
    assert data["artifacts"] == [
        {"path": "environment/requirements.txt", "size": len(REQ_A)},
        {"path": "notes.txt", "size": 5},
        {"path": "plots/curve.txt", "size": 12},
    ]
    [ds] = data["datasets"]
    assert ds["name"] == "train-set" and ds["digest"] == recorded.digest
    assert ds["context"] == "training" and ds["source_type"] == "numpy"
    assert ds["profile"]["num_rows"] == 4 and ds["profile"]["features_shape"] == [4, 3]


def test_runs_show_unknown_run(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, recorded.uri, "runs", "show", "0123456789abcdef")
    assert code == 1 and out == ""
    assert err == "error: no run with id '0123456789abcdef'\n"


# ---------------------------------------------------------------------------- runs compare
def test_runs_compare_marks_differences(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, recorded.uri, "runs", "compare", recorded.baseline, recorded.tuned)
    assert code == 0
    rows = _rows(out)
    header = next(r for r in rows if r and r[0] == "key")
    assert header == ["key", "baseline", f"({recorded.baseline[:8]})", "tuned", f"({recorded.tuned[:8]})"]
    assert ["*", "lr", "0.1", "0.2"] in rows
    assert ["model", "mlp", "mlp"] in rows  # equal: not marked
    assert ["*", "only_a", "x", "-"] in rows
    assert ["*", "acc", "0.91", "0.95"] in rows
    assert ["*", "loss", "0.2", "0.1"] in rows
    assert ["*", "grad", "inf", "-"] in rows
    assert "Params (3 of 4 differ)" in out and "Metrics (3 of 3 differ)" in out

    code, out, _ = cli(
        capsys, recorded.uri, "runs", "compare", recorded.baseline, recorded.tuned, "--diff-only"
    )
    assert code == 0 and "model" not in out and "only_b" in out

    data = cli_json(
        capsys, recorded.uri, "runs", "compare", recorded.baseline, recorded.tuned, recorded.other
    )
    assert [r["run_name"] for r in data["runs"]] == ["baseline", "tuned", "stray"]
    params = {p["key"]: p for p in data["params"]}
    assert params["lr"] == {"key": "lr", "values": ["0.1", "0.2", "0.3"], "differs": True}
    assert params["model"] == {"key": "model", "values": ["mlp", "mlp", None], "differs": True}
    metrics = {m["key"]: m for m in data["metrics"]}
    assert metrics["acc"]["values"] == [0.91, 0.95, None]

    same = cli_json(capsys, recorded.uri, "runs", "compare", recorded.baseline, recorded.baseline)
    assert not any(row["differs"] for row in same["params"] + same["metrics"])  # NaN-free, inf == inf


def test_runs_compare_needs_two_runs(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, recorded.uri, "runs", "compare", recorded.baseline)
    assert code == 2 and "at least two run ids" in err and "usage:" in err
    code, _, err = cli(capsys, recorded.uri, "runs", "compare", recorded.baseline, "nope")
    assert code == 1 and err == "error: no run with id 'nope'\n"


# ---------------------------------------------------------------------------- runs diff
def test_runs_diff_json(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    data = cli_json(capsys, recorded.uri, "runs", "diff", recorded.baseline, recorded.tuned)
    assert data["a"] == {"run_id": recorded.baseline, "run_name": "baseline"}
    assert data["b"] == {"run_id": recorded.tuned, "run_name": "tuned"}
    assert data["params"] == [
        {"key": "lr", "a": "0.1", "b": "0.2", "change": "changed"},
        {"key": "only_a", "a": "x", "b": None, "change": "only_a"},
        {"key": "only_b", "a": None, "b": "y", "change": "only_b"},
    ]
    assert data["tags"] == [
        {"key": "extra", "a": None, "b": "1", "change": "only_b"},
        {"key": "stage", "a": "dev", "b": None, "change": "only_a"},
    ]
    assert data["git"] == [
        {"key": "commit", "a": "a" * 40, "b": "b" * 40, "change": "changed"},
        {"key": "dirty", "a": "false", "b": "true", "change": "changed"},
    ]
    assert data["environment"] == [
        {"key": "python_version", "a": "3.11.7", "b": "3.12.1", "change": "changed"},
    ]
    assert data["packages_recorded"] == {"a": True, "b": True}
    assert data["packages"] == [
        {"key": "numpy", "a": "1.26.0", "b": "2.0.0", "change": "changed"},
        {"key": "only-in-a", "a": "1.0", "b": None, "change": "only_a"},
        {"key": "only_in_b", "a": None, "b": "2.0", "change": "only_b"},
    ]  # Pandas / pandas: the same distribution

    full = cli_json(capsys, recorded.uri, "runs", "diff", recorded.baseline, recorded.tuned, "--all")
    assert {"key": "model", "a": "mlp", "b": "mlp", "change": "same"} in full["params"]
    assert {"key": "branch", "a": "main", "b": "main", "change": "same"} in full["git"]
    assert {"key": "scipy", "a": "1.11.0", "b": "1.11.0", "change": "same"} in full["packages"]


def test_runs_diff_table(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, recorded.uri, "runs", "diff", recorded.baseline, recorded.tuned)
    assert code == 0
    rows = _rows(out)
    assert ["A", recorded.baseline, "baseline"] in rows and ["B", recorded.tuned, "tuned"] in rows
    assert ["~", "lr", "0.1", "0.2"] in rows
    assert ["-", "only_a", "x", "-"] in rows
    assert ["+", "only_b", "-", "y"] in rows
    assert ["~", "commit", "a" * 40, "b" * 40] in rows
    assert ["~", "python_version", "3.11.7", "3.12.1"] in rows
    assert ["~", "numpy", "1.26.0", "2.0.0"] in rows
    assert "scipy" not in out and "model" not in out  # equal entries are left out

    code, out, _ = cli(capsys, recorded.uri, "runs", "diff", recorded.baseline, recorded.other)
    assert code == 0
    assert "Packages (environment/requirements.txt): recorded only for A" in out
    code, out, _ = cli(capsys, recorded.uri, "runs", "diff", recorded.other, recorded.other)
    assert "Params: no differences" in out and "recorded for neither run" in out


# ---------------------------------------------------------------------------- metrics
def test_metrics_history_table_and_sparkline(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, recorded.uri, "metrics", recorded.baseline, "loss", "--width", "40")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"loss  run {recorded.baseline} (baseline), 5 points"
    table = _rows("\n".join(lines[1:8]))
    assert table[0] == ["step", "value", "timestamp"]
    assert [r[:2] for r in table[2:]] == [
        ["0", "1.0"],
        ["1", "0.5"],
        ["2", "nan"],
        ["3", "0.25"],
        ["4", "0.2"],
    ]
    assert lines[-2] == "min 0.2  max 1.0  last 0.2 (step 4)"
    assert lines[-1] == "█▄ ▁▁"

    code, out, _ = cli(capsys, recorded.uri, "metrics", recorded.baseline, "loss", "--no-table")
    assert out.splitlines()[1:] == ["min 0.2  max 1.0  last 0.2 (step 4)", "█▄ ▁▁"]


def test_metrics_json(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    data = cli_json(capsys, recorded.uri, "metrics", recorded.baseline, "loss")
    assert data["run_id"] == recorded.baseline and data["key"] == "loss"
    assert [(p["step"], p["value"]) for p in data["points"]] == [
        (0, 1.0),
        (1, 0.5),
        (2, "NaN"),
        (3, 0.25),
        (4, 0.2),
    ]
    assert all(isinstance(p["timestamp"], int) for p in data["points"])
    grad = cli_json(capsys, recorded.uri, "metrics", recorded.baseline, "grad")
    assert [p["value"] for p in grad["points"]] == [1.0, "Infinity"]


def test_metrics_unknown_key_or_run(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, recorded.uri, "metrics", recorded.baseline, "nope")
    assert code == 1 and err.startswith("error: ") and "'nope'" in err and "acc, grad, loss" in err
    code, _, err = cli(capsys, recorded.uri, "metrics", "feedface", "loss")
    assert code == 1 and err == "error: no run with id 'feedface'\n"


def test_narrow_stdout_gets_ascii_sparkline_and_escapes(
    recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mltrail.start_run(run_id=recorded.tuned):  # resumed to add a tag
        mltrail.set_tag("note", "naïve ✓")
    raw = io.BytesIO()
    ascii_out = io.TextIOWrapper(raw, encoding="ascii", newline="\n")
    monkeypatch.setattr(sys, "stdout", ascii_out)
    assert main(["--tracking-uri", recorded.uri, "metrics", recorded.baseline, "loss", "--no-table"]) == 0
    assert (
        main(["--tracking-uri", recorded.uri, "runs", "ls", "-c", "run_name,tags.note", "-e", "digits"]) == 0
    )
    ascii_out.flush()
    text = raw.getvalue().decode("ascii")
    assert text.splitlines()[2] == "#: __"  # the ASCII ramp "_.-:=+*#"
    assert "naive" not in text and "na\\xefve \\u2713" in text


def test_sparkline() -> None:
    assert sparkline([], 10) == ""
    assert sparkline([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 80) == "▁▂▃▄▅▆▇█"
    assert sparkline([3.0, 3.0, 3.0], 80) == "▄▄▄"
    assert sparkline([1.0, math.nan, 2.0], 80) == "▁ █"
    assert sparkline([math.nan, math.nan], 80) == "  "
    assert sparkline([0.0, math.inf, -math.inf, 1.0], 80) == "▁█▁█"
    # Downsampled to the width: 1000 rising points in 10 buckets, bucket means rise too.
    line = sparkline([float(i) for i in range(1000)], 10)
    assert len(line) == 10 and line[0] == "▁" and line[-1] == "█" and list(line) == sorted(line)
    # A bucket of only NaN stays a gap; a bucket with some finite values does not.
    values = [1.0] * 10 + [math.nan] * 10 + [2.0, math.nan] * 5
    assert sparkline(values, 3) == "▁ █"
    assert sparkline([0.0, 1.0], 80, chars="ab") == "ab"


def test_render_table() -> None:
    assert render_table(["a", "long"], [["xyz", "1"], ["", "22"]]) == "a    long\n---  ----\nxyz  1\n     22"
    assert render_table(None, [["k", "v"]], indent="  ") == "  k  v"
    assert render_table(["c"], [["abcdefghij"]], max_width=6) == "c\n------\nabc..."


# ---------------------------------------------------------------------------- runs export
def test_export_csv_stdout_and_file(
    recorded: Recorded, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = cli(
        capsys, recorded.uri, "runs", "export", "-e", "digits", "--order-by", "attributes.run_name"
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run_name"] for r in rows] == ["baseline", "tuned"]
    header = out.splitlines()[0].split(",")
    assert header[:9] == [
        "run_id",
        "run_name",
        "experiment_id",
        "experiment_name",
        "status",
        "user_id",
        "start_time",
        "end_time",
        "artifact_uri",
    ]
    assert header.index("metrics.acc") < header.index("params.lr") < header.index("tags.team")
    base = rows[0]
    assert base["run_id"] == recorded.baseline and base["experiment_name"] == "digits"
    assert base["metrics.acc"] == "0.91" and base["metrics.grad"] == "inf"
    assert base["params.lr"] == "0.1" and base["params.only_b"] == "" and rows[1]["params.only_b"] == "y"
    assert base["start_time"].endswith("+00:00") and "T" in base["start_time"]

    target = tmp_path / "runs.csv"
    code, out, err = cli(
        capsys,
        recorded.uri,
        "runs",
        "export",
        "--format",
        "csv",
        "--output",
        str(target),
        "--filter",
        "params.lr = '0.3'",
        "--columns",
        "run_id,params.lr",
    )
    assert code == 0 and out == "" and "wrote 1 runs" in err
    assert target.read_text() == f"run_id,params.lr\n{recorded.other},0.3\n"


def test_export_parquet(recorded: Recorded, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="parquet export needs pyarrow (optional)")
    target = tmp_path / "runs.parquet"
    code, _, err = cli(capsys, recorded.uri, "runs", "export", "--output", str(target), "-e", "digits")
    assert code == 0 and "(parquet)" in err  # the format follows the extension
    table = pq.read_table(target)
    data = table.to_pylist()
    by_name = {r["run_name"]: r for r in data}
    assert set(by_name) == {"baseline", "tuned"}
    assert by_name["tuned"]["metrics.acc"] == 0.95 and by_name["baseline"]["params.only_b"] is None
    assert math.isinf(by_name["baseline"]["metrics.grad"])
    assert str(table.schema.field("start_time").type) == "timestamp[ms, tz=UTC]"
    assert str(table.schema.field("metrics.loss").type) == "double"
    assert by_name["tuned"]["start_time"].timestamp() * 1000 == pytest.approx(
        mltrail.get_run(recorded.tuned).info.start_time
    )


def test_export_to_an_unwritable_place(
    recorded: Recorded, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "missing-dir" / "runs.csv"
    code, _, err = cli(capsys, recorded.uri, "runs", "export", "--output", str(target))
    assert code == 1 and err.startswith(f"error: could not write {target}")


def test_export_parquet_needs_pyarrow_and_a_file(
    recorded: Recorded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, _, err = cli(capsys, recorded.uri, "runs", "export", "--format", "parquet")
    assert code == 2 and "--output" in err
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    code, _, err = cli(capsys, recorded.uri, "runs", "export", "--output", str(tmp_path / "x.parquet"))
    assert code == 1 and "pip install 'mltrail[pandas]'" in err and "pyarrow" in err
    assert not (tmp_path / "x.parquet").exists()


# ---------------------------------------------------------------------------- tracking URI
def test_tracking_uri_before_or_after_the_command(
    recorded: Recorded, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLTRAIL_TRACKING_URI", str(tmp_path / "elsewhere"))
    assert main(["runs", "ls", "--tracking-uri", recorded.uri, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["--tracking-uri", recorded.uri, "runs", "ls", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    # The last one given wins; a missing local store is an error and is not created.
    code = main(["--tracking-uri", recorded.uri, "runs", "ls", "--tracking-uri", str(tmp_path / "void")])
    err = capsys.readouterr().err
    assert code == 1 and "no mltrail store at" in err and "void" in err
    assert not (tmp_path / "void").exists()
    # Without the option: MLTRAIL_TRACKING_URI.
    monkeypatch.setenv("MLTRAIL_TRACKING_URI", recorded.uri)
    mltrail.set_tracking_uri(None)
    assert main(["experiments", "ls", "--json"]) == 0
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == ["Default", "digits"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["runs"]) == 2
    assert main(["runs", "bogus"]) == 2
    assert main(["metrics", "only-a-run-id"]) == 2
    assert "usage:" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "runs" in capsys.readouterr().out


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_on_postgresql(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same commands against a PostgreSQL store (every other test uses SQLite)."""
    for part in ("GIT", "PACKAGES", "ENTRY_POINT", "SYSTEM"):
        monkeypatch.setenv(f"MLTRAIL_CAPTURE_{part}", "false")
    rec = _record(tracking_uri, tmp_path)
    listed = cli_json(
        capsys,
        tracking_uri,
        "runs",
        "ls",
        "--filter",
        "metrics.acc > 0.9",
        "--order-by",
        "metrics.acc DESC",
        "-c",
        "run_id,metrics.acc",
    )
    assert listed == [
        {"run_id": rec.tuned, "metrics.acc": 0.95},
        {"run_id": rec.baseline, "metrics.acc": 0.91},
    ]
    shown = cli_json(capsys, tracking_uri, "runs", "show", rec.baseline)
    assert shown["metrics"]["loss"]["count"] == 5 and shown["datasets"][0]["digest"] == rec.digest
    assert [a["path"] for a in shown["artifacts"]] == [
        "environment/requirements.txt",
        "notes.txt",
        "plots/curve.txt",
    ]
    diff = cli_json(capsys, tracking_uri, "runs", "diff", rec.baseline, rec.tuned)
    assert diff["packages"][0] == {"key": "numpy", "a": "1.26.0", "b": "2.0.0", "change": "changed"}
    history = cli_json(capsys, tracking_uri, "metrics", rec.baseline, "loss")
    assert [p["value"] for p in history["points"]] == [1.0, 0.5, "NaN", 0.25, 0.2]


# ---------------------------------------------------------------------------- subprocess
def _run_cli(uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLTRAIL_TRACKING_URI": uri, "COLUMNS": "60"}
    return subprocess.run(
        [sys.executable, "-m", "mltrail", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_subprocess_entry_point(recorded: Recorded, tmp_path: Path) -> None:
    done = _run_cli(recorded.uri, "runs", "ls", "--experiment", "digits")
    assert done.returncode == 0, done.stderr
    assert "baseline" in done.stdout and "tuned" in done.stdout and "stray" not in done.stdout

    done = _run_cli(recorded.uri, "metrics", recorded.baseline, "loss", "--no-table")
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "█▄ ▁▁"

    done = _run_cli(recorded.uri, "runs", "show", "no-such-run")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "error: no run with id 'no-such-run'\n"  # no traceback

    done = _run_cli(recorded.uri, "runs", "ls", "--no-such-option")
    assert done.returncode == 2 and "unrecognized arguments: --no-such-option" in done.stderr

    done = _run_cli(str(tmp_path / "nothing-here"), "experiments", "ls")
    assert done.returncode == 1 and done.stderr.startswith("error: no mltrail store at")
    assert not (tmp_path / "nothing-here").exists()
