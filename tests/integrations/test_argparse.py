"""The argparse integration, end to end: parsed arguments become params of the active or next run."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mltrail
from harness import check_fault_tolerance, check_user_exception
from mltrail.autolog import _safety, autolog_status, engine, owned_run, runs
from mltrail.integrations import argparse as argparse_autolog

ORIGINALS = {
    name: vars(argparse.ArgumentParser)[name]
    for name in ("parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args")
}


@pytest.fixture(autouse=True)
def _autolog_off() -> Iterator[None]:
    yield
    engine.disable_all()
    runs._reset_for_tests()
    _safety.reset_warnings()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--layers", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--name", default="baseline")
    parser.add_argument("--verbose", action="store_true")
    return parser


def _params(run_id: str) -> dict[str, str]:
    mltrail.flush()
    return dict(mltrail.get_run(run_id).data.params)


def test_namespace_params_helper() -> None:
    ns = argparse.Namespace(
        lr=0.5, tags=["a", "b"], none=None, func=print, _private=1, stream=io.StringIO(),
        out=open(os.devnull, "w"), **{"bad key!": 1, "long": "x" * 7000},
    )
    try:
        params = argparse_autolog.namespace_params(ns, prefix="args.", exclude={"none"})
    finally:
        ns.out.close()
    assert params == {"args.lr": "0.5", "args.tags": "['a', 'b']", "args.out": os.devnull,
                      "args.stream": str(ns.stream)}
    assert argparse_autolog.namespace_params(object()) == {}


def test_arguments_are_logged_into_the_active_run(sqlite_uri: str) -> None:
    mltrail.autolog()
    with mltrail.start_run() as run:
        args = _parser().parse_args(["--lr", "0.01", "--layers", "128", "32", "--verbose"])
    assert args.lr == 0.01 and args.layers == [128, 32]
    assert _params(run.info.run_id) == {
        "lr": "0.01", "layers": "[128, 32]", "name": "baseline", "verbose": "True",
    }


def test_with_no_run_they_are_held_for_the_next_run(sqlite_uri: str) -> None:
    mltrail.autolog()
    _parser().parse_args(["--name", "held"])
    assert mltrail.active_run() is None
    with mltrail.start_run() as first:
        pass
    with mltrail.start_run() as second:
        pass
    assert _params(first.info.run_id)["name"] == "held"
    assert _params(second.info.run_id) == {}


def test_exclusive_holds_them_for_a_run_autolog_starts(sqlite_uri: str) -> None:
    argparse_autolog.autolog(exclusive=True)
    with mltrail.start_run() as user_run:
        _parser().parse_args(["--lr", "0.2"])
    with mltrail.start_run() as other_user_run:
        pass
    with owned_run("argparse") as handle:  # what a patched fit does
        owned_id = handle.run_id
    assert _params(user_run.info.run_id) == {}
    assert _params(other_user_run.info.run_id) == {}
    assert _params(owned_id)["lr"] == "0.2"


def test_nested_parsing_and_subparsers_are_logged_once(sqlite_uri: str) -> None:
    mltrail.autolog()
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    sub = parser.add_subparsers(dest="command")
    fit = sub.add_parser("fit")
    fit.add_argument("--epochs", type=int, default=3)
    fit.set_defaults(func=print)
    with mltrail.start_run() as run:
        args, extras = parser.parse_known_args(["--seed", "7", "fit", "--epochs", "5", "--unknown"])
    assert extras == ["--unknown"] and args.epochs == 5
    assert _params(run.info.run_id) == {"seed": "7", "command": "fit", "epochs": "5"}


def test_intermixed_parsing(sqlite_uri: str) -> None:
    mltrail.autolog()
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="*")
    parser.add_argument("--fast", action="store_true")
    with mltrail.start_run() as run:
        parser.parse_intermixed_args(["a", "--fast", "b"])
    assert _params(run.info.run_id) == {"files": "['a', 'b']", "fast": "True"}


def test_prefix_and_exclude(sqlite_uri: str) -> None:
    argparse_autolog.autolog(prefix="args.", exclude=["name"])
    with mltrail.start_run() as run:
        _parser().parse_args([])
    assert _params(run.info.run_id) == {"args.lr": "0.1", "args.layers": "[64, 64]", "args.verbose": "False"}
    mltrail.autolog(exclusive=False)  # common options only: argparse's own options stay
    assert engine.get_config("argparse").prefix == "args."  # type: ignore[attr-defined]


def test_disable_restores_argparse_and_drops_held_params(sqlite_uri: str) -> None:
    mltrail.autolog()
    mltrail.autolog()
    for name, original in ORIGINALS.items():
        assert vars(argparse.ArgumentParser)[name].__wrapped__ is original
    assert autolog_status()["argparse"].patched == tuple(
        f"argparse:ArgumentParser.{name}" for name in ORIGINALS
    )
    _parser().parse_args(["--name", "dropped"])
    mltrail.autolog(disable=True)
    for name, original in ORIGINALS.items():
        assert vars(argparse.ArgumentParser)[name] is original
    with mltrail.start_run() as run:
        _parser().parse_args([])
    assert _params(run.info.run_id) == {}


def test_our_failures_never_break_parsing(sqlite_uri: str) -> None:
    mltrail.autolog()
    with mltrail.start_run():
        points = check_fault_tolerance(
            lambda: vars(_parser().parse_args(["--lr", "0.5"])), integration="argparse",
            expect_points={"run_start", "post"},
        )
    assert points == ["post", "run_start"]
    check_fault_tolerance(lambda: vars(_parser().parse_args(["--lr", "0.5"])), integration="argparse")


def test_the_users_exception_and_argparse_exit_propagate_unchanged(
    sqlite_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mltrail.autolog()

    def parse_with(boom: Any) -> None:
        parser = argparse.ArgumentParser()
        parser.add_argument("--x", type=lambda text: boom())
        parser.parse_args(["--x", "1"])

    check_user_exception(parse_with)
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["--lr", "not-a-number"])
    assert info.value.code == 2
    assert "invalid float value" in capsys.readouterr().err
    assert mltrail.active_run() is None


SCRIPT = """
import json, sys
import mltrail
BEFORE
mltrail.autolog()
AFTER
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.parse_args(["--lr", "0.3"])
with mltrail.start_run() as run:
    pass
mltrail.flush()
print(json.dumps({"params": mltrail.get_run(run.info.run_id).data.params,
                  "state": mltrail.autolog_status()["argparse"].state}))
"""


@pytest.mark.parametrize("order", ["autolog-first", "import-first"])
def test_both_import_orders(tmp_path: Path, order: str) -> None:
    before, after = ("", "import argparse") if order == "autolog-first" else ("import argparse", "")
    if order == "autolog-first":
        before = "assert 'argparse' not in sys.modules"
    script = SCRIPT.replace("BEFORE", before).replace("AFTER", after)
    env = dict(os.environ, MLTRAIL_AUTOLOG_STRICT="1", MLTRAIL_TRACKING_URI=str(tmp_path / "store"))
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(script)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"params": {"lr": "0.3"}, "state": "active"}
