"""A toy autolog integration for toyfw, built like a real one (tests of the engine use it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mltrail.autolog import AutologConfig, Call, Patch, enable, jobs, safe_hook

NAME = "toy"
SEEN: list[tuple[str, Any]] = []  # what the steps saw, for tests that need no store
# Background work the fit's post step queues: LATER[i](run_id) as job step "later" (tests/autolog/test_jobs.py).
LATER: list[Callable[[str], Any]] = []


class _Callback:
    """Our callback, added to ``train(callbacks=...)`` by the pre step."""

    def __init__(self, call: Call) -> None:
        self.run = call.run

    @safe_hook(NAME, "on_epoch")
    def on_epoch(self, epoch: int, loss: float) -> None:
        SEEN.append(("epoch", epoch))
        self.run.log_metrics({"loss": loss}, step=epoch)


def _pre_train(call: Call) -> None:
    call.kwargs["callbacks"] = [*call.kwargs.get("callbacks", ()), _Callback(call)]
    call.run.log_params({"epochs": call.kwargs.get("epochs", 2)})


def _post_train(call: Call, result: float) -> None:
    SEEN.append(("train", result))
    call.run.log_metrics({"result": result})


def _pre_fit(call: Call) -> None:
    call.run.log_params({"estimator": type(call.instance).__name__, "scale": call.instance.scale})


def _post_fit(call: Call, result: Any) -> None:
    SEEN.append(("fit", type(call.instance).__name__))
    call.run.log_metrics({"coef": call.instance.coef_})
    run_id = call.run.run_id
    if LATER and run_id is not None:
        jobs.submit_steps(NAME, run_id, [("later", lambda fn=fn: fn(run_id)) for fn in LATER])


def _post_create(call: Call, result: Any) -> None:
    SEEN.append(("create", call.instance))


def _post_describe(call: Call, result: Any) -> None:
    SEEN.append(("describe", result))


PATCHES = (
    Patch(owner="toyfw", path="train", pre=_pre_train, post=_post_train),
    Patch(owner="toyfw", path="Estimator.fit", pre=_pre_fit, post=_post_fit, subclasses=True,
          child="if_used"),
    Patch(owner="toyfw", path="Estimator.create", post=_post_create, run="none"),
    Patch(owner="toyfw", path="Estimator.describe", post=_post_describe, run="none"),
)


def autolog(**options: Any) -> None:
    enable(NAME, AutologConfig(**options))
