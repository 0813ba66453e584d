"""``import mltrail`` stays light: no ML framework, SQL toolkit, numpy or pandas until used."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "torch", "tensorflow", "keras", "lightning", "pytorch_lightning", "sklearn", "xgboost",
    "lightgbm", "jax", "pandas", "numpy", "sqlalchemy", "psycopg", "sqlite3", "wrapt", "psutil",
)


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_mltrail_loads_nothing_heavy() -> None:
    loaded = _loaded_after("import mltrail")
    assert {m for m in HEAVY if m in loaded} == set()


def test_autolog_and_data_namespaces_stay_light_until_used() -> None:
    loaded = _loaded_after("import mltrail\nmltrail.set_tracking_uri('/tmp/x')\nmltrail.log_metric")
    assert {m for m in HEAVY if m in loaded} == set()
