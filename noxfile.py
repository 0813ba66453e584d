"""Test, lint, type-check and benchmark sessions.

``nox -t ci`` is what CI runs (README: "run the tests"): the framework-free core suite, then one
session per (framework, version) at the oldest and newest supported versions, each in its own
environment. ``nox -s lint``, ``nox -s types`` and ``nox -s bench`` are separate.

Environments use pip-backed venvs, so that ``torch==2.13.0`` comes from the CPU wheel on disk.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

PYTHON = os.environ.get("MLTRAIL_NOX_PYTHON") or None  # the interpreter nox runs under
TORCH = "torch==2.13.0"  # the CPU wheel on disk; pinned wherever torch is installed
# Framework test directories that only their own integration session runs.
FRAMEWORK_TESTS = ("sklearn", "torch", "lightning", "keras", "xgboost", "lightgbm")


def _pytest(session: nox.Session, *paths: str) -> None:
    args = list(session.posargs) or []
    session.run("python", "-m", "pytest", *paths, "-m", "not gpu", "-p", "no:cacheprovider", *args)


@nox.session(python=PYTHON, tags=["ci"])
def tests(session: nox.Session) -> None:
    """Core, autolog engine, argparse and CLI tests: no ML framework installed."""
    session.install("-e", ".[dev]")
    ignores = [f"--ignore=tests/integrations/test_{fw}.py" for fw in FRAMEWORK_TESTS]
    ignores += [f"--ignore=tests/integrations/{fw}" for fw in FRAMEWORK_TESTS]
    _pytest(session, "tests", *ignores)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def types(session: nox.Session) -> None:
    session.install("mypy>=1.10", "-e", ".[postgres,pandas]")
    session.run("mypy", "src/mltrail/core")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks against MLflow (and W&B offline); prints one table."""
    session.install("-e", ".[postgres,pandas]", "mlflow", "psutil")
    session.install("wandb", success_codes=[0, 1])  # optional peer: the table says if it is missing
    session.run("python", "benchmarks/run_all.py", *session.posargs)
