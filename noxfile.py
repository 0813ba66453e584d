"""Test, lint, type-check and benchmark sessions.

``nox -t ci`` is what CI runs (README: "run the tests"): the framework-free core suite, then one
session per (framework, version) at the oldest and newest supported versions, each in its own
environment. ``nox -s lint``, ``nox -s types`` and ``nox -s bench`` are separate.

Environments use pip-backed venvs, so that ``torch==2.13.0`` comes from the CPU wheel on disk.
"""

from __future__ import annotations

import os
import sys

import nox

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "src"))
from mltrail.autolog.registry import INTEGRATIONS

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


def _range(name: str) -> tuple[str, str]:
    spec = INTEGRATIONS[name]
    assert spec.min_version and spec.max_version, name
    return f"=={spec.min_version}.*", f"=={spec.max_version}.*"


def _matrix() -> list[tuple[str, str, list[str], list[str], dict[str, str]]]:
    """(framework, which, packages, test paths, env) for every integration environment."""
    sk_old, sk_new = _range("sklearn")
    xgb_old, xgb_new = _range("xgboost")
    lgb_old, lgb_new = _range("lightgbm")
    pl_old, pl_new = _range("lightning")
    keras_old, keras_new = _range("keras")
    plots = ["matplotlib", "pillow"]
    return [
        ("sklearn", "oldest", [f"scikit-learn{sk_old}", "numpy<2", "pandas<2.3", *plots],
         ["tests/integrations/test_sklearn.py"], {}),
        ("sklearn", "latest", [f"scikit-learn{sk_new}", *plots], ["tests/integrations/test_sklearn.py"], {}),
        # LightGBM 4.0 breaks under numpy 2; XGBoost 2.1 predates scikit-learn 1.6.
        ("boosting", "oldest", [f"xgboost-cpu{xgb_old}", f"lightgbm{lgb_old}", "scikit-learn==1.5.*",
                                "numpy<2", "pandas<2.3", *plots],
         ["tests/integrations/test_xgboost.py", "tests/integrations/test_lightgbm.py"], {}),
        ("boosting", "latest", [f"xgboost-cpu{xgb_new}", f"lightgbm{lgb_new}", "scikit-learn", *plots],
         ["tests/integrations/test_xgboost.py", "tests/integrations/test_lightgbm.py"], {}),
        ("torch", "latest", [TORCH], ["tests/integrations/torch"], {}),
        # Lightning 2.2 imports pkg_resources (gone from setuptools 81).
        ("lightning", "oldest", [TORCH, f"lightning{pl_old}", "setuptools<81", "tensorboardX"],
         ["tests/integrations/lightning"], {}),
        ("lightning", "latest", [TORCH, f"lightning{pl_new}", f"pytorch-lightning{pl_new}", "tensorboardX"],
         ["tests/integrations/lightning"], {}),
        # Keras 3.0 predates numpy 2 (np.Inf).
        ("keras-torch", "oldest", [TORCH, f"keras{keras_old}", "numpy<2", "scikit-learn"],
         ["tests/integrations/test_keras.py"], {"KERAS_BACKEND": "torch"}),
        ("keras-torch", "latest", [TORCH, f"keras{keras_new}", "scikit-learn"], ["tests/integrations/test_keras.py"],
         {"KERAS_BACKEND": "torch"}),
        ("keras-tf", "latest", ["tensorflow-cpu", f"keras{keras_new}", "scikit-learn"], ["tests/integrations/test_keras.py"],
         {"KERAS_BACKEND": "tensorflow"}),
    ]


@nox.session(python=PYTHON, tags=["ci"])
@nox.parametrize(
    "framework,which,packages,paths,env",
    [
        nox.param(fw, which, pkgs, paths, env, id=f"{fw}-{which}", tags=[which])
        for fw, which, pkgs, paths, env in _matrix()
    ],
)
def integration(
    session: nox.Session, framework: str, which: str, packages: list[str], paths: list[str], env: dict[str, str]
) -> None:
    """One framework at one end of its tested range, in its own environment."""
    session.install("-e", ".[dev]", *packages)
    existing = [p for p in paths if os.path.exists(p)]
    if not existing:
        session.error(f"no tests found for {framework}: {paths}")
    session.env.update(env)
    _pytest(session, *existing)


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
