"""The engine: turning integrations on and off, whatever the import order.

Enabling an integration records its config and watches the modules that activate it
(``Integration.imports``) with wrapt's post-import hooks: if one is imported already the
integration activates at once, otherwise on its first import — so ``autolog()`` before or after
``import sklearn`` gives the same result (invariant 2). Activating imports the integration
module, checks the framework's version against the registry, and applies the module's
``PATCHES``; a patch whose owner module is not imported yet waits for it the same way. The
engine itself never imports a framework module.

Disabling reverts every slot it patched to the very object that was there
(``vars(Owner)[attr] is original``). Post-import hooks cannot be withdrawn from wrapt; a hook
that fires for an integration no longer wanted does nothing.

wrapt is imported only here, and only when something is enabled: ``import mltrail.autolog``
stays light.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mltrail.autolog import _safety, registry, runs
from mltrail.autolog.config import AutologConfig, common_options
from mltrail.core.errors import InvalidValueError

if TYPE_CHECKING:
    from mltrail.autolog._wrapping import Applied
    from mltrail.autolog.call import Patch

_log = logging.getLogger("mltrail.autolog")
_lock = threading.RLock()
_runtimes: dict[str, _Runtime] = {}
_hooked: set[str] = set()  # module names with a wrapt post-import hook of ours pending


class _Runtime:
    """The engine's live state for one integration (``on`` is read on every patched call)."""

    def __init__(self, spec: registry.Integration) -> None:
        self.name = spec.name
        self.spec = spec
        self.config: AutologConfig = AutologConfig()
        self.wanted = False  # enabled by the user (maybe waiting for an import)
        self.on = False  # activated: the patches do their work
        self.state = "off"
        self.version: str | None = None
        self.applied: list[Applied] = []
        self.deferred: dict[str, list[Patch]] = {}
        self.watched: list[tuple[type, Patch, str]] = []

    def __repr__(self) -> str:
        return f"<autolog integration {self.name}: {self.state}>"


@dataclass(frozen=True)
class IntegrationStatus:
    """What :func:`autolog_status` says about one integration.

    Attributes:
        name: the integration.
        enabled: autolog is on for it (it may still be waiting for the framework's import).
        state: ``"off"``; ``"waiting"`` for the framework to be imported; ``"active"``;
            ``"unavailable"`` (no integration module in this mltrail); ``"unsupported"``
            (untested framework version and ``disable_for_unsupported_versions=True``).
        version: the framework version found, if known.
        supported: the tested version range.
        patched: the slots patched now, as ``module:Class.attribute``.
        waiting_for: modules whose import will apply further patches.
        config: the options in force.
    """

    name: str
    enabled: bool
    state: str
    version: str | None
    supported: str
    patched: tuple[str, ...]
    waiting_for: tuple[str, ...]
    config: AutologConfig


# ---------------------------------------------------------------------- enabling
def _runtime(name: str) -> _Runtime:
    spec = registry.INTEGRATIONS.get(name)
    if spec is None:
        known = ", ".join(sorted(registry.INTEGRATIONS))
        msg = f"no autolog integration is named {name!r}; known: {known}"
        raise InvalidValueError(msg)
    rt = _runtimes.get(name)
    if rt is None or rt.spec is not spec:
        if rt is not None:
            _turn_off(rt)
        rt = _runtimes[name] = _Runtime(spec)
    return rt


def enable(name: str, config: AutologConfig | None = None) -> None:
    """Turn integration ``name`` on with ``config`` (or off, with ``config.disable``).

    Integration modules call this from their ``autolog()``. Calling it again only replaces
    the config: each slot keeps one wrapper.
    """
    config = AutologConfig() if config is None else config
    if not isinstance(config, AutologConfig):
        msg = f"autolog config must be an AutologConfig, got {type(config).__name__}"
        raise InvalidValueError(msg)
    with _lock:
        rt = _runtime(name)
        rt.config = _merge(rt, config)
        if rt.config.silent:
            _safety.silenced.add(name)
        else:
            _safety.silenced.discard(name)
        if config.disable:
            _turn_off(rt)
            return
        if rt.wanted and rt.state in ("waiting", "active"):
            return
        rt.wanted = True
        runs.install_start_hook()
        if not _module_exists(rt.spec.module):
            rt.state = "unavailable"
            _log.debug("autolog %s: no module %s; skipped", name, rt.spec.module)
            return
        rt.state = "waiting"
        for module_name in rt.spec.imports:
            _watch(module_name)


def disable(name: str) -> None:
    """Turn integration ``name`` off and restore everything it patched."""
    enable(name, dataclasses.replace(get_config(name), disable=True))


def get_config(name: str) -> AutologConfig:
    """The config in force for integration ``name`` (defaults if it was never enabled)."""
    rt = _runtimes.get(name)
    return rt.config if rt is not None else AutologConfig()


def _merge(rt: _Runtime, config: AutologConfig) -> AutologConfig:
    """Keep an integration's own options when only the common ones are given (mltrail.autolog)."""
    if type(config) is AutologConfig and type(rt.config) is not AutologConfig:
        return dataclasses.replace(rt.config, **common_options(config))
    return config


def _module_exists(module: str) -> bool:
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _watch(module_name: str) -> None:
    """Call :func:`_dispatch` for ``module_name`` now if it is imported, else on its import."""
    module = sys.modules.get(module_name)
    if module is not None:
        _dispatch(module)
        return
    if module_name in _hooked:
        return
    import wrapt

    _hooked.add(module_name)
    wrapt.register_post_import_hook(_on_import, module_name)


def _on_import(module: ModuleType) -> None:
    """wrapt's post-import hook: runs in the importing thread, right after the import."""
    with _lock:
        _hooked.discard(getattr(module, "__name__", ""))
        _dispatch(module)


def _dispatch(module: ModuleType) -> None:
    for rt in list(_runtimes.values()):
        if rt.wanted:
            _safety.safely(rt.name, "import", _on_module, rt, module)


def _on_module(rt: _Runtime, module: ModuleType) -> None:
    from mltrail.autolog import _wrapping

    name = module.__name__
    if rt.state == "waiting" and name in rt.spec.imports:
        _activate(rt)
    if not rt.on:
        return
    for patch in rt.deferred.pop(name, ()):
        _safety.safely(rt.name, f"patch {patch.target}", _wrapping.apply_patch, rt, patch, module)
    if rt.watched:
        _wrapping.rescan(rt)


def _activate(rt: _Runtime) -> None:
    from mltrail.autolog import _wrapping

    spec = rt.spec
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        if exc.name and (spec.module == exc.name or spec.module.startswith(exc.name + ".")):
            rt.state = "unavailable"
            _log.debug("autolog %s: no module %s; skipped", rt.name, spec.module)
            return
        raise
    rt.version = _installed_version(spec, sys.modules.get(spec.imports[0]))
    if rt.version is not None and not spec.supports(rt.version):
        dist = spec.distributions[0] if spec.distributions else rt.name
        if rt.config.disable_for_unsupported_versions:
            rt.state = "unsupported"
            _safety.warn_once(rt.name, "version", (
                f"mltrail autolog for {rt.name}: {dist} {rt.version} is outside the tested range "
                f"({spec.version_range}) and disable_for_unsupported_versions=True: not patched."
            ))
            return
        _safety.warn_once(rt.name, "version", (
            f"mltrail autolog for {rt.name}: {dist} {rt.version} is outside the tested range "
            f"({spec.version_range}); autologging may miss things. Pass "
            "disable_for_unsupported_versions=True to leave untested versions alone."
        ))
    config_cls = getattr(module, "Config", None)
    if (
        isinstance(config_cls, type)
        and issubclass(config_cls, AutologConfig)
        and not isinstance(rt.config, config_cls)
    ):
        rt.config = config_cls(**common_options(rt.config))
    rt.on = True
    rt.state = "active"
    for patch in getattr(module, "PATCHES", ()):
        owner = sys.modules.get(patch.owner)
        if owner is not None:
            _safety.safely(rt.name, f"patch {patch.target}", _wrapping.apply_patch, rt, patch, owner)
        else:
            rt.deferred.setdefault(patch.owner, []).append(patch)
            _watch(patch.owner)


def _installed_version(spec: registry.Integration, module: ModuleType | None) -> str | None:
    if not spec.distributions:
        return None
    from importlib import metadata

    for dist in spec.distributions:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    version = getattr(module, "__version__", None)
    return version if isinstance(version, str) else None


def _turn_off(rt: _Runtime) -> None:
    rt.wanted = False
    rt.on = False
    if rt.applied or rt.watched:
        from mltrail.autolog import _wrapping

        _wrapping.unwatch(rt)
        for applied in reversed(rt.applied):
            applied.revert()
    rt.applied.clear()
    rt.deferred.clear()
    rt.state = "off"
    runs.drop_held(rt.name)


def disable_all() -> None:
    """Turn every integration off and restore every original."""
    with _lock:
        for rt in list(_runtimes.values()):
            _turn_off(rt)


# ---------------------------------------------------------------------- the public face
def autolog(
    *,
    disable: bool = False,
    exclusive: bool = False,
    silent: bool = False,
    log_models: bool = True,
    log_datasets: bool = True,
    log_every_n_steps: int | None = None,
    extra_tags: Mapping[str, str] | None = None,
    disable_for_unsupported_versions: bool = False,
    exclude: Iterable[str] = (),
) -> None:
    """Autolog every supported framework that is installed, now or when it is imported later.

    Each integration's own options keep their defaults (or what its ``autolog()`` set);
    ``mltrail.integrations.<framework>.autolog(...)`` sets them.

    Args:
        disable: turn autolog off and restore every original.
        exclusive: log only into runs autolog starts, never into a run the user started.
        silent: no warnings from autolog (details still go to DEBUG logging).
        log_models: save trained models as artifacts.
        log_datasets: record dataset fingerprints as run inputs.
        log_every_n_steps: log per-step metrics every n steps (None: each integration's default).
        extra_tags: tags set on every run autolog starts.
        disable_for_unsupported_versions: leave framework versions outside the tested range
            unpatched (they are patched, with a warning, by default).
        exclude: integration names to leave as they are (see :func:`autolog_status`).

    Example:
        >>> import mltrail
        >>> mltrail.autolog()
        >>> from sklearn.linear_model import LogisticRegression
        >>> LogisticRegression().fit(X, y)  # a run with params, metrics and the model
    """
    config = AutologConfig(
        disable=disable,
        exclusive=exclusive,
        silent=silent,
        log_models=log_models,
        log_datasets=log_datasets,
        log_every_n_steps=log_every_n_steps,
        extra_tags=extra_tags if extra_tags is not None else {},
        disable_for_unsupported_versions=disable_for_unsupported_versions,
    )
    excluded = {exclude} if isinstance(exclude, str) else set(exclude)
    unknown = excluded - set(registry.INTEGRATIONS)
    if unknown:
        known = ", ".join(sorted(registry.INTEGRATIONS))
        msg = f"autolog(exclude=...) names unknown integrations {sorted(unknown)}; known: {known}"
        raise InvalidValueError(msg)
    for name in list(registry.INTEGRATIONS):
        if name not in excluded:
            enable(name, config)


def autolog_status() -> dict[str, IntegrationStatus]:
    """Which integrations are on, and what each has patched.

    Example:
        >>> mltrail.autolog()
        >>> mltrail.autolog_status()["argparse"].patched
        ('argparse:ArgumentParser.parse_args', ...)
    """
    with _lock:
        result = {}
        for name, spec in registry.INTEGRATIONS.items():
            rt = _runtimes.get(name)
            if rt is None or rt.spec is not spec:
                rt = _Runtime(spec)
            result[name] = IntegrationStatus(
                name=name,
                enabled=rt.wanted,
                state=rt.state,
                version=rt.version,
                supported=spec.version_range,
                patched=tuple(
                    a.describe(name) for a in rt.applied if a.parent is not None
                ),
                waiting_for=tuple(sorted(rt.deferred)),
                config=rt.config,
            )
        return result


def _patched_objects(name: str) -> list[Any]:
    """The wrappers integration ``name`` has in place (for tests)."""
    rt = _runtimes.get(name)
    return [a.replacement for a in rt.applied] if rt is not None else []
