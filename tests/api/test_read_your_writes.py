"""min_position after a crash of PostgreSQL: the runner commits its batches
without waiting for the WAL flush (projections/runner.py), so a crash can take
its last batches back, checkpoint and rows together, after the API's watcher
heard their NOTIFY. A read with min_position must then wait for the view to
fold that position again, not answer from the rows the crash left."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from ledger import db
from ledger.api.app import create_app
from ledger.settings import Settings
from projections import registry
from projections.runner import ensure_checkpoint, run_batch
from tests.support import auth


def _fold(url: str) -> None:
    """Every view folds the ledger up to its head, as the runner would."""
    with psycopg.connect(db.service_conninfo(url), autocommit=True) as conn:
        for p in registry().values():
            ensure_checkpoint(conn, p.name)
            while run_batch(conn, p, 1000).full:
                pass


def _announced(client: Any, key: str, task_id: str, position: int) -> None:
    """Wait until the API's watcher has heard that the task view is at ``position``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = client.get(f"/tasks/{task_id}", headers=auth(key))
        if r.headers.get("x-projection-position") == str(position):
            return
        time.sleep(0.02)
    raise AssertionError(f"the watcher never heard of position {position}")


def test_a_view_read_waits_for_a_position_announced_before_a_crash_took_it_back(
    settings: Settings, keyring: dict[str, str], db_url: str
) -> None:
    agent = keyring["agent"]
    quiet = settings.model_copy(update={"max_wait_seconds": 0.5})
    with TestClient(create_app(quiet)) as client:  # no runner: the test folds
        body = {"task_type": "position_check", "payload": {"symbol": "AAPL", "quantity": 1}}
        sub = client.post("/tasks", json=body, headers=auth(agent)).json()
        tid = sub["id"]
        claimed = client.post(f"/tasks/{tid}/claim", headers=auth(agent)).json()
        _fold(db_url)  # the view has the claim: running, this agent its worker
        asked = client.post(
            f"/tasks/{tid}/approval-request", json={"reason": "limit"}, headers=auth(agent)
        ).json()
        assert asked["status"] == "awaiting_approval"
        # The runner folded the approval request and said so; then the server
        # crashed before that batch reached the disk: the view is back at the
        # claim, but the watcher heard the announcement.
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_notify('ledger_projections', %s)", (f"tasks:{asked['position']}",)
            )
        _announced(client, agent, tid, asked["position"])

        r = client.get(
            f"/tasks/{tid}", params={"min_position": asked["position"]}, headers=auth(agent)
        )
        # never the state before the approval request, which read as "running
        # and yours" and sent a worker to complete a task awaiting approval
        assert r.status_code == 503, r.json()
        problem = r.json()
        assert problem["type"].endswith("/projection-behind")
        assert problem["position"] == claimed["position"]

        _fold(db_url)  # the runner folds it again from the ledger
        r = client.get(
            f"/tasks/{tid}", params={"min_position": asked["position"]}, headers=auth(agent)
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "awaiting_approval"
        assert r.headers["x-projection-position"] == str(asked["position"])
