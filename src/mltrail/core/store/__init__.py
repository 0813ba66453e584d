"""Tracking URIs and the stores behind them.

=========================================  ==================================================
URI                                        store
=========================================  ==================================================
(none) / ``MLTRAIL_TRACKING_URI`` unset    ``./mltrail-runs``: ``mltrail.db`` + ``artifacts/``
``/some/dir``, ``file:///some/dir``        the same layout in that directory
``sqlite:///path/to/file.db``              that SQLite file; artifacts beside it
``postgresql://user@host:port/db``         PostgreSQL; artifacts under ``MLTRAIL_ARTIFACT_ROOT``
``http(s)://...``                          reserved for the tracking server (not yet served)
=========================================  ==================================================
"""

from __future__ import annotations

import os
import threading
from urllib.parse import unquote, urlparse

from mltrail.core.errors import UnsupportedTrackingURIError
from mltrail.core.store.base import PagedList, RunStart, Store, WriteBatch

__all__ = [
    "DEFAULT_STORE_DIR",
    "PagedList",
    "RunStart",
    "Store",
    "WriteBatch",
    "get_store",
    "resolve_tracking_uri",
]

DEFAULT_STORE_DIR = "mltrail-runs"
_stores: dict[str, Store] = {}
_lock = threading.Lock()


def resolve_tracking_uri(uri: str | None) -> str:
    """Return the tracking URI in force: ``uri``, else the environment, else the default folder."""
    if uri:
        return uri
    env = os.environ.get("MLTRAIL_TRACKING_URI")
    if env:
        return env
    return os.path.abspath(DEFAULT_STORE_DIR)


def _local_dir(uri: str) -> str | None:
    if uri.startswith("file://"):
        return unquote(urlparse(uri).path)
    if "://" not in uri and not uri.startswith(("sqlite:", "postgresql:", "postgres:")):
        return uri
    return None


def get_store(uri: str | None = None) -> Store:
    """Return the (process-wide, cached) store for ``uri``."""
    resolved = resolve_tracking_uri(uri)
    store = _stores.get(resolved)
    if store is not None:
        return store
    with _lock:
        store = _stores.get(resolved)
        if store is None:
            store = _open(resolved)
            _stores[resolved] = store
    return store


def _open(uri: str) -> Store:
    from mltrail.core.store import sql

    directory = _local_dir(uri)
    if directory is not None:
        directory = os.path.abspath(os.path.expanduser(directory))
        os.makedirs(directory, exist_ok=True)
        return sql.open_sqlite(
            os.path.join(directory, "mltrail.db"), os.path.join(directory, "artifacts"), uri
        )
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else uri.split(":", 1)[0].lower()
    if scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not path:
            msg = f"SQLite tracking URIs look like sqlite:///relative.db or sqlite:////abs/path.db, got {uri!r}"
            raise UnsupportedTrackingURIError(msg)
        path = os.path.abspath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return sql.open_sqlite(path, os.path.join(os.path.dirname(path), "artifacts"), uri)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        from mltrail.core.errors import require

        require("psycopg", "postgres")
        root = os.environ.get("MLTRAIL_ARTIFACT_ROOT") or os.path.abspath(
            os.path.join(DEFAULT_STORE_DIR, "artifacts")
        )
        return sql.open_postgres(uri, root)
    if scheme in ("http", "https"):
        msg = (
            f"tracking URI {uri!r}: http(s) is reserved for the mltrail tracking server, which is "
            "not available yet; use a local directory or a postgresql:// URI"
        )
        raise UnsupportedTrackingURIError(msg)
    msg = (
        f"tracking URI {uri!r} has an unsupported scheme {scheme!r}; use a directory path, "
        "file://, sqlite:/// or postgresql://"
    )
    raise UnsupportedTrackingURIError(msg)


def _after_fork_in_child() -> None:
    # The parent may have held the lock mid-open at fork time; the child starts with a free one.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _reset_for_tests() -> None:
    with _lock:
        for store in _stores.values():
            store.close()
        _stores.clear()
