"""Invariant 2: autolog() before or after the framework's import gives the same result.

Each case runs in a fresh interpreter, with a small real framework package (``fakefw``, with
an installed distribution's metadata so its version can be read) written to a temporary
directory on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

FAKEFW = {
    "fakefw/__init__.py": """
        from fakefw.models import Model
        __version__ = "1.2.0"
    """,
    "fakefw/models.py": """
        class Model:
            def fit(self, x):
                self.fitted_ = x
                return self
    """,
    "fakefw-1.2.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: fakefw\nVersion: 1.2.0\n",
    "fake_integration.py": """
        from mltrail.autolog import AutologConfig, Patch, enable

        CALLS = []

        def _post(call, result):
            CALLS.append(call.args[0])

        PATCHES = (Patch("fakefw.models", "Model.fit", post=_post, run="none"),)

        def autolog(**options):
            enable("fakefw", AutologConfig(**options))
    """,
}

PRELUDE = """
import json, sys, warnings
import mltrail
from mltrail.autolog import registry
registry.register(registry.Integration(
    "fakefw", ("fakefw",), "fake_integration", ("fakefw",), MIN_VERSION, "1.9",
))
def is_patched(owner, attr):
    from mltrail.autolog._wrapping import PatchWrapper
    return isinstance(vars(owner)[attr], PatchWrapper)
def report(**extra):
    status = mltrail.autolog_status()["fakefw"]
    out = {"state": status.state, "patched": list(status.patched), "version": status.version}
    out.update(extra)
    print(json.dumps(out))
"""


@pytest.fixture
def fakefw(tmp_path: Path) -> Path:
    for name, text in FAKEFW.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def _run(root: Path, body: str, *, min_version: str = "1.0") -> dict[str, Any]:
    script = PRELUDE.replace("MIN_VERSION", repr(min_version)) + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=str(root), MLTRAIL_AUTOLOG_STRICT="1",
               MLTRAIL_TRACKING_URI=str(root / "store"))
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True, text=True, env=env, cwd=root, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_autolog_before_the_framework_is_imported(fakefw: Path) -> None:
    out = _run(fakefw, """
        mltrail.autolog()
        before = {"imported": "fakefw" in sys.modules, "integration": "fake_integration" in sys.modules,
                  "state": mltrail.autolog_status()["fakefw"].state}
        import fakefw, fake_integration
        fakefw.Model().fit(1)
        report(before=before, calls=fake_integration.CALLS,
               wrapped=is_patched(fakefw.models.Model, "fit"))
    """)
    assert out["before"] == {"imported": False, "integration": False, "state": "waiting"}
    assert out["state"] == "active" and out["version"] == "1.2.0"
    assert out["patched"] == ["fakefw.models:Model.fit"]
    assert out["calls"] == [1] and out["wrapped"]


def test_autolog_after_the_framework_is_imported(fakefw: Path) -> None:
    out = _run(fakefw, """
        from fakefw import Model      # a reference taken before autolog(): a class, still patched
        mltrail.autolog()
        import fake_integration
        Model().fit(2)
        report(calls=fake_integration.CALLS)
    """)
    assert out["state"] == "active" and out["patched"] == ["fakefw.models:Model.fit"]
    assert out["calls"] == [2]


def test_the_package_is_callable_even_after_a_submodule_import(fakefw: Path) -> None:
    out = _run(fakefw, """
        import mltrail.autolog.registry   # binds mltrail.autolog to the package
        mltrail.autolog(exclude=["argparse"])
        import fakefw
        report(callable=callable(mltrail.autolog))
    """)
    assert out["state"] == "active" and out["callable"]


def test_disable_before_the_import_leaves_the_framework_alone(fakefw: Path) -> None:
    out = _run(fakefw, """
        mltrail.autolog()
        mltrail.autolog(disable=True)
        import fakefw
        report(integration="fake_integration" in sys.modules,
               wrapped=is_patched(fakefw.models.Model, "fit"))
    """)
    assert out == {"state": "off", "patched": [], "version": None, "integration": False, "wrapped": False}


def test_an_untested_version_warns_once(fakefw: Path) -> None:
    out = _run(fakefw, """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mltrail.autolog()
            import fakefw
            mltrail.autolog()
        report(warnings=[str(w.message) for w in caught], files=[w.filename for w in caught])
    """, min_version="1.5")
    assert out["state"] == "active"
    [message] = out["warnings"]
    assert "fakefw 1.2.0 is outside the tested range (>=1.5, <=1.9.*)" in message
    assert out["files"] == ["<string>"]  # the user's `import fakefw` line


def test_an_untested_version_is_left_alone_when_asked(fakefw: Path) -> None:
    out = _run(fakefw, """
        import fakefw
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mltrail.autolog(disable_for_unsupported_versions=True)
        report(warnings=[str(w.message) for w in caught],
               wrapped=is_patched(fakefw.models.Model, "fit"))
    """, min_version="1.5")
    assert out["state"] == "unsupported" and not out["wrapped"]
    assert "not patched" in out["warnings"][0]


def test_a_missing_integration_module_is_skipped_quietly(fakefw: Path) -> None:
    out = _run(fakefw, """
        registry.register(registry.Integration("ghost", ("fakefw",), "mltrail.integrations.ghost"))
        mltrail.autolog()
        import fakefw
        ghost = mltrail.autolog_status()["ghost"]
        builtin = {name: s.state for name, s in mltrail.autolog_status().items()
                   if name not in ("fakefw", "ghost", "argparse")}
        report(ghost=ghost.state, builtin=builtin)
    """)
    assert out["ghost"] == "unavailable"
    assert out["state"] == "active"
    # Framework integrations not written yet (or frameworks not installed) are no error either.
    assert set(out["builtin"].values()) <= {"unavailable", "waiting"}


def test_importing_mltrail_and_enabling_autolog_imports_no_framework(fakefw: Path) -> None:
    out = _run(fakefw, """
        heavy = ("wrapt", "sklearn", "torch", "keras", "xgboost", "lightgbm", "lightning", "fakefw")
        import mltrail.autolog
        light = [m for m in heavy if m in sys.modules]
        mltrail.autolog()
        report(light=light, after=[m for m in heavy if m in sys.modules and m != "wrapt"])
    """)
    assert out["light"] == [] and out["after"] == []
