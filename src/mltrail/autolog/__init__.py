"""Autolog: patch ML frameworks so that training records itself, without breaking anything.

For users, one line::

    import mltrail
    mltrail.autolog()                  # every supported framework, imported now or later
    mltrail.autolog(exclude=["argparse"])
    mltrail.autolog(disable=True)      # every original restored
    mltrail.autolog_status()           # which integrations are on and what they patched

For integration modules (``mltrail/integrations/<framework>.py``), the contract:

* ``PATCHES``: a tuple of :class:`Patch` — ``Patch(owner="xgboost.training", path="train",
  pre=_pre, post=_post)`` — applied by the engine when ``owner`` is imported;
* steps ``pre(call)`` / ``post(call, result)`` receiving a :class:`Call` (``call.run`` is
  where to log; ``call.config`` the options; ``call.state`` carries things from pre to post);
  they run under the safety net, the user's call runs outside it;
* ``autolog(*, disable=False, exclusive=False, silent=False, log_models=True,
  log_datasets=True, log_every_n_steps=None, extra_tags=None,
  disable_for_unsupported_versions=False, <own options>)`` calling :func:`enable`;
* optionally ``Config``, a subclass of :class:`AutologConfig` with the integration's options;
* a registry entry in :mod:`mltrail.autolog.registry` (import names, module, tested versions);
* framework callbacks of ours decorated with :func:`safe_hook`, holding a :class:`RunHandle`.
* work the user's call need not wait for (files, plots, metrics from a snapshot) queued with
  :func:`mltrail.autolog.jobs.submit` / ``submit_steps``: one background worker per process,
  waited for by ``mltrail.flush()``; a run autolog owns ends after its jobs.

Invariants the engine keeps: an error of ours inside a patch is warned once
(:class:`AutologWarning`) and the user's result returned unchanged (raised instead with
``MLTRAIL_AUTOLOG_STRICT=1``); the user's exception propagates as the same object; a patched
call inside another patched call (any integration, same thread or task) is not logged; a
patched call with no active run owns the run it starts.

Importing this package imports no framework and not wrapt.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from mltrail.autolog._safety import FAILED, AutologWarning, safe_hook, safely
from mltrail.autolog.call import Call, Patch, current_call
from mltrail.autolog.config import AutologConfig
from mltrail.autolog.engine import (
    IntegrationStatus,
    autolog,
    autolog_status,
    disable,
    enable,
    get_config,
)
from mltrail.autolog.runs import NO_RUN, RunHandle, hold_params, owned_run

__all__ = [
    "FAILED",
    "NO_RUN",
    "AutologConfig",
    "AutologWarning",
    "Call",
    "IntegrationStatus",
    "Patch",
    "RunHandle",
    "autolog",
    "autolog_status",
    "current_call",
    "disable",
    "enable",
    "get_config",
    "hold_params",
    "owned_run",
    "safe_hook",
    "safely",
]


class _AutologModule(types.ModuleType):
    """This package, callable as :func:`autolog`.

    ``mltrail.autolog`` names the function, but Python binds the *package* to that attribute
    whenever ``mltrail.autolog.<submodule>`` is imported first (as every integration does).
    Calling the package does what calling the function does, so ``mltrail.autolog()`` works
    in either case.
    """

    def __call__(self, **options: Any) -> None:
        autolog(**options)


sys.modules[__name__].__class__ = _AutologModule
