"""What recording costs a training step: Lightning loggers side by side, and plain-loop autolog.

Standalone: ``python benchmarks/bench_torch.py [--steps 1000] [--repeats 5] [--only plain|lightning]``. Needs torch,
lightning and, for the comparison, mlflow (``pip install mlflow``; its row is left out when it is
missing).

A small MLP (32-64-64-1, batch 64) on the CPU, one intra-op thread, ``log_every_n_steps=1``
(a metric logged at every step, the worst case for a logger). Each case runs ``--steps``
optimizer steps; the cases take turns, ``--repeats`` rounds, and the table gives the median time
per step and the overhead over the same loop with nothing recorded. "paired" is the median,
over rounds, of each round's overhead against the bare case of the same round: on a shared,
loaded machine it drifts less than the ratio of medians. The load average is printed with the
tables.

Time is the training thread's CPU time (``time.thread_time``): what the loop itself spends. Work
moved off the loop (mltrail's writer thread) is not in it, by design; work a logger does on the
loop (MLflow's file writes) is. Wall-clock medians are printed too, for reference; on a shared
machine they are noisy.

Lightning cases (the time between ``on_train_start`` and ``on_train_end``):
  no logger         ``Trainer(logger=False)``
  CSVLogger         Lightning's file logger, for reference
  MLTrailLogger     ours
  MLFlowLogger      MLflow's logger, local SQLite store (MLflow's recommended default)
  mltrail autolog   ``mltrail.integrations.lightning.autolog()`` and ``logger=False``: the
                    MLTrailLogger it attaches plus its callback (lr every step, params, summary)
Plain PyTorch loop:
  bare              the loop
  mltrail autolog   ``mltrail.integrations.torch.autolog(log_every_n_steps=1)``: the loss,
                    lr and grad_norm of every step

Targets: MLTrailLogger <= 3 % over no logger and at least 5x less overhead than MLFlowLogger;
plain-loop autolog <= 3 %.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore")


def make_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)
    )


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, generator=g)
    return x, x[:, :1] * 2 + 1


# ---------------------------------------------------------------------- Lightning
def lightning_case(logger_factory: Callable[[str], Any], steps: int, root: str) -> tuple[float, float]:
    import lightning.pytorch as pl

    class Timer(pl.Callback):
        def on_train_start(self, trainer: Any, module: Any) -> None:
            self.cpu, self.wall = time.thread_time(), time.perf_counter()

        def on_train_end(self, trainer: Any, module: Any) -> None:
            self.cpu = time.thread_time() - self.cpu
            self.wall = time.perf_counter() - self.wall

    class MLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_mlp()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    x, y = _data(64 * steps)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    timer = Timer()
    trainer = pl.Trainer(
        max_steps=steps, max_epochs=1, log_every_n_steps=1, logger=logger_factory(root),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1, callbacks=[timer], num_sanity_val_steps=0,
    )
    trainer.fit(MLP(), loader)
    return timer.cpu / steps, timer.wall / steps


def _no_logger(root: str) -> Any:
    return False


def _csv(root: str) -> Any:
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(root)


def _mltrail(root: str) -> Any:
    import mltrail
    from mltrail.integrations.lightning import MLTrailLogger

    mltrail.set_tracking_uri(os.path.join(root, "mltrail"))
    return MLTrailLogger()


def _autolog(root: str) -> Any:
    import mltrail

    mltrail.set_tracking_uri(os.path.join(root, "mltrail"))
    return False  # autolog attaches its MLTrailLogger (see main: it is turned on for this case)


def _mlflow(root: str) -> Any:
    from lightning.pytorch.loggers import MLFlowLogger

    os.makedirs(root, exist_ok=True)  # MLflow's recommended local store (its file store is deprecated)
    return MLFlowLogger(tracking_uri="sqlite:///" + os.path.join(root, "mlflow.db"))


# ---------------------------------------------------------------------- plain loop
def plain_loop(steps: int) -> tuple[float, float]:
    model = make_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = _data(64 * steps)
    batches = list(zip(x.split(64), y.split(64), strict=True))
    cpu, wall = time.thread_time(), time.perf_counter()
    for xb, yb in batches:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return (time.thread_time() - cpu) / steps, (time.perf_counter() - wall) / steps


# ---------------------------------------------------------------------- the table
def _row(
    name: str, cpu: list[float], wall: list[float], bare: list[float] | None, mlflow: float | None
) -> str:
    per = statistics.median(cpu) * 1e6
    overhead = paired = versus = ""
    if bare is not None:
        base = statistics.median(bare) * 1e6
        overhead = f"{(per - base) / base * 100:+.1f} %"
        paired = f"{statistics.median((c - b) / b for c, b in zip(cpu, bare, strict=True)) * 100:+.1f} %"
        if mlflow is not None and name != "MLFlowLogger":
            versus = f"{(mlflow - base) / (per - base):.0f}x less" if per > base else "not measurable"
    return f"| {name} | {per:.1f} | {statistics.median(wall) * 1e6:.1f} | {overhead} | {paired} | {versus} |"


def _load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=("plain", "lightning"), default=None)
    args = parser.parse_args()
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    cases: dict[str, Callable[[str], Any]] = {
        "no logger": _no_logger, "CSVLogger": _csv, "MLTrailLogger": _mltrail, "mltrail autolog": _autolog,
    }
    try:
        import mlflow  # noqa: F401

        cases["MLFlowLogger"] = _mlflow
    except ImportError:
        print("(mlflow is not installed: its row is left out)")
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    plain: dict[str, tuple[list[float], list[float]]] = {"bare loop": ([], []), "mltrail autolog": ([], [])}
    root = tempfile.mkdtemp(prefix="mltrail-bench-torch-")
    load_before = _load()
    try:
        from mltrail.integrations import lightning as mltrail_lightning

        lightning_case(_no_logger, 50, root)  # warm-up: imports, first allocations
        for _ in range(args.repeats if args.only != "plain" else 0):
            for name, factory in cases.items():
                if name == "mltrail autolog":
                    mltrail_lightning.autolog(log_models=False, log_datasets=False)
                try:
                    cpu, wall = lightning_case(factory, args.steps, os.path.join(root, name.replace(" ", "_")))
                finally:
                    mltrail_lightning.autolog(disable=True)
                results[name][0].append(cpu)
                results[name][1].append(wall)
        # plain loop: bare and with autolog, taking turns
        from mltrail.integrations import torch as mltrail_torch

        plain_loop(50)
        for _ in range(args.repeats if args.only != "lightning" else 0):
            mltrail_torch.autolog(disable=True)
            cpu, wall = plain_loop(args.steps)
            plain["bare loop"][0].append(cpu)
            plain["bare loop"][1].append(wall)
            mltrail_torch.autolog(log_every_n_steps=1)
            cpu, wall = plain_loop(args.steps)
            plain["mltrail autolog"][0].append(cpu)
            plain["mltrail autolog"][1].append(wall)
        mltrail_torch.autolog(disable=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{load_before} before, {_load()} after (os.getloadavg; {os.cpu_count()} CPUs)")
    if args.only != "plain":
        print(f"\nLightning {_package_version()}, small MLP on the CPU, {args.steps} steps, log_every_n_steps=1, "
              f"median of {args.repeats} (torch {torch.__version__})\n")
        _table(results, "no logger", "vs MLFlowLogger's overhead")
    if args.only != "lightning":
        print(f"\nPlain PyTorch loop (forward, backward, clip_grad_norm_, step), {args.steps} steps, "
              f"median of {args.repeats}\n")
        _table(plain, "bare loop", "")


def _table(results: dict[str, tuple[list[float], list[float]]], base: str, versus: str) -> None:
    mlflow = statistics.median(results["MLFlowLogger"][0]) * 1e6 if "MLFlowLogger" in results else None
    print(f"| case | µs/step (CPU) | µs/step (wall) | overhead | paired | {versus} |")
    print("|---|---|---|---|---|---|")
    for name, (cpu, wall) in results.items():
        print(_row(name, cpu, wall, None if name == base else results[base][0], mlflow))


def _package_version() -> str:
    import lightning

    return str(lightning.__version__)


if __name__ == "__main__":
    main()
