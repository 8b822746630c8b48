"""The views over HTTP: GET /tasks (keyset pages, filters, 422s), waiting for
min_position and its timeout, GET /tasks/stats, GET /projections, and the
work queue (POST /tasks/claim) under 8 concurrent workers."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
from fastapi.testclient import TestClient

from ledger.api.app import create_app
from ledger.client import Client
from ledger.settings import Settings
from tests.projection_support import submit_tasks, wait_caught_up
from tests.support import app_with_runner, auth, live_server

PAYLOAD = {"symbol": "AAPL", "quantity": 250}


def submit(client: Any, key: str, task_type: str = "position_check", **extra: Any) -> Any:
    r = client.post(
        "/tasks", json={"task_type": task_type, "payload": PAYLOAD, **extra}, headers=auth(key)
    )
    assert r.status_code == 201, r.text
    return r.json()


def all_pages(client: Any, key: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get("/tasks", params=q, headers=auth(key))
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_task_pages_hold_still_while_tasks_are_written(
    client: Any, keyring: dict[str, str]
) -> None:
    agent, other, officer = keyring["agent"], keyring["agent2"], keyring["officer"]
    first = [submit(client, agent)["id"] for _ in range(25)]
    last = submit(client, other, task_type="pricing_check")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if pages == 0:
            params["min_position"] = last["position"]
        if cursor:
            params["cursor"] = cursor
        r = client.get("/tasks", params=params, headers=auth(officer))
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 4
        seen += [t["id"] for t in page["items"]]
        # between pages: new tasks, claims and completions move other rows
        new = submit(client, agent)
        claimed = client.post(f"/tasks/{first[pages]}/claim", headers=auth(other)).json()
        client.post(f"/tasks/{first[pages]}/complete", json={"result": {}}, headers=auth(other))
        client.get(
            f"/tasks/{new['id']}",
            params={"min_position": claimed["position"] + 1},
            headers=auth(agent),
        )
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a task came twice"
    original = [*first, last["id"]]
    assert [t for t in seen if t in set(original)] == original  # all of them, in order
    assert pages > 6

    # filters
    everything = all_pages(client, officer, limit=500)
    by_other = all_pages(client, officer, agent_name="agent-2")
    assert [t["id"] for t in by_other] == [last["id"]]
    pricing = all_pages(client, officer, task_type="pricing_check", limit=1)
    assert [t["id"] for t in pricing] == [last["id"]]
    done = all_pages(client, officer, status="done", limit=3)
    assert {t["id"] for t in done} <= set(first) and all(t["status"] == "done" for t in done)
    queued = all_pages(client, officer, status="queued", agent_name="agent-1")
    assert all(t["status"] == "queued" and t["agent_name"] == "agent-1" for t in queued)
    assert len(everything) == len(done) + len(queued) + 1
    # every field of GET /tasks/{id}, from the same view
    one = everything[0]
    got = client.get(f"/tasks/{one['id']}", headers=auth(agent)).json()
    assert got == one


def test_bad_list_parameters_and_cursors_are_422(client: Any, keyring: dict[str, str]) -> None:
    officer = keyring["officer"]
    last = [submit(client, keyring["agent"]) for _ in range(3)][-1]
    r = client.get(
        "/tasks",
        params={"limit": 1, "status": "queued", "min_position": last["position"]},
        headers=auth(officer),
    )
    cursor = r.json()["next_cursor"]
    assert cursor
    bad: list[dict[str, Any]] = [
        {"cursor": "nonsense"},
        {"cursor": "c1.!!!"},
        {"cursor": "c1.WzEsMl0"},  # [1,2]: the right shape of bytes, not a cursor
        {"cursor": cursor},  # from a list with another filter
        {"cursor": cursor, "status": "done"},
        {"status": "sleeping"},
        {"limit": 0},
        {"limit": 501},
        {"agent_name": "Robert'); DROP TABLE"},
        {"task_type": "BAD TYPE"},
        {"min_position": -1},
    ]
    for params in bad:
        r = client.get("/tasks", params=params, headers=auth(officer))
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    ok = client.get("/tasks", params={"cursor": cursor, "status": "queued"}, headers=auth(officer))
    assert ok.status_code == 200 and len(ok.json()["items"]) == 2
    # SPEC §4's template filled with blanks: a blank parameter is one not given
    r = client.get(
        f"/tasks?status=&agent_name=&task_type=&limit=&cursor=&min_position={last['position']}",
        headers=auth(officer),
    )
    assert r.status_code == 200, r.text
    assert (
        r.json()["items"]
        == client.get(
            "/tasks", params={"min_position": last["position"]}, headers=auth(officer)
        ).json()["items"]
    )


def test_min_position_gives_up_with_a_clear_503(
    settings: Settings, keyring: dict[str, str]
) -> None:
    quiet = settings.model_copy(update={"max_wait_seconds": 0.4})
    with TestClient(create_app(quiet)) as client:  # no runner: the view stays behind
        sub = submit(client, keyring["agent"])
        t0 = time.monotonic()
        r = client.get(
            f"/tasks/{sub['id']}",
            params={"min_position": sub["position"]},
            headers=auth(keyring["agent"]),
        )
        assert 0.35 < time.monotonic() - t0 < 3
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers["retry-after"] == "1"
        problem = r.json()
        assert problem["type"].endswith("/projection-behind")
        assert problem["projection"] == "tasks"
        assert problem["position"] == 0 and problem["min_position"] == sub["position"]
        assert "up to position 0" in problem["detail"]
        # no runner: GET /projections says so, with the whole ledger as lag
        r = client.get("/projections", headers=auth(keyring["auditor"]))
        h = r.json()["head_position"]
        assert h == sub["position"]
        for p in r.json()["items"]:
            assert (p["position"], p["lag_events"], p["leading"]) == (0, h, False), p
            assert p["lag_seconds"] > 0 and p["hash"] == "0" * 64
        # without min_position it answers at once: the view lacks the task, so
        # the task is folded from its stream rather than called missing
        r = client.get(f"/tasks/{sub['id']}", headers=auth(keyring["agent"]))
        assert r.status_code == 200 and r.headers["x-read-from"] == "ledger"


def test_stats_and_projection_status(client: Any, keyring: dict[str, str], db_url: str) -> None:
    agent, other = keyring["agent"], keyring["agent2"]
    a = [submit(client, agent)["id"] for _ in range(3)]
    submit(client, other, task_type="deal_memo")
    client.post(f"/tasks/{a[0]}/claim", headers=auth(other))
    last = client.post(f"/tasks/{a[1]}/cancel", json={"reason": "dup"}, headers=auth(agent))
    r = client.get(
        "/tasks/stats",
        params={"min_position": last.json()["position"]},
        headers=auth(agent),
    )
    assert r.status_code == 200, r.text
    stats = r.json()
    assert stats["by_agent"] == {
        "agent-1": {"queued": 1, "running": 1, "cancelled": 1},
        "agent-2": {"queued": 1},
    }
    assert stats["by_task_type"] == {
        "position_check": {"queued": 1, "running": 1, "cancelled": 1},
        "deal_memo": {"queued": 1},
    }
    assert stats["position"] >= last.json()["position"]

    assert client.get("/projections", headers=auth(agent)).status_code == 403
    h = wait_caught_up(db_url)
    r = client.get("/projections", headers=auth(keyring["auditor"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["head_position"] == h
    by_name = {p["name"]: p for p in body["items"]}
    assert set(by_name) == {"tasks", "task_counts"}
    head_hash = client.get("/audit/head", headers=auth(agent)).json()["hash"]
    for p in by_name.values():
        assert p["position"] == h and p["hash"] == head_hash
        assert p["lag_events"] == 0 and p["lag_seconds"] == 0
        assert p["leading"] is True and p["holder"]
    assert by_name["tasks"]["applied"] == 6  # 4 submitted, 1 claimed, 1 cancelled
    for role in ("officer", "admin"):
        assert client.get("/projections", headers=auth(keyring[role])).status_code == 200


def test_the_queue_claims_by_priority_then_age_and_type(
    client: Any, keyring: dict[str, str]
) -> None:
    agent, worker = keyring["agent"], keyring["agent2"]
    low = submit(client, agent)["id"]
    high_old = submit(client, agent, priority=5)["id"]
    high_new = submit(client, agent, priority=5)["id"]
    memo = submit(client, agent, task_type="deal_memo", priority=9)
    claim = {"task_types": ["position_check"], "lease_seconds": 30}
    client.get(
        f"/tasks/{memo['id']}", params={"min_position": memo["position"]}, headers=auth(agent)
    )
    got = [client.post("/tasks/claim", json=claim, headers=auth(worker)) for _ in range(4)]
    assert [r.status_code for r in got] == [200, 200, 200, 204]
    assert [r.json()["id"] for r in got[:3]] == [high_old, high_new, low]
    assert all(r.json()["worker"] == "agent-2" and r.json()["status"] == "running" for r in got[:3])
    assert got[3].content == b""
    # any type: the memo; then nothing
    r = client.post("/tasks/claim", headers=auth(worker))
    assert r.status_code == 200 and r.json()["id"] == memo["id"]
    assert client.post("/tasks/claim", json={}, headers=auth(worker)).status_code == 204
    # officers do not claim; bad bodies are 422
    assert client.post("/tasks/claim", headers=auth(keyring["officer"])).status_code == 403
    for body in ({"task_types": []}, {"task_types": ["bad type"]}, {"lease_seconds": 0}, {"x": 1}):
        r = client.post("/tasks/claim", json=body, headers=auth(worker))
        assert r.status_code == 422, body


def test_a_queue_claim_retried_with_its_idempotency_key_answers_the_same(
    client: Any, keyring: dict[str, str]
) -> None:
    agent = keyring["agent"]
    subs = [submit(client, agent) for _ in range(2)]
    client.get(
        f"/tasks/{subs[-1]['id']}",
        params={"min_position": subs[-1]["position"]},
        headers=auth(agent),
    )
    key = {**auth(agent), "Idempotency-Key": "claim-1"}
    first = client.post("/tasks/claim", json={"lease_seconds": 30}, headers=key)
    again = client.post("/tasks/claim", json={"lease_seconds": 30}, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = client.post("/tasks/claim", json={"lease_seconds": 31}, headers=key)
    assert other.status_code == 422
    assert client.post("/tasks/claim", headers=auth(agent)).json()["id"] == subs[1]["id"]


def test_the_queue_claim_takes_no_if_match(client: Any, keyring: dict[str, str]) -> None:
    """A claim of whatever is next has no task version to match: If-Match is
    neither read (any value, as before) nor described in the OpenAPI."""
    headers = {**auth(keyring["agent"]), "If-Match": "not a version"}
    assert client.post("/tasks/claim", headers=headers).status_code == 204
    claim = client.get("/openapi.json").json()["paths"]["/tasks/claim"]["post"]
    assert [p["name"] for p in claim["parameters"]] == ["Idempotency-Key"]


def test_eight_workers_claim_five_hundred_tasks_each_exactly_once(
    settings: Settings, keyring: dict[str, str], db_url: str
) -> None:
    ids = submit_tasks(db_url, 500)
    found: list[list[str]] = [[] for _ in range(8)]
    errors: list[str] = []
    with live_server(app_with_runner(settings)) as base:
        wait_caught_up(db_url)
        start = threading.Barrier(8)

        def work(i: int) -> None:
            key = keyring["agent" if i % 2 else "agent2"]
            with Client(base, key, timeout=30) as c:
                start.wait()
                while True:
                    try:
                        task = c.claim_next(["position_check"], 60)
                    except Exception as exc:  # reported below
                        errors.append(repr(exc))
                        return
                    if task is None:
                        return
                    found[i].append(task.id)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(8)))
    assert not errors, errors[:3]
    claimed = [t for part in found for t in part]
    assert Counter(claimed).most_common(1)[0][1] == 1, "a task was handed out twice"
    assert sorted(claimed) == sorted(ids)
    assert sum(1 for part in found if part) >= 4  # they really worked side by side
    with psycopg.connect(db_url) as conn:
        per_task = conn.execute(
            "SELECT stream, count(*) FROM events WHERE type = 'TaskClaimed' GROUP BY stream"
        ).fetchall()
    assert len(per_task) == 500 and {n for _s, n in per_task} == {1}


def test_a_stale_view_never_hands_one_task_to_two_workers(
    settings: Settings, keyring: dict[str, str], db_url: str
) -> None:
    """With no runner, the view stays at 'queued' after each claim: every later
    claim of the same row is refused by the ledger (expected version) and the
    next candidate is tried."""
    submit_tasks(db_url, 3)
    with TestClient(app_with_runner(settings)) as c:
        wait_caught_up(db_url)
    with TestClient(create_app(settings)) as c:  # no runner
        got = [c.post("/tasks/claim", headers=auth(keyring["agent"])) for _ in range(4)]
        assert [r.status_code for r in got] == [200, 200, 200, 204]
        assert len({r.json()["id"] for r in got[:3]}) == 3
        page = c.get("/tasks", params={"status": "queued"}, headers=auth(keyring["agent"]))
        assert len(page.json()["items"]) == 3  # the view did not move: it has no runner


def test_as_many_claims_at_once_as_tasks_all_get_one(
    settings: Settings, keyring: dict[str, str], db_url: str
) -> None:
    """A claim answers 204 only when nothing is queued: when every queued row is
    held by another claim in flight, it waits for one, it does not give up."""
    n = 16
    ids = submit_tasks(db_url, n)
    with live_server(app_with_runner(settings)) as base:
        wait_caught_up(db_url)
        start = threading.Barrier(n)

        def once(i: int) -> tuple[int, str | None]:
            key = keyring["agent" if i % 2 else "agent2"]
            with httpx.Client(base_url=base, headers=auth(key), timeout=30) as c:
                start.wait()
                r = c.post("/tasks/claim", json={"task_types": ["position_check"]})
                return r.status_code, r.json()["id"] if r.status_code == 200 else None

        with ThreadPoolExecutor(n) as pool:
            answers = list(pool.map(once, range(n)))
    assert [status for status, _ in answers] == [200] * n, answers
    assert sorted(task_id for _, task_id in answers if task_id) == sorted(ids)


def test_a_task_the_view_has_not_reached_is_read_from_the_ledger_not_404(
    settings: Settings, keyring: dict[str, str]
) -> None:
    with TestClient(create_app(settings)) as c:  # no runner at all
        sub = submit(c, keyring["agent"])
        r = c.get(f"/tasks/{sub['id']}", headers=auth(keyring["agent"]))
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
        assert r.headers["x-read-from"] == "ledger"
        missing = "0190c1a2-0000-7000-8000-000000000000"
        assert c.get(f"/tasks/{missing}", headers=auth(keyring["agent"])).status_code == 404


def test_a_min_position_beyond_the_head_is_a_422_at_once(
    client: Any, keyring: dict[str, str]
) -> None:
    sub = submit(client, keyring["agent"])
    t0 = time.monotonic()
    r = client.get(
        f"/tasks/{sub['id']}",
        params={"min_position": sub["position"] + 1000},
        headers=auth(keyring["agent"]),
    )
    assert time.monotonic() - t0 < 2  # no wait for what cannot come
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "min_position"
    assert f"head ({sub['position']})" in r.json()["detail"]
