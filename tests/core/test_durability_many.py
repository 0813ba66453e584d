"""Many writers: 8 processes logging 100,000 points each, at the same time, into one store.

Every point is stored, in order, and no error ("database is locked" or any other) reaches the
processes: each exits 0 with nothing on stderr.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from durability_fixtures import (
    child_env,
    finish,
    forget_store,
    history,
    pg_uri,  # noqa: F401 - a fixture
    read_status,
    run_info,
    start,
)

N_PROCS = 8
N_POINTS = 100_000


def run_many(uri: str, tmp_path: Path) -> None:
    env = child_env(uri)
    procs = [
        (
            tmp_path / f"status{i}.json",
            start(
                "log_points.py",
                str(tmp_path / f"status{i}.json"),
                "--count",
                str(N_POINTS),
                "--run-name",
                f"writer-{i}",
                "--then",
                "end",
                env=env,
                cwd=tmp_path,
            ),
        )
        for i in range(N_PROCS)
    ]
    run_ids = []
    for status, proc in procs:
        rc, _out, err = finish(proc, timeout=120)
        assert rc == 0, err
        assert err == "", err  # no warning, no "database is locked", nothing
        run_ids.append(read_status(status)["run_id"])
    assert len(set(run_ids)) == N_PROCS
    expected = np.arange(N_POINTS)
    for run_id in run_ids:
        hist = history(uri, run_id, "x")
        np.testing.assert_array_equal(hist.steps, expected)
        np.testing.assert_array_equal(hist.values, expected.astype(np.float64))
        assert run_info(uri, run_id).status == "FINISHED"


def test_eight_processes_one_sqlite_store(tmp_path: Path) -> None:
    uri = str(tmp_path / "store")
    try:
        run_many(uri, tmp_path)
    finally:
        forget_store(uri)


@pytest.mark.postgres
def test_eight_processes_one_postgres_database(pg_uri: str, tmp_path: Path) -> None:  # noqa: F811
    run_many(pg_uri, tmp_path)
