"""Shared fixtures: a fresh tracking store per test, on SQLite and on PostgreSQL.

PostgreSQL tests use a database this session creates on 127.0.0.1:5432 and drops at the end.
Where no server answers they skip with the reason, except under CI (``CI=true``) or
``MLTRAIL_REQUIRE_POSTGRES=1``, where a missing server fails the run instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_ADMIN_DSN = os.environ.get("MLTRAIL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

# Autolog tests surface our own errors (DESIGN: strict mode in the test suite).
os.environ.setdefault("MLTRAIL_AUTOLOG_STRICT", "1")
# Capture of git/packages is exercised by its own tests; elsewhere it only adds noise and time.
os.environ.setdefault("MLTRAIL_CAPTURE_PACKAGES", "false")


def _pg_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get(
        "MLTRAIL_REQUIRE_POSTGRES"
    ) == "1"


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database for this test session: its URI."""
    try:
        import psycopg  # noqa: F401

        admin = _pg_admin()
    except Exception as exc:  # noqa: BLE001 - any failure means: no server here
        if _pg_required():
            pytest.fail(f"PostgreSQL is required under CI but did not answer at {PG_ADMIN_DSN}: {exc}")
        pytest.skip(f"no PostgreSQL server answers at {PG_ADMIN_DSN}: {exc}")
    name = f"mltrail_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        from mltrail.core import store as store_mod

        store_mod._reset_for_tests()
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _truncate_pg(uri: str) -> None:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_version'"
            ).fetchall()
        ]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tracking_uri(backend: str, request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """A fresh, empty tracking store (SQLite dir or PostgreSQL database), made current."""
    import mltrail
    from mltrail.core import fluent
    from mltrail.core import store as store_mod

    if backend == "sqlite":
        uri = str(tmp_path / "store")
    else:
        uri = request.getfixturevalue("pg_database")
        _truncate_pg(uri)
        existing = store_mod._stores.get(uri)
        if existing is not None:
            existing._migrate()  # type: ignore[attr-defined] - re-creates the Default experiment
        os.environ["MLTRAIL_ARTIFACT_ROOT"] = str(tmp_path / "artifacts")
    mltrail.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        _cleanup(fluent)
        os.environ.pop("MLTRAIL_ARTIFACT_ROOT", None)
        if backend == "sqlite":
            store = store_mod._stores.pop(uri, None)
            if store is not None:
                store.close()


@pytest.fixture
def sqlite_uri(tmp_path: os.PathLike[str]) -> Iterator[str]:
    """A fresh SQLite-backed store only (for tests that are about the embedded default)."""
    import mltrail
    from mltrail.core import fluent
    from mltrail.core import store as store_mod

    uri = str(tmp_path / "store")  # type: ignore[operator]
    mltrail.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        _cleanup(fluent)
        store = store_mod._stores.pop(uri, None)
        if store is not None:
            store.close()


def _cleanup(fluent) -> None:  # type: ignore[no-untyped-def]
    from mltrail.core.writer import get_writer

    for stack in fluent._all_stacks():
        for run in list(reversed(stack)):
            try:
                fluent._end(run, "FINISHED")
            except Exception:  # noqa: BLE001 - a test may have left the store unusable
                pass
    fluent._reset_for_tests()
    writer = get_writer()
    writer.flush(timeout=5)
    writer._buffers.clear()
    writer._retained.clear()
