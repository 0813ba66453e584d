"""Which integrations exist, what activates them, and the framework versions they are tested on.

This table is the one place the supported version ranges live: the engine checks an installed
framework against it (an untested version warns once, or is left unpatched with
``disable_for_unsupported_versions=True``) and the noxfile reads the same numbers to pick the
oldest and newest versions it tests::

    from mltrail.autolog.registry import INTEGRATIONS
    for spec in INTEGRATIONS.values():
        print(spec.name, spec.min_version, spec.max_version)

Importing this module imports no framework (and not wrapt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mltrail.core.errors import InvalidValueError


@dataclass(frozen=True)
class Integration:
    """One framework mltrail can autolog.

    Attributes:
        name: the integration's name (``mltrail.autolog(exclude=[name])``, ``autolog_status()``).
        imports: importing any of these modules activates the integration.
        module: the integration module: ``PATCHES``, ``autolog()``, optionally ``Config``.
        distributions: the pip distributions whose installed version is checked, first found
            wins; empty for the standard library.
        min_version: the oldest tested version (inclusive).
        max_version: the newest tested release line, inclusive of its patch releases:
            ``"1.9"`` admits 1.9.0 and 1.9.4, not 1.10.
        extra: the ``pip install 'mltrail[extra]'`` that brings the framework in.
    """

    name: str
    imports: tuple[str, ...]
    module: str
    distributions: tuple[str, ...] = ()
    min_version: str | None = None
    max_version: str | None = None
    extra: str | None = None

    def supports(self, version: str) -> bool:
        """Whether ``version`` lies inside the tested range."""
        release = parse_version(version)
        if self.min_version is not None and release < parse_version(self.min_version):
            return False
        if self.max_version is not None:
            top = parse_version(self.max_version)
            if release[: len(top)] > top:
                return False
        return True

    @property
    def version_range(self) -> str:
        """The tested range in words, e.g. ``">=1.4, <=1.9.*"``."""
        parts = []
        if self.min_version:
            parts.append(f">={self.min_version}")
        if self.max_version:
            parts.append(f"<={self.max_version}.*")
        return ", ".join(parts) or "any"


_RELEASE = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


def parse_version(version: str) -> tuple[int, ...]:
    """The release numbers at the front of ``version``: ``"2.1.0rc1+cpu"`` -> ``(2, 1, 0)``."""
    match = _RELEASE.match(version)
    if match is None:
        msg = f"cannot read a release number from version {version!r}"
        raise InvalidValueError(msg)
    return tuple(int(part) for part in match.group(1).split("."))


# The framework integrations other than argparse are written separately; until a module
# exists its entry is reported as "unavailable" by autolog_status() and skipped quietly.
INTEGRATIONS: dict[str, Integration] = {
    spec.name: spec
    for spec in (
        Integration("argparse", ("argparse",), "mltrail.integrations.argparse"),
        Integration(
            "sklearn", ("sklearn",), "mltrail.integrations.sklearn", ("scikit-learn",),
            "1.4", "1.9", "sklearn",
        ),
        Integration(
            "torch", ("torch",), "mltrail.integrations.torch", ("torch",), "2.2", "2.13", "torch",
        ),
        Integration(
            "lightning", ("lightning", "pytorch_lightning"), "mltrail.integrations.lightning",
            ("lightning", "pytorch-lightning"), "2.2", "2.6", "lightning",
        ),
        Integration(
            "keras", ("keras",), "mltrail.integrations.keras", ("keras",), "3.0", "3.15", "keras",
        ),
        Integration(
            "xgboost", ("xgboost",), "mltrail.integrations.xgboost", ("xgboost", "xgboost-cpu"),
            "2.1", "3.2", "xgboost",
        ),
        Integration(
            "lightgbm", ("lightgbm",), "mltrail.integrations.lightgbm", ("lightgbm",),
            "4.0", "4.7", "lightgbm",
        ),
    )
}


def register(spec: Integration) -> None:
    """Add (or replace) an integration: for plug-ins and for the engine's own tests."""
    if not spec.imports:
        msg = f"integration {spec.name!r} needs at least one module in imports"
        raise InvalidValueError(msg)
    INTEGRATIONS[spec.name] = spec


def unregister(name: str) -> None:
    """Remove an integration added with :func:`register` (disable it first)."""
    INTEGRATIONS.pop(name, None)


def supported_versions() -> dict[str, tuple[str | None, str | None]]:
    """``{name: (min_version, max_version)}`` for every framework with a tested range."""
    return {
        spec.name: (spec.min_version, spec.max_version)
        for spec in INTEGRATIONS.values()
        if spec.distributions
    }
