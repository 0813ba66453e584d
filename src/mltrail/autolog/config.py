"""The options every integration's ``autolog()`` takes, as one frozen record.

An integration with options of its own subclasses :class:`AutologConfig` (a frozen dataclass
with defaults) and names the subclass ``Config`` in its module; the engine keeps the record
in force per integration, and the integration's code reads it at call time
(``call.config`` in a patch step, or :func:`mltrail.autolog.get_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from mltrail.core.errors import InvalidValueError


@dataclass(frozen=True)
class AutologConfig:
    """Options common to every integration.

    Attributes:
        disable: turn the integration off and restore every original it patched.
        exclusive: log only into runs autolog starts itself, never into a run the user started.
        silent: no AutologWarning from this integration (details still go to DEBUG logging).
        log_models: save trained models as artifacts, where the integration can.
        log_datasets: record dataset fingerprints as run inputs, where the integration can.
        log_every_n_steps: log per-step metrics every n steps (None: the integration's default).
        extra_tags: tags set on every run that autolog starts.
        disable_for_unsupported_versions: do not patch a framework version outside the tested range
            (by default it is patched, with a warning).
    """

    disable: bool = False
    exclusive: bool = False
    silent: bool = False
    log_models: bool = True
    log_datasets: bool = True
    log_every_n_steps: int | None = None
    extra_tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    disable_for_unsupported_versions: bool = False

    def __post_init__(self) -> None:
        for name in ("disable", "exclusive", "silent", "log_models", "log_datasets",
                     "disable_for_unsupported_versions"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                msg = f"autolog option {name} must be True or False, got {value!r}"
                raise InvalidValueError(msg)
        n = self.log_every_n_steps
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            msg = f"autolog option log_every_n_steps must be a positive int or None, got {n!r}"
            raise InvalidValueError(msg)
        object.__setattr__(self, "extra_tags", _checked_tags(self.extra_tags))


def _checked_tags(tags: Any) -> Mapping[str, str]:
    if tags is None:
        return MappingProxyType({})
    if not isinstance(tags, Mapping):
        msg = f"autolog option extra_tags must be a dict of str -> str, got {type(tags).__name__}"
        raise InvalidValueError(msg)
    from mltrail.core.validation import validate_key, validate_tag_value

    return MappingProxyType(
        {validate_key(k, "tag"): validate_tag_value(k, v) for k, v in tags.items()}
    )


COMMON_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(AutologConfig))
"""The names of the common options, in order."""


def common_options(config: AutologConfig) -> dict[str, Any]:
    """The common options of ``config`` (of any subclass) as a dict."""
    return {name: getattr(config, name) for name in COMMON_OPTIONS}
