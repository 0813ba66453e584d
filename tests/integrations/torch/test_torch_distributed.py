"""Under ``torch.distributed`` only global rank zero records: a real 2-process gloo run on the CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from typing import Any

import pytest

pytest.importorskip("torch")

import mltrail

WORKER = textwrap.dedent(
    """
    import os, sys
    import torch, torch.distributed as dist
    import torch.multiprocessing as mp
    import mltrail

    def work(rank, world, port, uri):
        mltrail.set_tracking_uri(uri)
        mltrail.autolog(log_every_n_steps=1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(8, 3) + rank
        for _ in range(5):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        dist.barrier()
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(work, args=(2, int(sys.argv[1]), sys.argv[2]), nprocs=2, join=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_only_rank_zero_records_under_ddp(tmp_path: Any) -> None:
    script = tmp_path / "ddp_worker.py"
    script.write_text(WORKER)
    uri = str(tmp_path / "store")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(_free_port()), uri],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mltrail.set_tracking_uri(uri)
    runs = mltrail.search_runs(output_format="list")
    assert len(runs) == 1, "each rank started a run: only rank zero may record"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer/name"] == "SGD"
    hist = mltrail.Client().get_metric_history(run.info.run_id, "loss")
    assert list(hist.steps) == [1, 2, 3, 4, 5]
