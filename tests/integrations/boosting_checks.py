"""What the XGBoost and LightGBM tests share: data, readers of a run's record, subprocess checks.

The readers call ``mltrail.flush()`` first: importance files, model files and dataset inputs
are written by autolog's background jobs after training returns, and a flush waits for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

import mltrail

IMPORTANCE_FILES = {"feature_importance.json", "feature_importance.svg"}


def ranking_data(seed: int = 0) -> tuple[Any, Any, Any]:
    """Synthetic query groups: 30 queries x 12 documents, relevance 0-3 driven by 2 features.

    Returns ``(X, y, qid)``: a query id per row.
    """
    rng = np.random.default_rng(seed)
    n_groups, per_group = 30, 12
    X = rng.normal(size=(n_groups * per_group, 6))
    score = X[:, 0] * 2 + X[:, 1] + rng.normal(scale=0.3, size=len(X))
    y = np.digitize(score, [-1.0, 0.5, 2.0])
    return X, y, np.repeat(np.arange(n_groups), per_group)


def run(run_id: str) -> Any:
    mltrail.flush()
    return mltrail.get_run(run_id)


def history(run_id: str, key: str) -> tuple[list[int], list[float]]:
    hist = mltrail.Client().get_metric_history(run_id, key)
    return hist.steps.tolist(), hist.values.tolist()


def artifacts(run_id: str, path: str | None = None) -> set[str]:
    mltrail.flush()
    return {f.path for f in mltrail.Client().list_artifacts(run_id, path)}


def artifact_json(run_id: str, path: str) -> Any:
    mltrail.flush()
    return json.loads(Path(mltrail.Client().download_artifacts(run_id, path)).read_text())


def importances(run_id: str) -> dict[str, Any]:
    return dict(artifact_json(run_id, "feature_importance.json"))


def autolog_runs(integration: str) -> list[Any]:
    mltrail.flush()
    return [r for r in mltrail.search_runs(output_format="list") if r.data.tags.get("mltrail.autolog") == integration]


def inputs(run: Any) -> dict[str, dict[str, Any]]:
    """``{"<context>:<dataset name>": profile}`` of a run's inputs (read after a flush)."""
    return {
        d.tags.get("mltrail.data.context", "") + ":" + d.dataset.name: json.loads(d.dataset.profile or "{}")
        for d in run.inputs.dataset_inputs
    }


def run_script(script: str, tmp_path: Path) -> str:
    """Run ``script`` in a fresh interpreter (strict autolog, a store under ``tmp_path``); its stdout."""
    env = dict(os.environ, MLTRAIL_AUTOLOG_STRICT="1", MLTRAIL_TRACKING_URI=str(tmp_path / "store"))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def import_order_result(script: str, module: str, order: str, tmp_path: Path) -> Any:
    """Run ``script`` with ``BEFORE``/``AFTER`` importing ``module`` before or after ``autolog()``."""
    if order == "autolog-first":
        before, after = f"assert {module!r} not in sys.modules", f"import {module}"
    else:
        before, after = f"import {module}", ""
    out = run_script(script.replace("BEFORE", before).replace("AFTER", after), tmp_path)
    return json.loads(out.splitlines()[-1])


def state_without_import(integration: str, module: str, tmp_path: Path) -> str:
    """Enable the integration without ``module`` imported: it must stay unimported; the state."""
    return run_script(
        f"import sys, mltrail, mltrail.integrations.{integration} as m; m.autolog(); "
        f"assert {module!r} not in sys.modules, '{module} was imported'; "
        f"print(mltrail.autolog_status()[{integration!r}].state)",
        tmp_path,
    )
