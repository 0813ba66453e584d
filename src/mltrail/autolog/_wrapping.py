"""Applying and reverting patches with wrapt.

A patch replaces one attribute slot with a :class:`PatchWrapper` (a ``wrapt.FunctionWrapper``)
around the original, and records ``(parent, attribute, original, created)`` so that reverting
puts back the very object that was there — or deletes the slot if the patch created it, as
when a subclass inherited the method. wrapt's ``resolve_path`` finds the original in the
defining class's ``__dict__`` rather than by ``getattr``, which would bind it.

Methods that subclasses override (``Patch(subclasses=True)``): every subclass that defines its
own method in ``vars(cls)`` gets its own wrapper, found

* when the patch is applied, by walking ``__subclasses__()``;
* when a class is defined later, by an ``__init_subclass__`` hook installed on the base (the
  base's own ``__init_subclass__``, if it has one, still runs first), so a class defined in
  ``__main__`` after ``autolog()`` is patched before it can be instantiated;
* again whenever a module the engine watches is imported, which catches subclasses of an
  intermediate class whose ``__init_subclass__`` does not call ``super()``.

A subclass's ``fit`` that calls ``super().fit()`` goes through two wrappers; the nesting guard
makes the inner one a plain call.

Pickling: instances pickle by class reference, untouched by patching. The wrappers themselves
pickle too — by reference to ``module.qualname`` when that is where they live, or, inside a
class cloudpickle sends by value (one defined in ``__main__``), as the original function, so a
worker process gets the class as it was before autolog.
"""

from __future__ import annotations

import copy
import importlib
import logging
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import wrapt

from mltrail.autolog import _safety, jobs
from mltrail.autolog._safety import FAILED, safely
from mltrail.autolog.call import CURRENT, Call, Patch
from mltrail.autolog.runs import SKIP, close_run, open_run
from mltrail.core.writer import training_calls

if TYPE_CHECKING:
    from mltrail.autolog.engine import _Runtime

_log = logging.getLogger("mltrail.autolog")
_MISSING = object()


# ---------------------------------------------------------------------- pickling helpers
def _identity(obj: Any) -> Any:
    return obj


def _import_path(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _BoundPatchWrapper(wrapt.BoundFunctionWrapper):  # type: ignore[type-arg]
    """A patched method bound to an instance or class (``est.fit``)."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        target = self._self_instance
        if target is None:
            target = self._self_owner
        if target is None:
            return self._self_parent.__reduce_ex__(protocol)
        # What pickle does for a plain bound method: getattr(obj, name) on the other side.
        return (getattr, (target, self._self_parent._self_attribute))

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        if self._self_instance is None or isinstance(self._self_instance, type):
            return self
        return getattr(copy.deepcopy(self._self_instance, memo), self._self_parent._self_attribute)


class PatchWrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """What a patched slot holds: the original, wrapped with the engine's three steps."""

    __bound_function_wrapper__ = _BoundPatchWrapper

    def __init__(self, wrapped: Any, wrapper: Any, runtime: _Runtime, patch: Patch, attribute: str):
        super().__init__(wrapped, wrapper)
        self._self_runtime = runtime
        self._self_patch = patch
        self._self_attribute = attribute
        self._self_applied: Applied | None = None  # set by _wrap_slot; revert() rebuilds stacks with it

    def __reduce_ex__(self, protocol: Any) -> Any:
        original = self.__wrapped__
        module = getattr(original, "__module__", None)
        qualname = getattr(original, "__qualname__", None)
        if (
            isinstance(module, str)
            and isinstance(qualname, str)
            and module != "__main__"
            and "<locals>" not in qualname
        ):
            return (_import_path, (module, qualname))
        return (_identity, (original,))

    def __reduce__(self) -> Any:
        return self.__reduce_ex__(2)

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self


# ---------------------------------------------------------------------- the wrapper
def make_wrapper(rt: _Runtime, patch: Patch) -> Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]:
    """The wrapt wrapper function that runs ``patch``'s steps around each call."""
    name = rt.name
    when, pre, post, mode, child = patch.when, patch.pre, patch.post, patch.run, patch.child
    owns = mode != "none"

    # The hot path: everything here runs on every call of a patched function. pre and post run
    # under the same net as safely() does, written out to spare a call per step.
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not rt.on or CURRENT.get() is not None:
            return wrapped(*args, **kwargs)
        call = Call(name, patch, rt.config, instance, args, kwargs)
        if when is not None:
            wanted = safely(name, "when", when, call)
            if wanted is FAILED or not wanted:
                return wrapped(*args, **kwargs)
        caller = sys._getframe(1)  # wrapt's own wrapper is C: this is the line that called
        if not _safety._internal(caller):
            call.where = (caller.f_code.co_filename, caller.f_lineno)
        del caller
        token = CURRENT.set(call)
        session = None
        counted = owns  # a training call, until it turns out to be another's nested call
        if counted:
            training_calls.enter()
        try:
            if owns:
                try:
                    if _safety._faults_on:
                        _safety._fault_check(name, "run_start")
                    session = open_run(name, call.config, mode, child, None, None)
                except Exception as exc:
                    if _safety.strict():
                        raise
                    _safety.report(name, "run_start", exc)
                if session is SKIP:  # another call logs into this run: not logged, not counted
                    session, counted = None, False
                    training_calls.leave()
                    return wrapped(*args, **kwargs)
                if session is not None:
                    call.run = session.handle
            if pre is not None:
                call.kwargs = dict(kwargs)  # pre's own copy: a failing pre leaves the user's intact
                try:
                    if _safety._faults_on:
                        _safety._fault_check(name, "pre")
                    pre(call)
                except Exception as exc:
                    if _safety.strict():
                        raise
                    _safety.report(name, "pre", exc)
                    call.args, call.kwargs = args, kwargs
            result = wrapped(*call.args, **call.kwargs)
            if post is not None:
                try:
                    if _safety._faults_on:
                        _safety._fault_check(name, "post")
                    post(call, result)
                except Exception as exc:
                    if _safety.strict():
                        raise
                    _safety.report(name, "post", exc)
        except BaseException as exc:
            if session is not None:
                close_run(name, session, exc)
            if counted:
                training_calls.leave()
            if jobs._asleep:
                jobs.wake()
            raise
        finally:
            CURRENT.reset(token)
        if session is not None:
            close_run(name, session, None, where=call.where)
        if counted:
            training_calls.leave()
        if jobs._asleep:
            jobs.wake()  # the background work the call queued starts now that the call is over
        return result

    _safety.wrapper_codes.add(wrapper.__code__)
    return wrapper


# ---------------------------------------------------------------------- apply / revert
class Applied:
    """One slot we replaced: enough to put back exactly what was there."""

    __slots__ = ("_parent", "attribute", "created", "original", "replacement")

    def __init__(self, parent: Any, attribute: str, original: Any, replacement: Any, created: bool):
        try:
            # Classes found by subclass discovery may be garbage: do not keep them alive.
            self._parent: Callable[[], Any] = weakref.ref(parent) if isinstance(parent, type) else (
                lambda: parent
            )
        except TypeError:
            self._parent = lambda: parent
        self.attribute = attribute
        self.original = original
        self.replacement = replacement
        self.created = created

    @property
    def parent(self) -> Any:
        return self._parent()

    def describe(self, owner: str) -> str:
        parent = self.parent
        if parent is None:
            return f"{owner}:<collected>.{self.attribute}"
        if isinstance(parent, type):
            return f"{parent.__module__}:{parent.__qualname__}.{self.attribute}"
        return f"{getattr(parent, '__name__', owner)}:{self.attribute}"

    def revert(self) -> bool:
        """Take our wrapper out of the slot; False if someone else has replaced the slot since.

        Another integration may have wrapped the same slot after us (scikit-learn's and
        XGBoost's ``fit`` of ``XGBClassifier``): our wrapper is then inside theirs. The wrappers
        above ours are rebuilt around our original, outermost last, so the slot keeps theirs
        and loses only ours, whatever order the integrations are turned off in.
        """
        parent = self.parent
        if parent is None:
            return True
        current = vars(parent).get(self.attribute, _MISSING)
        if current is self.replacement:
            if self.created:
                delattr(parent, self.attribute)
            else:
                wrapt.apply_patch(parent, self.attribute, self.original)
            return True
        above = _wrappers_above(current, self.replacement)
        if above is None:
            _log.debug("not reverting %r.%s: it was replaced after we patched it", parent, self.attribute)
            return False
        inner = self.original
        for i, wrapper in enumerate(reversed(above)):  # the one right above ours first
            applied = wrapper._self_applied
            assert applied is not None  # every wrapper in a slot was applied by the engine
            rebuilt = PatchWrapper(inner, wrapper._self_wrapper, wrapper._self_runtime, wrapper._self_patch,
                                   wrapper._self_attribute)
            rebuilt._self_applied = applied
            applied.original, applied.replacement = inner, rebuilt
            if i == 0:
                applied.created = self.created  # it now holds the slot as we held it
            inner = rebuilt
        wrapt.apply_patch(parent, self.attribute, inner)
        return True


def _wrappers_above(top: Any, target: Any) -> list[PatchWrapper] | None:
    """The engine's wrappers from ``top`` down to the one wrapping ``target``; None if not there."""
    chain: list[PatchWrapper] = []
    node = top
    while isinstance(node, PatchWrapper) and getattr(node, "_self_applied", None) is not None:
        chain.append(node)
        if node.__wrapped__ is target:
            return chain
        node = node.__wrapped__
    return None


def _ours(obj: Any, rt: _Runtime) -> bool:
    """Whether ``obj`` is, or wraps, a wrapper of ``rt``'s (integrations can stack on one slot)."""
    while isinstance(obj, PatchWrapper):
        if obj._self_runtime is rt:
            return True
        obj = obj.__wrapped__
    return False


def apply_patch(rt: _Runtime, patch: Patch, module: Any) -> None:
    """Apply ``patch`` to ``module`` (imported), unless it is in place already.

    With ``subclasses=True`` the base class need not have the method itself
    (``BaseEstimator.fit``): then only the subclasses that define it are patched.
    """
    if patch.subclasses:
        class_path, attribute = patch.path.rsplit(".", 1)
        base = wrapt.resolve_path(module, class_path)[2]
        if isinstance(base, type):
            if any(attribute in vars(cls) for cls in base.__mro__):
                parent, attribute, original = wrapt.resolve_path(base, attribute)
                _wrap_slot(rt, patch, parent, attribute, original)
            _watch_subclasses(rt, patch, base, attribute)
            return
    parent, attribute, original = wrapt.resolve_path(module, patch.path)
    _wrap_slot(rt, patch, parent, attribute, original)


def _wrap_slot(rt: _Runtime, patch: Patch, parent: Any, attribute: str, original: Any) -> None:
    try:
        current = vars(parent).get(attribute, _MISSING)
    except TypeError:
        current = _MISSING
    if _ours(current, rt) or (current is _MISSING and _ours(original, rt)):
        return  # patched already (autolog() twice), or inherited from a base we patched
    if current is _MISSING:
        # Inherited from a base where another integration's wrapper sits: wrap what that wraps,
        # so that no slot ever holds another slot's wrapper (reverting either leaves none behind).
        while isinstance(original, PatchWrapper):
            original = original.__wrapped__
    wrapper = PatchWrapper(original, make_wrapper(rt, patch), rt, patch, attribute)
    created = current is _MISSING
    wrapt.apply_patch(parent, attribute, wrapper)
    applied = Applied(parent, attribute, original, wrapper, created)
    wrapper._self_applied = applied
    rt.applied.append(applied)


def _subclasses(base: type) -> Iterator[type]:
    seen: set[type] = set()
    stack = [base]
    while stack:
        subclasses: list[type] = type.__subclasses__(stack.pop())
        for sub in subclasses:
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
                yield sub


def adopt(rt: _Runtime, patch: Patch, cls: type, attribute: str) -> None:
    """Patch ``cls``'s own ``attribute`` if it defines one (a subclass of a patched base)."""
    own = vars(cls).get(attribute, _MISSING)
    if own is _MISSING or _ours(own, rt):
        return
    if patch.include is not None and not patch.include(cls):
        return
    _wrap_slot(rt, patch, cls, attribute, own)


def rescan(rt: _Runtime) -> None:
    """Patch subclasses defined since the last scan (see the module docstring)."""
    for base, patch, attribute in list(rt.watched):
        for sub in _subclasses(base):
            adopt(rt, patch, sub, attribute)


# One __init_subclass__ hook per base class, shared by every patch that watches the base.
_watchers: dict[type, list[tuple[_Runtime, Patch, str]]] = {}


def _watch_subclasses(rt: _Runtime, patch: Patch, base: type, attribute: str) -> None:
    entry = (rt, patch, attribute)
    if (base, patch, attribute) not in rt.watched:
        rt.watched.append((base, patch, attribute))
    for sub in _subclasses(base):
        adopt(rt, patch, sub, attribute)
    watchers = _watchers.get(base)
    if watchers is None:
        watchers = _watchers[base] = []
        _install_init_subclass(base)
    if entry not in watchers:
        watchers.append(entry)


def _install_init_subclass(base: type) -> None:
    prior = vars(base).get("__init_subclass__", _MISSING)

    def __init_subclass__(cls: Any, /, **kwargs: Any) -> None:
        if prior is _MISSING:
            parent: Any = super(base, cls)
            parent.__init_subclass__(**kwargs)
        else:
            prior.__get__(None, cls)(**kwargs)
        for rt, patch, attribute in list(_watchers.get(base, ())):
            if rt.on:
                safely(rt.name, "subclass", adopt, rt, patch, cls, attribute)

    hook: Any = classmethod(__init_subclass__)
    wrapt.apply_patch(base, "__init_subclass__", hook)
    _hooks[base] = Applied(base, "__init_subclass__", prior, hook, prior is _MISSING)


_hooks: dict[type, Applied] = {}


def unwatch(rt: _Runtime) -> None:
    """Stop discovering subclasses for ``rt``; remove a base's hook when nobody watches it."""
    for base in list(_watchers):
        remaining = [w for w in _watchers[base] if w[0] is not rt]
        if remaining:
            _watchers[base] = remaining
            continue
        del _watchers[base]
        applied = _hooks.pop(base, None)
        if applied is not None and not applied.revert():
            _log.debug("left the __init_subclass__ hook on %r: it was replaced since", base)
    rt.watched.clear()
