"""A script written for MLflow's fluent tracking API runs unchanged after ``import mltrail as mlflow``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "scripts" / "mlflow_style.py"


def test_mlflow_script_runs_unchanged_and_records_the_same(tmp_path: Path) -> None:
    env = {**os.environ, "MLTRAIL_TRACKING_URI": str(tmp_path / "store")}
    out = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["status"] == "FINISHED"
    assert record["experiment"] == "mlflow-compat"
    assert record["params"] == {"model": "mlp", "lr": "0.01"}
    assert record["metrics"] == {"best_acc": 0.6}
    assert record["team"] == "ml"
    assert record["artifacts"] == ["config.json", "notes", "reports", "summary.txt"]
    assert record["reports"] == ["reports/summary.txt"]
    assert record["children"] == [["0", 1 / 3, 0.5], ["1", 0.25, 0.6]]
    assert sorted(record["history"]) in ([1 / 3, 0.5, 1.0], [0.25, 1 / 3, 0.5])
