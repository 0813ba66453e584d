"""A batch whose COMMIT reached PostgreSQL but whose reply was lost is not written twice.

When the connection drops while COMMIT is on its way, the client cannot know whether the
transaction landed; the store retries the batch on a new connection, and the writer holds and
retries it too. Here the server really commits, and the client is then told the connection
closed (what psycopg raises when the server goes away at that moment): every point must be
stored exactly once, and the run's end recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import mltrail
from mltrail import Client
from mltrail.core.store import get_store
from mltrail.core.store import sql as sql_store

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def lost_commit_replies(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """After the next ``n`` committed batches (``state["lose"] = n``), raise as a dropped link."""
    store = get_store(tracking_uri)
    state = {"lose": 0, "lost": 0, "writing": 0}
    real_transaction = sql_store._Connection._transaction
    real_write_batch = store.write_batch

    @contextmanager
    def transaction(self: Any) -> Iterator[Any]:
        with real_transaction(self):
            yield self
        # Committed. Lose the reply of a batch write, as the server going away would.
        if state["writing"] and state["lose"] > 0:
            state["lose"] -= 1
            state["lost"] += 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    def write_batch(batch: Any) -> None:
        state["writing"] += 1
        try:
            real_write_batch(batch)
        finally:
            state["writing"] -= 1

    monkeypatch.setattr(sql_store._Connection, "_transaction", transaction)
    monkeypatch.setattr(store, "write_batch", write_batch)
    yield state


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_retried_batch_that_had_landed_is_not_written_again(lost_commit_replies: dict[str, int]) -> None:
    with mltrail.start_run() as run:
        for step in range(500):
            mltrail.log_metric("loss", 1.0 / (step + 1), step=step)
            mltrail.log_metrics({"a": float(step), "b": -float(step)}, step=step)
        mltrail.log_param("lr", 0.01)
        lost_commit_replies["lose"] = 1
        mltrail.flush()
        for step in range(500, 600):
            mltrail.log_metric("loss", 1.0 / (step + 1), step=step)
        lost_commit_replies["lose"] = 1  # the run's end too
    assert lost_commit_replies["lost"] == 2
    client = Client()
    loss = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in loss] == list(range(600))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "a")] == list(range(500))
    finished = client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.params == {"lr": "0.01"}
    assert finished.data.metrics["loss"] == 1.0 / 600
