"""Tasks under real concurrency: a uvicorn server, threads, a client that
times out, and the worker against the live API."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from ledger import clock, leases, worker
from ledger.cli import worker as worker_cli
from ledger.client import Client, Task
from ledger.settings import Settings
from tests.support import app_with_runner, auth, live_server

PAYLOAD = {"symbol": "AAPL", "quantity": 250}


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    with live_server(app_with_runner(settings)) as url:
        yield url


def test_two_agents_race_to_claim_one_winner_each_time(
    server: str, keyring: dict[str, str]
) -> None:
    rounds = 100
    clients = [httpx.Client(base_url=server, headers=auth(keyring[k])) for k in ("agent", "agent2")]
    barrier = threading.Barrier(2)

    def claim(i: int, task_id: str) -> int:
        barrier.wait()
        return clients[i].post(f"/tasks/{task_id}/claim").status_code

    wins = {0: 0, 1: 0}
    try:
        with ThreadPoolExecutor(2) as pool:
            for _ in range(rounds):
                r = clients[0].post("/tasks", json={"task_type": "race", "payload": {}})
                assert r.status_code == 201
                tid = r.json()["id"]
                codes = list(pool.map(claim, (0, 1), (tid, tid)))
                assert sorted(codes) == [200, 409], codes
                wins[codes.index(200)] += 1
                events = clients[0].get(f"/tasks/{tid}/events").json()
                assert [e["type"] for e in events] == ["TaskSubmitted", "TaskClaimed"]
                at_least = {"min_position": events[-1]["position"]}
                task = clients[1].get(f"/tasks/{tid}", params=at_least).json()
                assert task["worker"] == ("agent-1", "agent-2")[codes.index(200)]
    finally:
        for c in clients:
            c.close()
    assert wins[0] + wins[1] == rounds


class SlowFirstAnswer:
    """ASGI wrapper: holds back the first answer to POST /tasks (after the
    handler committed) for ``delay`` seconds, and keeps its body."""

    def __init__(self, app: Any, delay: float) -> None:
        self.app = app
        self.delay = delay
        self.held: list[bytes] = []
        self._first = True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/tasks"
            and self._first
        ):
            await self.app(scope, receive, send)
            return
        self._first = False

        async def slow_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(self.delay)
            elif message["type"] == "http.response.body":
                self.held.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, slow_send)


def test_a_retry_after_a_client_timeout_writes_once_and_answers_the_same(
    settings: Settings, keyring: dict[str, str]
) -> None:
    app = SlowFirstAnswer(app_with_runner(settings), delay=2.0)
    with live_server(app) as url, Client(url, keyring["agent"], timeout=0.5, retries=4) as ledger:
        before = ledger.head()["position"]
        sub = ledger.submit("position_check", PAYLOAD)
        assert ledger.head()["position"] == before + 1  # one event, though sent twice
        events = ledger.events(sub.id)
        assert [e["type"] for e in events] == ["TaskSubmitted"]
        assert events[0]["meta"]["idempotency_key"]
        # the first attempt did commit and answer; the client gave up on it
        deadline = time.monotonic() + 10
        while not app.held and time.monotonic() < deadline:
            time.sleep(0.05)
        first = orjson.loads(b"".join(app.held))
        assert first == {
            "id": sub.id,
            "status": sub.status,
            "version": sub.version,
            "position": sub.position,
        }


def test_a_timeout_without_retries_is_raised(settings: Settings, keyring: dict[str, str]) -> None:
    app = SlowFirstAnswer(app_with_runner(settings), delay=1.0)
    with (
        live_server(app) as url,
        Client(url, keyring["agent"], timeout=0.3, retries=0) as ledger,
        pytest.raises(httpx.TimeoutException),
    ):
        ledger.submit("position_check", PAYLOAD)


def test_the_worker_claims_records_steps_renews_and_completes(
    server: str, keyring: dict[str, str]
) -> None:
    with Client(server, keyring["agent"]) as submitter:
        tid = submitter.submit("position_check", PAYLOAD).id
        bad = submitter.submit("position_check", {"symbol": "AAPL"}).id
    args = SimpleNamespace(
        key=keyring["agent2"],
        url=server,
        types=None,
        task_ids=[tid, bad],
        lease_seconds=30,
        poll=0.1,
        max_tasks=0,
        once=True,
    )
    assert worker_cli.run(args) == 0
    with Client(server, keyring["officer"]) as officer:
        done = officer.get(tid, min_position=officer.events(tid)[-1]["position"])
        assert done.status == "done" and done.worker is None
        assert done.result == {
            "symbol": "AAPL",
            "quantity": 250,
            "status": "processed",
            "notional_estimate": 25062.5,
        }
        kinds = [e["data"].get("kind") for e in officer.events(tid)]
        assert kinds.count("tool_call") == 1 and kinds.count("note") == 1
        failed = officer.get(bad, min_position=officer.events(bad)[-1]["position"])
        assert failed.status == "failed" and "quantity" in (failed.error or "")


def test_the_lease_is_renewed_while_a_slow_handler_works(
    server: str, keyring: dict[str, str]
) -> None:
    def slow(task: Task, steps: worker.Steps) -> dict[str, Any]:
        time.sleep(2.5)
        return {"ok": True}

    with Client(server, keyring["agent"]) as agent:
        tid = agent.submit("slow", {}).id
        task = agent.claim(tid, lease_seconds=1)
        final = worker.work_one(agent, task, {"slow": slow}, lease_seconds=1)
        assert final.status == "done"
        types = [e["type"] for e in agent.events(tid)]
    assert "TaskLeaseRenewed" in types
    assert "TaskRequeued" not in types


def test_two_api_processes_sweeping_at_once_requeue_each_task_once(
    settings: Settings, keyring: dict[str, str]
) -> None:
    quiet = settings.model_copy(update={"lease_sweep_seconds": 0})
    with TestClient(app_with_runner(quiet)) as a, TestClient(app_with_runner(quiet)) as b:
        ids = []
        for _ in range(20):
            r = a.post(
                "/tasks", json={"task_type": "t", "payload": {}}, headers=auth(keyring["agent"])
            )
            ids.append(r.json()["id"])
            assert (
                a.post(f"/tasks/{ids[-1]}/claim", headers=auth(keyring["agent"])).status_code == 200
            )
        at = clock.now() + timedelta(hours=2)
        barrier = threading.Barrier(2)

        def sweep(client: Any) -> list[str]:
            barrier.wait()
            out: list[str] = client.portal.call(leases.sweep, client.app.state.ctx, at)
            return out

        with ThreadPoolExecutor(2) as pool:
            done_a, done_b = pool.map(sweep, (a, b))
        assert sorted(done_a + done_b) == sorted(ids)  # each requeued by exactly one of them
        for tid in ids:
            events = a.get(f"/tasks/{tid}/events", headers=auth(keyring["officer"])).json()
            assert [e["type"] for e in events].count("TaskRequeued") == 1
