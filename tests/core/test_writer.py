"""The background writer's hold-and-retry path, in this process, with the store's writes made
to fail: what is held, in which order, what is dropped and how it is reported.

The real faults (full disk, read-only file, PostgreSQL restart) are in test_faults.py; here the
store's ``write_batch`` is wrapped to fail on demand, so each rule can be checked exactly.
"""

from __future__ import annotations

import logging
import sqlite3
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import mltrail
from mltrail import Client
from mltrail.core.store import get_store
from mltrail.core.writer import DataLossWarning, StoreUnavailableWarning, get_writer


class Breakable:
    """Wraps a store's write_batch: while ``broken``, every write fails as a full disk does."""

    def __init__(self, store: Any) -> None:
        self.write_batch = store.write_batch
        self.broken = False
        self.failures = 0

    def __call__(self, batch: Any) -> None:
        if self.broken:
            self.failures += 1
            raise sqlite3.OperationalError("database or disk is full")
        self.write_batch(batch)


@pytest.fixture
def breakable(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Breakable]:
    store = get_store(sqlite_uri)
    wrapper = Breakable(store)
    monkeypatch.setattr(store, "write_batch", wrapper)
    writer = get_writer()
    monkeypatch.setattr(writer, "_warned_store", False)
    monkeypatch.setattr(writer, "_warned_dropped", False)
    yield wrapper
    wrapper.broken = False
    writer.flush(timeout=5)


def test_a_failing_store_never_raises_into_training_even_with_warnings_as_errors(
    breakable: Breakable, caplog: pytest.LogCaptureFixture
) -> None:
    # As under pytest's filterwarnings=error: a warning raised as an exception must not escape
    # the writer (nor kill its thread); it becomes a log record instead.
    writer = get_writer()
    breakable.broken = True
    with (
        warnings.catch_warnings(),
        caplog.at_level(logging.WARNING, logger="mltrail.writer"),
        mltrail.start_run() as run,
    ):
        warnings.simplefilter("error")
        for i in range(1000):
            mltrail.log_metric("x", float(i), step=i)
        assert writer.flush(timeout=0.2) is False
        assert breakable.failures >= 1
        for i in range(1000, 2000):
            mltrail.log_metric("x", float(i), step=i)
        assert writer._thread is not None and writer._thread.is_alive()
        breakable.broken = False
        assert writer.flush(timeout=10) is True
    records = [r for r in caplog.records if "StoreUnavailableWarning" in r.getMessage()]
    assert len(records) == 1
    hist = Client().get_metric_history(run.info.run_id, "x")
    np.testing.assert_array_equal(hist.steps, np.arange(2000))
    assert Client().get_run(run.info.run_id).info.status == "FINISHED"


def test_store_failure_warns_once_per_outage(breakable: Breakable) -> None:
    writer = get_writer()
    with mltrail.start_run():
        breakable.broken = True
        with pytest.warns(StoreUnavailableWarning, match="database or disk is full") as caught:
            mltrail.log_metric("x", 1.0)
            writer.flush(timeout=0.2)
            mltrail.log_metric("x", 2.0)
            writer.flush(timeout=0.2)
        assert len([w for w in caught if w.category is StoreUnavailableWarning]) == 1
        breakable.broken = False
        assert writer.flush(timeout=10)


def test_held_tag_changes_keep_the_last_word(breakable: Breakable) -> None:
    """Batches held across failed writes are folded; a set after a delete (and the reverse)
    still ends as the user left it."""
    writer = get_writer()
    breakable.broken = True
    with pytest.warns(StoreUnavailableWarning), mltrail.start_run() as run:
        mltrail.set_tags({"a": "1", "b": "1"})
        writer.flush(timeout=0.1)
        mltrail.delete_tag("a")
        mltrail.delete_tag("b")
        writer.flush(timeout=0.1)
        mltrail.set_tag("a", "2")  # set after delete: stays
        writer.flush(timeout=0.1)
        mltrail.set_tag("b", "3")
        mltrail.delete_tag("b")  # delete after set: gone
        breakable.broken = False
        assert writer.flush(timeout=10)
    tags = Client().get_run(run.info.run_id).data.tags
    assert tags["a"] == "2"
    assert "b" not in tags


def test_memory_bound_keeps_the_oldest_and_counts_the_rest(
    breakable: Breakable, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = get_writer()
    monkeypatch.setattr(writer.config, "max_pending_points", 300)
    breakable.broken = True
    with pytest.warns((StoreUnavailableWarning, DataLossWarning)) as caught, mltrail.start_run() as run:
        for i in range(500):
            mltrail.log_metric("x", float(i), step=i)
        assert writer.flush(timeout=0.2) is False  # 300 held, the newest 200 dropped
        assert writer.overloaded
        for i in range(500, 600):
            mltrail.log_metric("x", float(i), step=i)  # refused while at the bound
        breakable.broken = False
        assert writer.flush(timeout=10)
        assert not writer.overloaded
        for i in range(600, 700):
            mltrail.log_metric("x", float(i), step=i)  # accepted again
    assert len([w for w in caught if w.category is DataLossWarning]) == 1
    hist = Client().get_metric_history(run.info.run_id, "x")
    np.testing.assert_array_equal(hist.steps, np.concatenate([np.arange(300), np.arange(600, 700)]))
    assert Client().get_run(run.info.run_id).data.tags["mltrail.dropped_points"] == "300"


def test_a_refused_point_after_the_run_ended_is_an_error_not_a_drop(sqlite_uri: str) -> None:
    from mltrail.core.errors import RunStateError

    client = Client()
    run_id = client.create_run("0").info.run_id
    client.log_metric(run_id, "x", 1.0)
    client.set_terminated(run_id)
    with pytest.raises(RunStateError):
        client.log_metric(run_id, "x", 2.0)
    assert len(client.get_metric_history(run_id, "x")) == 1


def test_ending_a_run_while_the_store_is_down_holds_the_end_and_writes_it_later(
    breakable: Breakable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line of a training script must not fail because the database is restarting."""
    writer = get_writer()
    monkeypatch.setattr(writer.config, "flush_timeout", 0.3)
    breakable.broken = True
    with pytest.warns(StoreUnavailableWarning):
        with mltrail.start_run() as run:
            for i in range(100):
                mltrail.log_metrics({"loss": 1.0 / (i + 1), "acc": i / 100}, step=i)
        # neither starting nor ending the run raised; nothing could be written yet, the run
        # itself included (it is written with its first batch)
    from mltrail.core.errors import RunNotFoundError

    with pytest.raises(RunNotFoundError):
        Client().get_run(run.info.run_id)
    breakable.broken = False
    monkeypatch.setattr(writer.config, "flush_timeout", 10.0)
    assert writer.flush() is True
    finished = Client().get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.info.end_time is not None
    assert finished.data.metrics == {"loss": 1.0 / 100, "acc": 0.99}
    assert len(Client().get_metric_history(run.info.run_id, "loss")) == 100


def test_set_terminated_on_an_unknown_run_is_an_error(sqlite_uri: str) -> None:
    from mltrail.core.errors import RunNotFoundError

    with pytest.raises(RunNotFoundError, match="no run with id"):
        Client().set_terminated("0" * 32)
