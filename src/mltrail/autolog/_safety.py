"""The safety net under every patch (DESIGN invariant 1).

Everything mltrail runs inside a user's call — the *pre* and *post* steps of a patch, starting
and ending an owned run, a framework callback of ours — runs through :func:`safely`. An
exception it raises is caught, reported once per (integration, step) as an
:class:`AutologWarning` pointing at the user's line, logged in full at DEBUG on
``mltrail.autolog``, and the user's call goes on as if autolog were off. With
``MLTRAIL_AUTOLOG_STRICT=1`` (the test suite sets it) the exception is raised instead.

The same choke point serves the fault-injection harness under ``tests/``: it records which
steps a call reaches and makes each of them raise in turn (:func:`record_points`,
:func:`inject_fault`).

This module is imported by ``import mltrail.autolog`` and must stay light (no wrapt).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any, Final

_log = logging.getLogger("mltrail.autolog")

STRICT_ENV: Final = "MLTRAIL_AUTOLOG_STRICT"


class AutologWarning(UserWarning):
    """A step of mltrail's autolog failed; the user's call went on without it."""


class InjectedFault(Exception):
    """Raised at a hook point by the fault-injection harness (never outside tests)."""


class _Failed:
    """Type of :data:`FAILED`."""

    _instance: _Failed | None = None

    def __new__(cls) -> _Failed:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<mltrail.autolog.FAILED>"

    def __bool__(self) -> bool:
        return False


FAILED: Final = _Failed()
"""What :func:`safely` returns when the step it ran raised (and strict mode is off)."""


def strict() -> bool:
    """Whether our own errors are raised instead of warned (``MLTRAIL_AUTOLOG_STRICT=1``).

    Read at each failure, not at import, so a test can switch it with ``monkeypatch.setenv``.
    """
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------------- fault injection
# Module globals read on every step: one truthiness check when no harness is running.
_faults_on = False
_fault_at: tuple[str, str] | None = None
_recorded: set[tuple[str, str]] | None = None


def _fault_check(integration: str, point: str) -> None:
    if _recorded is not None:
        _recorded.add((integration, point))
    if _fault_at == (integration, point):
        msg = f"fault injected by the test harness at {integration}:{point}"
        raise InjectedFault(msg)


@contextmanager
def record_points() -> Iterator[set[tuple[str, str]]]:
    """Collect the (integration, point) pairs that :func:`safely` runs inside the block."""
    global _faults_on, _recorded
    previous_on, previous = _faults_on, _recorded
    _recorded = set()
    _faults_on = True
    try:
        yield _recorded
    finally:
        _recorded = previous
        _faults_on = previous_on or _fault_at is not None


@contextmanager
def inject_fault(integration: str, point: str) -> Iterator[None]:
    """Make the step ``point`` of ``integration`` raise :class:`InjectedFault` inside the block."""
    global _faults_on, _fault_at
    previous = _fault_at
    _fault_at = (integration, point)
    _faults_on = True
    try:
        yield
    finally:
        _fault_at = previous
        _faults_on = previous is not None or _recorded is not None


# ---------------------------------------------------------------------- the net
def safely(integration: str, point: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` as step ``point`` of ``integration``: never let it raise.

    Returns what ``fn`` returns, or :data:`FAILED` if it raised an ``Exception`` (reported once
    as an :class:`AutologWarning`). In strict mode the exception propagates. ``BaseException``
    that is not an ``Exception`` (KeyboardInterrupt, SystemExit) always propagates.
    """
    try:
        if _faults_on:
            _fault_check(integration, point)
        return fn(*args, **kwargs)
    except Exception as exc:
        if strict():
            raise
        report(integration, point, exc)
        return FAILED


def safe_hook(integration: str, point: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a method the framework calls (a callback hook) so it can never raise into it.

    Example:
        >>> class _Callback(keras.callbacks.Callback):
        ...     @safe_hook("keras", "on_epoch_end")
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         self.run.log_metrics(logs or {}, step=epoch)
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        def hook(*args: Any, **kwargs: Any) -> Any:
            result = safely(integration, point, fn, *args, **kwargs)
            return None if result is FAILED else result

        hook.__name__ = getattr(fn, "__name__", point)
        hook.__qualname__ = getattr(fn, "__qualname__", point)
        hook.__doc__ = fn.__doc__
        hook.__wrapped__ = fn  # type: ignore[attr-defined]
        return hook

    return decorate


# ---------------------------------------------------------------------- warn once
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()
silenced: set[str] = set()  # integrations enabled with silent=True (kept by the engine)
# Code objects of the engine's patch wrappers, so a warning can point past them to user code.
wrapper_codes: set[CodeType] = set()


def report(integration: str, point: str, exc: BaseException, *, where: tuple[str, int] | None = None) -> None:
    """Report a failure of ours: full detail at DEBUG, one AutologWarning per (integration, point).

    ``where`` (``(filename, lineno)``) attributes the warning to that line instead of the user's
    line on the current stack: a background job has no user code on its stack.
    """
    _log.debug("autolog %s: %s failed", integration, point, exc_info=exc)
    msg = (
        f"mltrail autolog for {integration}: {point} failed and was skipped "
        f"({type(exc).__name__}: {exc}); your call went on unchanged. "
        f"Set {STRICT_ENV}=1 to raise such errors instead."
    )
    warn_once(integration, point, msg, where=where)


def warn_once(integration: str, point: str, message: str, *, where: tuple[str, int] | None = None) -> None:
    """Emit ``message`` as an AutologWarning unless already warned for (integration, point)."""
    key = (integration, point)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    if integration in silenced:
        _log.debug("%s", message)
        return
    try:
        if where is None:
            warnings.warn(AutologWarning(message), stacklevel=_user_stacklevel())
        else:
            warnings.warn_explicit(AutologWarning(message), AutologWarning, where[0], where[1])
    except Exception:  # noqa: BLE001 - `-W error` must not turn our warning into the user's failure
        _log.warning("%s", message)


def reset_warnings() -> None:
    """Forget which warnings were given (so the next failure of each step warns again)."""
    with _warned_lock:
        _warned.clear()


_OUR_DIRS: tuple[str, ...] = ()


def _internal(frame: FrameType) -> bool:
    global _OUR_DIRS
    if not _OUR_DIRS:
        # mltrail's package directory (two levels up from here) and wrapt's.
        dirs = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
        wrapt_file = getattr(sys.modules.get("wrapt"), "__file__", None)
        if isinstance(wrapt_file, str):
            dirs.append(os.path.dirname(os.path.abspath(wrapt_file)))
        _OUR_DIRS = tuple(d + os.sep for d in dirs)
    filename = frame.f_code.co_filename
    known = _internal_files.get(filename)
    if known is None:
        known = _internal_files[filename] = filename.startswith("<frozen") or os.path.abspath(
            filename
        ).startswith(_OUR_DIRS)
    return known


_internal_files: dict[str, bool] = {}  # filename -> inside mltrail or wrapt (abspath is slow)


def _user_stacklevel() -> int:
    """The ``stacklevel`` for a warning raised from :func:`warn_once` that names the user's line.

    The user's line is the caller of the outermost patch wrapper on the stack (wrapt's own
    wrapper is C code and leaves no frame). Outside any patched call (a post-import hook, a
    callback) it is the first frame that is neither mltrail's, wrapt's nor importlib's.
    """
    # Count frames as warnings.warn does: level 1 is warn_once, and importlib's bootstrap
    # frames are skipped without being counted.
    frame: FrameType | None = sys._getframe(1)
    level = 1
    outermost = 0
    first_outside = 0
    while frame is not None:
        frame = frame.f_back
        while frame is not None and _importlib_internal(frame):
            frame = frame.f_back
        if frame is None:
            break
        level += 1
        if frame.f_code in wrapper_codes:
            outermost = level
        elif not first_outside and not _internal(frame):
            first_outside = level
    if outermost:
        return outermost + 1
    return first_outside or 2


def _importlib_internal(frame: FrameType) -> bool:
    filename = frame.f_code.co_filename
    return "importlib" in filename and "_bootstrap" in filename
