"""Patches declared as data, and the record of one patched call.

An integration module lists its patches in ``PATCHES``; the engine applies them with wrapt and
wraps every call in the same three steps::

    pre(call)                            # may replace call.args / call.kwargs (add a callback)
    result = wrapped(*call.args, **call.kwargs)    # the user's call: nothing of ours catches here
    post(call, result)                   # log what the call produced

``pre`` and ``post`` run under the safety net: if ``pre`` raises, the original is called with
the untouched arguments; if ``post`` raises, the result is still returned.

This module stays light (no wrapt): integrations and tests import it freely.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mltrail.core.errors import InvalidValueError

if TYPE_CHECKING:
    from mltrail.autolog.config import AutologConfig
    from mltrail.autolog.runs import RunHandle

RunMode = Literal["own", "active", "none"]
ChildMode = Literal["never", "if_used", "always"]


@dataclass(frozen=True)
class Patch:
    """One attribute to patch, and what to do around each call of it.

    Attributes:
        owner: the module holding the attribute, by import name (never imported by us: the
            patch is applied when the module is imported, or at once if it already is).
        path: the dotted path inside ``owner``: ``"train"``, ``"Booster.update"``.
        pre: ``pre(call)`` before the call; may set ``call.args`` / ``call.kwargs``.
        post: ``post(call, result)`` after a call that returned.
        run: ``"own"``: with no active run the call starts one and ends it (FINISHED, FAILED if
            it raised), else it logs into the active run; ``"active"``: log into the active run
            if there is one, never start one; ``"none"``: no run is involved.
        child: with ``run="own"`` inside an active run: ``"never"`` log into it; ``"always"``
            start a child run; ``"if_used"`` start a child run if an earlier patched call
            already logged into that run (a second ``fit`` in one user run).
        when: ``when(call) -> bool``: skip (call the original untouched) when it returns False.
        subclasses: ``path`` is ``"Class.method"``, and every subclass of ``Class`` that defines
            its own ``method`` is patched too, including classes defined later. ``Class`` itself
            need not have ``method`` (``BaseEstimator.fit``).
        include: with ``subclasses``, ``include(cls) -> bool`` selects the subclasses to patch.
    """

    owner: str
    path: str
    pre: Callable[[Call], Any] | None = None
    post: Callable[[Call, Any], Any] | None = None
    run: RunMode = "own"
    child: ChildMode = "never"
    when: Callable[[Call], bool] | None = None
    subclasses: bool = False
    include: Callable[[type], bool] | None = None

    def __post_init__(self) -> None:
        if self.run not in ("own", "active", "none"):
            msg = f"Patch.run must be 'own', 'active' or 'none', got {self.run!r}"
            raise InvalidValueError(msg)
        if self.child not in ("never", "if_used", "always"):
            msg = f"Patch.child must be 'never', 'if_used' or 'always', got {self.child!r}"
            raise InvalidValueError(msg)
        if self.subclasses and self.path.count(".") != 1:
            msg = f"Patch(subclasses=True) needs path 'Class.method', got {self.path!r}"
            raise InvalidValueError(msg)

    @property
    def target(self) -> str:
        """``owner:path``, as ``autolog_status()`` lists it."""
        return f"{self.owner}:{self.path}"


class Call:
    """One patched call in progress, as the patch's steps see it.

    Attributes:
        integration: the integration's name.
        patch: the :class:`Patch` being run.
        config: the integration's config in force when the call started.
        instance: the object the method was called on (the class for a classmethod; None for a
            function or staticmethod).
        args, kwargs: the arguments the original will be called with; ``pre`` may replace
            them, or change ``kwargs`` in place (it gets its own copy).
        run: where to log (:class:`~mltrail.autolog.runs.RunHandle`); a falsy handle that
            ignores everything when there is no run to log into.
        state: a dict for ``pre`` to leave things for ``post``.
    """

    __slots__ = ("_state", "args", "config", "instance", "integration", "kwargs", "patch", "run", "where")

    def __init__(
        self,
        integration: str,
        patch: Patch,
        config: AutologConfig,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.integration = integration
        self.patch = patch
        self.config = config
        self.instance = instance
        self.args = args
        self.kwargs = kwargs
        self.run: RunHandle = _NO_RUN
        # (filename, lineno) of the line that made the call, set by the engine's wrapper: where
        # a failure of a background job queued for the call is reported.
        self.where: tuple[str, int] | None = None

    @property
    def state(self) -> dict[str, Any]:
        # Made on first use: most calls never need one, and every call pays for what __init__ does.
        try:
            return self._state
        except AttributeError:
            self._state: dict[str, Any] = {}
            return self._state

    def __repr__(self) -> str:
        return f"<Call {self.integration} {self.patch.target}>"


# The falsy "no run" handle, set by mltrail.autolog.runs when it is imported (it imports us).
_NO_RUN: Any = None

# The outermost patched call running in this context (thread / task), or None: the nesting
# guard of invariant 3. A patched call that finds one here is part of it and is not logged.
CURRENT: ContextVar[Call | None] = ContextVar("mltrail_autolog_call", default=None)


def current_call() -> Call | None:
    """The outermost patched call in progress in this thread or task, if any."""
    return CURRENT.get()
