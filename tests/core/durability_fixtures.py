"""Helpers for the durability and fault tests: child processes, polling, PostgreSQL servers.

The tests here start real Python processes (scripts in ``tests/core/procs/``), send them real
signals and break their store for real; they assert on what the store recorded. Nothing is
timed: every wait is a bounded polling loop that fails with a message when it runs out.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

PROCS = Path(__file__).parent / "procs"
PG_ADMIN_DSN = os.environ.get("MLTRAIL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
T = TypeVar("T")

# Fast settings for children: a 0.1 s flush interval, a heartbeat every 0.2 s that goes stale
# after 1 s, and no git/package/entry-point capture (it is not what these tests are about).
FAST_ENV = {
    "MLTRAIL_FLUSH_INTERVAL": "0.1",
    "MLTRAIL_HEARTBEAT_INTERVAL": "0.2",
    "MLTRAIL_HEARTBEAT_TIMEOUT": "1",
    "MLTRAIL_FLUSH_TIMEOUT": "20",
    "MLTRAIL_CAPTURE_GIT": "false",
    "MLTRAIL_CAPTURE_PACKAGES": "false",
    "MLTRAIL_CAPTURE_ENTRY_POINT": "false",
}


def child_env(uri: str, **extra: str) -> dict[str, str]:
    """The environment of a child process that tracks into ``uri``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLTRAIL_", "SLURM_"))}
    env.update(FAST_ENV)
    env["MLTRAIL_TRACKING_URI"] = uri
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start(script: str, *args: str, env: dict[str, str], cwd: Path, **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``procs/<script>`` with this interpreter, in a process group of its own."""
    return subprocess.Popen(
        [sys.executable, str(PROCS / script), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 90.0) -> tuple[int, str, str]:
    """Wait for ``proc`` (killing its whole group if it hangs) and return (rc, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # forked grandchildren hold the pipes too
        out, err = proc.communicate()
        pytest.fail(f"child did not finish within {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err


def run(
    script: str, *args: str, env: dict[str, str], cwd: Path, timeout: float = 90.0, **kwargs: Any
) -> tuple[int, str, str]:
    return finish(start(script, *args, env=env, cwd=cwd, **kwargs), timeout)


def wait_for(
    predicate: Callable[[], T], what: str, timeout: float = 60.0, proc: subprocess.Popen[str] | None = None
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"child exited ({proc.returncode}) while waiting for {what}\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what} after {timeout} s")
        time.sleep(0.05)


def read_status(path: Path) -> dict[str, Any]:
    """The JSON a child last wrote to ``path`` (``{}`` before the first write)."""
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def history(uri: str, run_id: str, key: str) -> Any:
    """A metric's history as read by a fresh reader of the store."""
    from mltrail import Client

    return Client(uri).get_metric_history(run_id, key)


def run_info(uri: str, run_id: str) -> Any:
    from mltrail import Client

    return Client(uri).get_run(run_id).info


def forget_store(uri: str) -> None:
    """Close and drop this process's cached store for ``uri``."""
    from mltrail.core import store as store_mod

    store = store_mod._stores.pop(uri, None)
    if store is not None:
        store.close()


def count_in(text: str, needle: str) -> int:
    return text.count(needle)


# ---------------------------------------------------------------------- privileges
def drop_file_override() -> None:
    """preexec_fn: run the child without CAP_DAC_OVERRIDE, so file modes bind even for root.

    Dropping it from the bounding set before exec leaves the new program without it. Needs
    CAP_SETPCAP, which root has in the usual containers.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override = 24, 1
    if libc.prctl(pr_capbset_drop, cap_dac_override, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE) failed")


def file_modes_bind() -> dict[str, Any]:
    """subprocess kwargs under which a child is refused writes to a mode-0444 file."""
    if os.geteuid() == 0:
        return {"preexec_fn": drop_file_override}
    return {}


# ---------------------------------------------------------------------- PostgreSQL
def _pg_required() -> bool:
    return (
        os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("MLTRAIL_REQUIRE_POSTGRES") == "1"
    )


def _no_server(reason: str) -> None:
    if _pg_required():
        pytest.fail(f"PostgreSQL is required here: {reason}")
    pytest.skip(reason)


@pytest.fixture
def pg_uri() -> Iterator[str]:
    """A new, empty database on the shared server (127.0.0.1:5432), dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure means: no server here
        _no_server(f"no PostgreSQL server answers at {PG_ADMIN_DSN}: {exc}")
    name = f"mltrail_test_{uuid.uuid4().hex}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    uri = f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    try:
        yield uri
    finally:
        forget_store(uri)
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class PgServer:
    """A throwaway PostgreSQL server of our own (never the shared one), to stop and start."""

    bindir: str
    data: str
    sockdir: str
    port: int
    as_postgres: list[str]

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        cmd = [*self.as_postgres, f"{self.bindir}/pg_ctl", "-D", self.data, "-w", "-t", "60", *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=90)

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c synchronous_commit=off"
        )
        self._ctl("-l", f"{self.sockdir}/server.log", "-o", opts, "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    """initdb + pg_ctl from the installed server binaries, on a free port, in a tmp dir."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        _no_server(f"psycopg is not installed: {exc}")
    found = [
        d
        for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        if os.path.exists(f"{d}/initdb") and os.path.exists(f"{d}/pg_ctl")
    ]
    if not found:
        _no_server("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    bindir = found[-1]
    root = tempfile.mkdtemp(prefix="mltrail-pg-")
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    server = PgServer(bindir, f"{root}/data", root, _free_port(), as_postgres)
    subprocess.run(
        [
            *as_postgres,
            f"{bindir}/initdb",
            "-D",
            server.data,
            "-U",
            "postgres",
            "--auth=trust",
            "-N",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    server.start()
    try:
        yield server
    finally:
        forget_store(server.uri)
        with contextlib.suppress(Exception):
            server._ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
