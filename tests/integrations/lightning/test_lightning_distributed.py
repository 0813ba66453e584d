"""Lightning's ``ddp`` strategy on 2 CPU processes (gloo): only global rank zero records."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

pytest.importorskip("torch")

from lightning_helpers import PACKAGES

if not PACKAGES:
    pytest.skip("neither lightning nor pytorch_lightning is installed", allow_module_level=True)

import mltrail

SCRIPT = textwrap.dedent(
    """
    import sys
    import mltrail
    mltrail.set_tracking_uri(sys.argv[1])
    mltrail.autolog()
    import {package} as pl
    from {package}.demos.boring_classes import BoringModel

    class Model(BoringModel):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            self.log("train_loss", out["loss"])
            return out

    if __name__ == "__main__":
        trainer = pl.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=1,
                             limit_train_batches=4, limit_val_batches=1, log_every_n_steps=1,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        trainer.fit(Model())
        print("RANK", trainer.global_rank, "DONE")
    """
)


def test_only_global_rank_zero_records_under_ddp(tmp_path: Any) -> None:
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT.format(package=PACKAGES[0]))
    uri = str(tmp_path / "store")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), uri], capture_output=True, text=True, timeout=300, env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANK 0 DONE" in proc.stdout and "RANK 1 DONE" in proc.stdout
    mltrail.set_tracking_uri(uri)
    runs = mltrail.search_runs(output_format="list")
    assert len(runs) == 1, "a rank other than zero started a run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer/num_devices"] == "2"
    assert run.data.params["trainer/strategy"] == "DDPStrategy"
    # 4 steps on each rank (each has its shard of the data), each step logged once: by rank zero
    hist = mltrail.Client().get_metric_history(run.info.run_id, "train_loss")
    assert list(hist.steps) == [0, 1, 2, 3]
