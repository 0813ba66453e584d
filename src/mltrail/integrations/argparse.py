"""Autolog for :mod:`argparse`: the parsed command line becomes the run's params.

What is captured: every value of the namespace that ``ArgumentParser.parse_args`` (or
``parse_known_args``, ``parse_intermixed_args``, ``parse_known_intermixed_args``) returns,
as a param named after its ``dest`` (with an optional prefix). Callables set with
``set_defaults(func=...)`` are left out; an open file logs its name.

Where it goes: into the active run; with no active run, the params are held and logged into
the next run that starts — the user's ``start_run()`` or a run autolog starts for a ``fit``.
Nested parsing (``parse_args`` calling ``parse_known_args``, sub-parsers) is recorded once.

Where it hooks in: the four ``ArgumentParser.parse_*args`` methods (``Patch(run="active")``:
argparse never starts a run). Tested versions: the standard library of every supported Python.

Example::

    import argparse, mltrail
    mltrail.autolog()
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    with mltrail.start_run():      # params lr=0.1 are already in this run
        ...
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from mltrail.autolog import AutologConfig, Call, Patch, enable, hold_params

NAME = "argparse"
_log = logging.getLogger("mltrail.integrations.argparse")


@dataclass(frozen=True)
class Config(AutologConfig):
    """argparse's options on top of the common ones.

    Attributes:
        prefix: put before every param name (``"args."`` logs ``args.lr``).
        exclude: dest names never logged (secrets such as ``api_key``).
    """

    prefix: str = ""
    exclude: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        super().__post_init__()
        exclude = self.exclude
        object.__setattr__(self, "exclude", frozenset([exclude] if isinstance(exclude, str) else exclude))


# ---------------------------------------------------------------------- pure helpers
def namespace_params(
    namespace: Any, *, prefix: str = "", exclude: Collection[str] = ()
) -> dict[str, str]:
    """The loggable params of a parsed namespace: ``{prefix + dest: value as text}``.

    Leaves out private attributes, ``exclude``\\ d dests, callables (``set_defaults(func=...)``)
    and what cannot be a param (a key with characters keys may not hold, a value longer than
    a param may be), logging each omission at DEBUG.
    """
    from mltrail.core.errors import InvalidInputError
    from mltrail.core.validation import validate_key, validate_param_value

    try:
        items: Mapping[str, Any] = vars(namespace)
    except TypeError:
        return {}
    params: dict[str, str] = {}
    for dest, value in items.items():
        if not isinstance(dest, str) or dest.startswith("_") or dest in exclude:
            continue
        if _is_file(value):
            value = value.name
        elif callable(value):
            continue
        key = prefix + dest
        try:
            params[validate_key(key, "param")] = validate_param_value(key, value)
        except InvalidInputError as exc:
            _log.debug("argparse: not logging %r: %s", key, exc)
    return params


def _is_file(value: Any) -> bool:
    return hasattr(value, "name") and hasattr(value, "mode") and (
        hasattr(value, "read") or hasattr(value, "write")
    )


# ---------------------------------------------------------------------- the patch
def _post(call: Call, result: Any) -> None:
    namespace = result[0] if isinstance(result, tuple) else result
    config = call.config
    prefix: str = getattr(config, "prefix", "")
    exclude: frozenset[str] = getattr(config, "exclude", frozenset())
    params = namespace_params(namespace, prefix=prefix, exclude=exclude)
    if not params:
        return
    if call.run:
        call.run.log_params(params)
    else:
        hold_params(NAME, params)


PATCHES = tuple(
    Patch(owner="argparse", path=f"ArgumentParser.{method}", post=_post, run="active")
    for method in (
        "parse_args",
        "parse_known_args",
        "parse_intermixed_args",
        "parse_known_intermixed_args",
    )
)


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
    prefix: str = "",
    exclude: Collection[str] = (),
) -> None:
    """Log parsed command-line arguments as params of the active (or next) run.

    Args:
        disable: stop, and restore argparse's methods.
        exclusive: log only into runs autolog starts (held params wait for one).
        silent: no warnings from this integration.
        log_models, log_datasets, log_every_n_steps: accepted for uniformity; unused here.
        extra_tags: unused here (argparse never starts a run).
        disable_for_unsupported_versions: unused here (argparse is the standard library's).
        prefix: put before every param name.
        exclude: dest names never logged.

    Example:
        >>> from mltrail.integrations import argparse as argparse_autolog
        >>> argparse_autolog.autolog(prefix="args.", exclude=["api_key"])
    """
    enable(NAME, Config(**locals()))
