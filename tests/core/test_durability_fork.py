"""fork safety: children neither deadlock nor write what their parent logged; a child that
logs gets its own writer, and its exit (normal, os._exit after multiprocessing's finalizers,
or a spawn child's) drains what it logged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from durability_fixtures import child_env, forget_store, history, run, run_info


@pytest.fixture
def store_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    uri = str(tmp_path / "store")
    yield uri
    forget_store(uri)


def assert_series(uri: str, run_id: str, key: str, n: int) -> None:
    hist = history(uri, run_id, key)
    np.testing.assert_array_equal(hist.steps, np.arange(n), err_msg=key)
    np.testing.assert_array_equal(hist.values, np.arange(n, dtype=np.float64), err_msg=key)


def test_os_fork_with_held_locks_and_mid_write(store_dir: str, tmp_path: Path) -> None:
    rc, out, err = run("fork_children.py", env=child_env(store_dir), cwd=tmp_path)
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["held_locks"] == 0, "a child forked while the writer's locks were held hung"
    assert result["children"] == [0] * 8
    run_id = result["run_id"]
    # Exactly once each: the children wrote none of the parent's pending points.
    assert_series(store_dir, run_id, "parent", result["parent_points"])
    assert_series(store_dir, run_id, "held_locks_child", 1000)
    for k in range(8):
        assert_series(store_dir, run_id, f"child{k}", 500)
    assert run_info(store_dir, run_id).status == "FINISHED"  # no child ended the parent's run


def test_multiprocessing_fork_pool_and_spawn_workers(store_dir: str, tmp_path: Path) -> None:
    rc, out, err = run("mp_children.py", env=child_env(store_dir), cwd=tmp_path, timeout=120)
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["exitcodes"] == [0] * 5
    run_id = result["run_id"]
    assert_series(store_dir, run_id, "parent", 3000)
    for rank in range(3):
        assert_series(store_dir, run_id, f"fork{rank}", 2000)
    for task in range(4):
        assert_series(store_dir, run_id, f"pool{task}", 1000)
    for rank in range(2):
        assert_series(store_dir, run_id, f"spawn{rank}", 1000)
    assert run_info(store_dir, run_id).status == "FINISHED"
