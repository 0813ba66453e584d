"""Faults of the store, for real: a full disk, a read-only file, a PostgreSQL server restarted
mid-run. Training never crashes; what was logged is held (up to a bound) and written when the
store recovers; what could not be kept is counted, warned once and recorded on the run.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from durability_fixtures import (
    child_env,
    file_modes_bind,
    finish,
    forget_store,
    history,
    pg_server,  # noqa: F401 - a fixture
    pg_uri,  # noqa: F401 - a fixture
    read_status,
    run,
    run_info,
    start,
    wait_for,
)


@pytest.fixture
def store_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    uri = str(tmp_path / "store")
    yield uri
    forget_store(uri)


def make_run(uri: str) -> str:
    from mltrail import Client

    return str(Client(uri).create_run("0").info.run_id)


def readonly_child(
    uri: str, tmp_path: Path, run_id: str, counts: tuple[int, int, int], **env: str
) -> tuple[dict[str, bool], str]:
    db = Path(uri) / "mltrail.db"
    os.chmod(db, 0o444)
    try:
        rc, out, err = run(
            "readonly_client.py",
            str(db),
            run_id,
            *(str(c) for c in counts),
            env=child_env(uri, **env),
            cwd=tmp_path,
            **file_modes_bind(),
        )
    finally:
        os.chmod(db, 0o644)
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def test_read_only_store_file_holds_points_until_writable(store_dir: str, tmp_path: Path) -> None:
    run_id = make_run(store_dir)
    result, err = readonly_child(store_dir, tmp_path, run_id, (5000, 5000, 1000))
    assert result == {"held": False, "recovered": True, "after": True}
    # Warned once, with the cause; nothing else on stderr (no traceback, no error).
    assert err.count("StoreUnavailableWarning") == 1, err
    assert "readonly database" in err
    assert "Traceback" not in err
    hist = history(store_dir, run_id, "x")
    expected = np.concatenate([np.arange(10_000), np.arange(10_000, 11_000)])
    np.testing.assert_array_equal(hist.steps, expected)
    np.testing.assert_array_equal(hist.values, expected.astype(np.float64))


def test_memory_bound_drops_counts_warns_once_and_records(store_dir: str, tmp_path: Path) -> None:
    """With at most 5,000 points held: of 8,000 logged while the store is read-only the newest
    3,000 are dropped, the next 2,000 are refused, and logging resumes once it is writable."""
    run_id = make_run(store_dir)
    result, err = readonly_child(
        store_dir, tmp_path, run_id, (8000, 2000, 1000), MLTRAIL_MAX_PENDING_POINTS="5000"
    )
    assert result == {"held": False, "recovered": True, "after": True}
    assert err.count("DataLossWarning") == 1, err
    assert err.count("StoreUnavailableWarning") == 1, err
    hist = history(store_dir, run_id, "x")
    expected = np.concatenate([np.arange(5000), np.arange(10_000, 11_000)])
    np.testing.assert_array_equal(hist.steps, expected)
    from mltrail import Client

    assert Client(store_dir).get_run(run_id).data.tags["mltrail.dropped_points"] == "5000"
    with sqlite3.connect(Path(store_dir) / "mltrail.db") as conn:
        (dropped,) = conn.execute("SELECT dropped_points FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
    assert dropped == 5000


def test_full_disk_holds_points_until_space_returns(store_dir: str, tmp_path: Path) -> None:
    rc, out, err = run("disk_full.py", env=child_env(store_dir), cwd=tmp_path)
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["full"] is False  # the store could not be written...
    assert result["recovered"] is True  # ...and everything held was written afterwards
    assert err.count("StoreUnavailableWarning") == 1, err
    assert "Traceback" not in err
    hist = history(store_dir, result["run_id"], "x")
    np.testing.assert_array_equal(hist.steps, np.arange(result["logged"]))
    np.testing.assert_array_equal(hist.values, np.arange(result["logged"], dtype=np.float64))
    assert run_info(store_dir, result["run_id"]).status == "FINISHED"


@pytest.mark.postgres
def test_postgres_server_restarted_mid_run(pg_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Our own server (never the shared one) is stopped while the run logs and started again."""
    uri = pg_server.uri
    status = tmp_path / "status.json"
    gates = [tmp_path / "server-down", tmp_path / "server-up"]
    # Phase 0 flushes fully; phase 1 tries briefly, with the server down.
    phases = [f"30:{gates[0]}", f"0.5:{gates[1]}"]
    proc = start("phased.py", str(status), "10000", *phases, env=child_env(uri), cwd=tmp_path)
    wait_for(lambda: read_status(status).get("phase") == 0, "the first phase", proc=proc)
    run_id = read_status(status)["run_id"]
    assert len(history(uri, run_id, "x")) == 10_000  # flushed: the child's session is live
    pg_server.stop()
    try:
        gates[0].touch()
        wait_for(lambda: read_status(status).get("phase") == 1, "logging with the server down", proc=proc)
    finally:
        pg_server.start()
    gates[1].touch()
    rc, _out, err = finish(proc)
    assert rc == 0, err
    assert read_status(status)["flushed"] == [True, False]  # the store really was down
    assert err.count("StoreUnavailableWarning") == 1, err
    assert "Traceback" not in err
    # Our own reader's session died with the restart too: reads reconnect.
    hist = history(uri, run_id, "x")
    np.testing.assert_array_equal(hist.steps, np.arange(30_000))
    np.testing.assert_array_equal(hist.values, np.arange(30_000, dtype=np.float64))
    assert run_info(uri, run_id).status == "FINISHED"


@pytest.mark.postgres
def test_postgres_sessions_killed_under_a_live_run(pg_uri: str) -> None:  # noqa: F811
    """pg_terminate_backend on every session of the store (what a restart or failover does to
    them): the writer and the readers reconnect; nothing logged is lost or doubled."""
    import psycopg
    from durability_fixtures import PG_ADMIN_DSN

    import mltrail
    from mltrail import Client
    from mltrail.core.writer import get_writer

    name = pg_uri.rsplit("/", 1)[1]

    def kill_sessions() -> int:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchall()
        return len(rows)

    client = Client(pg_uri)
    run_id = client.create_run("0").info.run_id
    for round_ in range(3):
        for i in range(round_ * 1000, (round_ + 1) * 1000):
            client.log_metric(run_id, "x", float(i), step=i)
        assert get_writer().flush(timeout=30)
        assert kill_sessions() >= 1
        assert client.get_run(run_id).info.status == "RUNNING"  # a read right after the kill
    client.set_terminated(run_id)
    hist = client.get_metric_history(run_id, "x")
    np.testing.assert_array_equal(hist.steps, np.arange(3000))
    assert client.get_run(run_id).info.status == "FINISHED"
    del mltrail
