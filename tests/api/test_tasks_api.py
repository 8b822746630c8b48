"""Task endpoints over HTTP on a real PostgreSQL (SPEC §3, §4)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledger import clock, leases, tasks
from ledger.settings import Settings
from tests.support import app_with_runner, auth, create_key

PAYLOAD = {"symbol": "AAPL", "quantity": 250}


def head(client: Any, key: str) -> int:
    r = client.get("/audit/head", headers=auth(key))
    assert r.status_code == 200
    return int(r.json()["position"])


def submit(client: Any, key: str, **extra: Any) -> dict[str, Any]:
    body = {"task_type": "position_check", "payload": PAYLOAD, **extra}
    r = client.post("/tasks", json=body, headers=auth(key))
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def post(client: Any, key: str, path: str, body: Any = None, **headers: str) -> Any:
    return client.post(path, json=body, headers={**auth(key), **headers})


def fold_of(client: Any, key: str, task_id: str) -> dict[str, Any]:
    events = client.get(f"/tasks/{task_id}/events", headers=auth(key)).json()
    state = tasks.fold(events)
    assert state is not None
    return tasks.view(state)


def test_a_task_from_submission_to_completion(client: Any, keyring: dict[str, str]) -> None:
    agent, worker, officer = keyring["agent"], keyring["agent2"], keyring["officer"]
    sub = submit(client, agent, priority=3)
    assert sub["status"] == "queued" and sub["version"] == 1
    assert uuid.UUID(sub["id"]).version == 7
    tid = sub["id"]
    base = f"/tasks/{tid}"

    r = post(client, worker, f"{base}/claim", {"lease_seconds": 30})
    assert r.status_code == 200, r.text
    claimed = r.json()
    assert claimed["status"] == "running" and claimed["worker"] == "agent-2"
    assert (claimed["version"], claimed["position"]) == (2, sub["position"] + 1)
    assert claimed["lease_expires_at"].endswith("Z")

    r = post(client, worker, f"{base}/steps", {"kind": "prompt", "content": "price AAPL"})
    assert r.status_code == 201 and r.json() == {"version": 3, "position": sub["position"] + 2}
    r = post(client, worker, f"{base}/lease", {"lease_seconds": 45})
    assert r.status_code == 200 and r.json()["version"] == 4
    r = post(client, worker, f"{base}/approval-request", {"reason": "notional above desk limit"})
    assert r.status_code == 200 and r.json()["status"] == "awaiting_approval"
    r = post(client, officer, f"{base}/approve", {"comment": "within firm limit"})
    assert r.status_code == 200 and r.json()["status"] == "running"
    result = {**PAYLOAD, "status": "processed", "notional_estimate": 25062.5}
    r = post(client, worker, f"{base}/complete", {"result": result})
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "done" and done["result"] == result and done["version"] == 7

    got = client.get(
        base, params={"min_position": done["position"]}, headers=auth(keyring["auditor"])
    )
    assert got.status_code == 200 and got.json() == done
    assert got.headers["etag"] == '"7"'
    assert fold_of(client, officer, tid) == done
    assert done["agent_name"] == "agent-1" and done["priority"] == 3 and done["steps"] == 1

    events = client.get(f"{base}/events", headers=auth(agent)).json()
    assert [e["type"] for e in events] == [
        "TaskSubmitted",
        "TaskClaimed",
        "TaskStepRecorded",
        "TaskLeaseRenewed",
        "TaskApprovalRequested",
        "TaskApproved",
        "TaskCompleted",
    ]
    assert [e["meta"]["actor"] for e in events] == [
        "agent-1",
        "agent-2",
        "agent-2",
        "agent-2",
        "agent-2",
        "officer-1",
        "agent-2",
    ]
    assert all(len(e["hash"]) == 64 and e["stream"] == f"task-{tid}" for e in events)
    assert events[0]["data"] == {"task_type": "position_check", "payload": PAYLOAD, "priority": 3}
    assert done["created_at"] == events[0]["recorded_at"]
    assert done["updated_at"] == events[-1]["recorded_at"]


def test_failure_requeue_reject_and_cancel(client: Any, keyring: dict[str, str]) -> None:
    agent, worker, officer = keyring["agent"], keyring["agent2"], keyring["officer"]
    tid = submit(client, agent)["id"]
    post(client, worker, f"/tasks/{tid}/claim")
    r = post(client, worker, f"/tasks/{tid}/fail", {"error": "price feed down", "retryable": True})
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert r.json()["error"] == "price feed down" and r.json()["retryable"] is True
    r = post(client, agent, f"/tasks/{tid}/requeue", {"reason": "feed is back"})
    assert r.status_code == 200 and r.json()["status"] == "queued"
    r = post(client, agent, f"/tasks/{tid}/claim")
    assert r.status_code == 200 and r.json()["attempts"] == 2
    post(client, agent, f"/tasks/{tid}/approval-request", {"reason": "unusual size"})
    r = post(client, officer, f"/tasks/{tid}/reject", {"comment": "not today"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    r = post(client, officer, f"/tasks/{tid}/cancel", {"reason": "late"})
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/illegal-transition")

    t2 = submit(client, agent)["id"]
    assert post(client, worker, f"/tasks/{t2}/cancel", {"reason": "mine?"}).status_code == 403
    r = post(client, agent, f"/tasks/{t2}/cancel", {"reason": "not needed"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    t3 = submit(client, agent)["id"]
    r = post(client, officer, f"/tasks/{t3}/cancel", {"reason": "compliance hold"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("who", "path", "body"),
    [
        ("officer", "", {"task_type": "x", "payload": {}}),
        ("auditor", "", {"task_type": "x", "payload": {}}),
        ("officer", "/claim", None),
        ("agent", "/approve", {"comment": "ok"}),
        ("agent2", "/reject", {"comment": "no"}),
        ("auditor", "/requeue", {"reason": "r"}),
        ("auditor", "/cancel", {"reason": "r"}),
        ("admin", "/claim", None),
    ],
)
def test_principals_outside_the_who_column_get_403_and_nothing_is_written(
    client: Any, keyring: dict[str, str], who: str, path: str, body: Any
) -> None:
    tid = submit(client, keyring["agent"])["id"]
    before = head(client, keyring["auditor"])
    url = "/tasks" if not path else f"/tasks/{tid}{path}"
    r = post(client, keyring[who], url, body)
    assert r.status_code == 403, r.text
    assert r.json()["status"] == 403
    assert head(client, keyring["auditor"]) == before


def test_worker_moves_by_another_agent_are_403(client: Any, keyring: dict[str, str]) -> None:
    tid = submit(client, keyring["agent"])["id"]
    post(client, keyring["agent2"], f"/tasks/{tid}/claim")
    before = head(client, keyring["auditor"])
    for path, body in (
        ("lease", None),
        ("steps", {"kind": "note", "content": "x"}),
        ("approval-request", {"reason": "x"}),
        ("complete", {"result": {}}),
        ("fail", {"error": "x", "retryable": False}),
    ):
        r = post(client, keyring["agent"], f"/tasks/{tid}/{path}", body)
        assert r.status_code == 403, (path, r.text)
    assert head(client, keyring["auditor"]) == before


def test_unknown_tasks_are_404_and_bad_ids_422(client: Any, keyring: dict[str, str]) -> None:
    missing = str(uuid.uuid4())
    assert client.get(f"/tasks/{missing}", headers=auth(keyring["agent"])).status_code == 404
    assert client.get(f"/tasks/{missing}/events", headers=auth(keyring["agent"])).status_code == 404
    assert post(client, keyring["agent"], f"/tasks/{missing}/claim").status_code == 404
    r = client.get("/tasks/not-a-uuid", headers=auth(keyring["agent"]))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "task_id"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("", {"task_type": "Position Check", "payload": {}}, "task_type"),
        ("", {"task_type": "x" * 129, "payload": {}}, "task_type"),
        ("", {"task_type": "ok", "payload": [1, 2]}, "payload"),
        ("", {"task_type": "ok", "payload": "text"}, "payload"),
        ("", {"task_type": "ok"}, "payload"),
        ("", {"task_type": "ok", "payload": {}, "priority": 2**31}, "priority"),
        ("", {"task_type": "ok", "payload": {}, "priority": "5"}, "priority"),
        ("", {"task_type": "ok", "payload": {}, "agent_name": "someone-else"}, "agent_name"),
        ("", {"task_type": "ok", "payload": {"n": 2**60}}, "payload.n"),
        ("/claim", {"lease_seconds": 0}, "lease_seconds"),
        ("/claim", {"lease_seconds": 100_000}, "lease_seconds"),
        ("/steps", {"kind": "thought", "content": "x"}, "kind"),
        ("/steps", {"kind": "note"}, "content"),
        ("/fail", {"error": "x"}, "retryable"),
        ("/fail", {"error": "x", "retryable": "yes"}, "retryable"),
        ("/complete", {"result": [1]}, "result"),
        ("/requeue", {"reason": ""}, "reason"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(
    client: Any, keyring: dict[str, str], path: str, body: Any, field: str
) -> None:
    tid = submit(client, keyring["agent"])["id"]
    before = head(client, keyring["auditor"])
    url = "/tasks" if not path else f"/tasks/{tid}{path}"
    r = post(client, keyring["agent"], url, body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in r.json()["errors"]], r.json()
    assert head(client, keyring["auditor"]) == before


def test_if_match(client: Any, keyring: dict[str, str]) -> None:
    agent = keyring["agent"]
    tid = submit(client, agent)["id"]
    before = head(client, keyring["auditor"])
    r = post(client, agent, f"/tasks/{tid}/claim", None, **{"If-Match": "2"})
    assert r.status_code == 412 and r.json()["actual_version"] == 1
    r = post(client, agent, f"/tasks/{tid}/claim", None, **{"If-Match": "abc"})
    assert r.status_code == 422
    assert head(client, keyring["auditor"]) == before
    r = post(client, agent, f"/tasks/{tid}/claim", None, **{"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["version"] == 2
    r = post(
        client, agent, f"/tasks/{tid}/steps", {"kind": "note", "content": "x"}, **{"If-Match": "1"}
    )
    assert r.status_code == 412
    r = post(client, agent, "/tasks", {"task_type": "x", "payload": {}}, **{"If-Match": "3"})
    assert r.status_code == 412 and "new task" in r.json()["detail"]


def test_bad_command_headers_are_422s_in_the_order_fastapi_checks_them(
    client: Any, keyring: dict[str, str]
) -> None:
    """The caller first; then a bad Idempotency-Key is listed with the body's
    own errors; If-Match is read once the body passed."""
    bad_body = {"task_type": 1}
    r = client.post("/tasks", json=bad_body, headers={"Idempotency-Key": "a b"})
    assert r.status_code == 401
    r = post(client, keyring["agent"], "/tasks", bad_body, **{"Idempotency-Key": "a b"})
    assert r.status_code == 422
    fields = [e["field"] for e in r.json()["errors"]]
    assert fields[0] == "Idempotency-Key" and "task_type" in fields and "payload" in fields
    for key in ("", "x" * 201):
        r = post(client, keyring["agent"], "/tasks", None, **{"Idempotency-Key": key})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"
    r = post(client, keyring["agent"], "/tasks", bad_body, **{"If-Match": "abc"})
    assert r.status_code == 422 and "If-Match" not in [e["field"] for e in r.json()["errors"]]


def test_if_match_is_judged_after_the_who_and_status_rules(
    client: Any, keyring: dict[str, str]
) -> None:
    """RFC 9110 §13.2.1: a precondition matters only for a request that would
    otherwise succeed, so a stale If-Match never hides a 403, 409 or 404."""
    agent, other, officer = keyring["agent"], keyring["agent2"], keyring["officer"]
    tid = submit(client, agent)["id"]
    assert post(client, agent, f"/tasks/{tid}/claim").status_code == 200
    before = head(client, keyring["auditor"])
    step = {"kind": "note", "content": "x"}
    r = post(client, other, f"/tasks/{tid}/steps", step, **{"If-Match": "1"})
    assert r.status_code == 403, r.text  # not the claimant: 403 whatever the version
    r = post(client, officer, f"/tasks/{tid}/approve", {"comment": "ok"}, **{"If-Match": "1"})
    assert r.status_code == 409, r.text  # running, not awaiting approval
    missing = "0190c1a2-0000-7000-8000-000000000000"
    r = post(client, agent, f"/tasks/{missing}/claim", None, **{"If-Match": "1"})
    assert r.status_code == 404, r.text
    assert head(client, keyring["auditor"]) == before
    r = post(client, agent, f"/tasks/{tid}/steps", step, **{"If-Match": "1"})
    assert r.status_code == 412 and r.json()["actual_version"] == 2


def test_any_agent_may_requeue_a_retryable_failure(
    client: Any, keyring: dict[str, str], db_url: str
) -> None:
    """SPEC §3 lists requeue as "agent, officer or the service", not only the submitter."""
    agent, worker = keyring["agent"], keyring["agent2"]
    third = create_key(db_url, "agent-3", "agent")
    tid = submit(client, agent)["id"]
    assert post(client, worker, f"/tasks/{tid}/claim").status_code == 200
    r = post(client, worker, f"/tasks/{tid}/fail", {"error": "feed down", "retryable": True})
    assert r.status_code == 200
    r = post(client, third, f"/tasks/{tid}/requeue", {"reason": "feed is back"})
    assert r.status_code == 200 and r.json()["status"] == "queued", r.text


def test_idempotency_key_answers_as_the_first_time(client: Any, keyring: dict[str, str]) -> None:
    agent = keyring["agent"]
    body = {"task_type": "position_check", "payload": PAYLOAD}
    first = post(client, agent, "/tasks", body, **{"Idempotency-Key": "order-42"})
    assert first.status_code == 201
    before = head(client, keyring["auditor"])
    again = post(client, agent, "/tasks", body, **{"Idempotency-Key": "order-42"})
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert head(client, keyring["auditor"]) == before
    other = post(
        client, agent, "/tasks", {**body, "priority": 9}, **{"Idempotency-Key": "order-42"}
    )
    assert other.status_code == 422 and other.json()["type"].endswith("/idempotency-key-reused")
    # the key belongs to its principal: another agent's same key is its own
    theirs = post(client, keyring["agent2"], "/tasks", body, **{"Idempotency-Key": "order-42"})
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]

    # a retried command answers as the first time even after the task moved on
    tid = first.json()["id"]
    c1 = post(client, agent, f"/tasks/{tid}/claim", None, **{"Idempotency-Key": "claim-1"})
    post(client, agent, f"/tasks/{tid}/steps", {"kind": "note", "content": "x"})
    upper = f"/tasks/{tid.upper()}/claim"  # the same task, spelt differently
    c2 = post(client, agent, upper, None, **{"Idempotency-Key": "claim-1"})
    assert c1.status_code == c2.status_code == 200 and c2.json() == c1.json()
    events = client.get(f"/tasks/{tid}/events", headers=auth(agent)).json()
    assert [e["type"] for e in events].count("TaskClaimed") == 1
    assert events[0]["meta"]["idempotency_key"] == "order-42"


def test_idempotency_holds_across_a_restart(settings: Settings, keyring: dict[str, str]) -> None:
    agent = keyring["agent"]
    body = {"task_type": "position_check", "payload": PAYLOAD}
    with TestClient(app_with_runner(settings)) as c1:
        first = post(c1, agent, "/tasks", body, **{"Idempotency-Key": "restart-1"})
        assert first.status_code == 201
        before = head(c1, keyring["auditor"])
    with TestClient(app_with_runner(settings)) as c2:
        again = post(c2, agent, "/tasks", body, **{"Idempotency-Key": "restart-1"})
        assert again.status_code == 201 and again.json() == first.json()
        assert head(c2, keyring["auditor"]) == before
        r = post(c2, agent, "/tasks", {**body, "priority": 1}, **{"Idempotency-Key": "restart-1"})
        assert r.status_code == 422


def test_replay_between_two_events(client: Any, keyring: dict[str, str]) -> None:
    agent, officer = keyring["agent"], keyring["officer"]
    tid = submit(client, agent)["id"]
    post(client, agent, f"/tasks/{tid}/claim")
    post(client, agent, f"/tasks/{tid}/steps", {"kind": "note", "content": "x"})
    post(client, agent, f"/tasks/{tid}/complete", {"result": {"ok": True}})
    events = client.get(f"/tasks/{tid}/events", headers=auth(agent)).json()
    claimed, step = events[1], events[2]
    assert claimed["recorded_at"] < step["recorded_at"]
    t1 = clock.parse_time(claimed["recorded_at"])
    t2 = clock.parse_time(step["recorded_at"])
    between = clock.format_time(t1 + (t2 - t1) / 2)

    r = client.get(f"/tasks/{tid}/replay", params={"at": between}, headers=auth(officer))
    assert r.status_code == 200, r.text
    rep = r.json()
    assert [e["position"] for e in rep["events"]] == [events[0]["position"], claimed["position"]]
    assert rep["state"]["status"] == "running" and rep["state"]["version"] == 2
    assert rep["state"] == tasks.view(tasks.fold(events[:2]))  # type: ignore[arg-type]
    # an offset form of the same moment answers the same
    offset = (t1 + (t2 - t1) / 2).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    r2 = client.get(f"/tasks/{tid}/replay", params={"at": offset}, headers=auth(officer))
    assert r2.json() == rep
    # and so does RFC 3339's lowercase form (t, z)
    lower = between.replace("T", "t").replace("Z", "z")
    r3 = client.get(f"/tasks/{tid}/replay", params={"at": lower}, headers=auth(officer))
    assert r3.status_code == 200 and r3.json() == rep, r3.text

    r = client.get(
        f"/tasks/{tid}/replay",
        params={"position": step["position"]},
        headers=auth(keyring["auditor"]),
    )
    assert r.status_code == 200 and r.json()["state"]["steps"] == 1
    assert len(r.json()["events"]) == 3

    r = client.get(
        f"/tasks/{tid}/replay", params={"at": "2000-01-01T00:00:00Z"}, headers=auth(officer)
    )
    assert r.status_code == 200 and r.json() == {"state": None, "events": []}
    r = client.get(f"/tasks/{tid}/replay", params={"position": 1}, headers=auth(agent))
    assert r.status_code == 403
    for params in (
        {},
        {"at": between, "position": 3},
        {"at": "yesterday"},
        {"at": "2026-11-25T09:00:00"},
    ):
        r = client.get(f"/tasks/{tid}/replay", params=params, headers=auth(officer))
        assert r.status_code == 422, params


def test_a_lapsed_lease_is_requeued_by_the_service(client: Any, keyring: dict[str, str]) -> None:
    agent, other = keyring["agent"], keyring["agent2"]
    ctx = client.app.state.ctx
    tid = submit(client, agent)["id"]
    claimed = post(client, agent, f"/tasks/{tid}/claim", {"lease_seconds": 30}).json()
    lease = clock.parse_time(claimed["lease_expires_at"])
    untouched = submit(client, agent)["id"]

    # before the lease lapses nothing happens
    assert client.portal.call(leases.sweep, ctx, lease - timedelta(seconds=1)) == []
    seen = {"min_position": claimed["position"]}
    assert (
        client.get(f"/tasks/{tid}", params=seen, headers=auth(agent)).json()["status"] == "running"
    )
    # a renewal moves the lapse time: a sweep at the old time leaves it alone
    post(client, agent, f"/tasks/{tid}/lease", {"lease_seconds": 120})
    assert client.portal.call(leases.sweep, ctx, lease + timedelta(seconds=1)) == []

    later = lease + timedelta(seconds=200)
    assert client.portal.call(leases.sweep, ctx, later) == [tid]
    last = client.get(f"/tasks/{tid}/events", headers=auth(agent)).json()[-1]
    task = client.get(
        f"/tasks/{tid}", params={"min_position": last["position"]}, headers=auth(agent)
    ).json()
    assert (
        task["status"] == "queued" and task["worker"] is None and task["reason"] == "lease_expired"
    )
    assert last["type"] == "TaskRequeued" and last["data"] == {"reason": "lease_expired"}
    assert last["meta"]["actor"] == "ledger-service" and last["meta"]["role"] == "service"
    # a second sweep (another API process) finds nothing more to do
    assert client.portal.call(leases.sweep, ctx, later) == []
    assert client.get(f"/tasks/{untouched}/events", headers=auth(agent)).json()[-1]["version"] == 1

    # the dead worker has lost it; another agent claims it again
    r = post(client, agent, f"/tasks/{tid}/complete", {"result": {}})
    assert r.status_code == 409
    r = post(client, other, f"/tasks/{tid}/claim")
    assert r.status_code == 200 and r.json()["worker"] == "agent-2" and r.json()["attempts"] == 2


def test_the_background_sweeper_requeues_without_help(
    settings: Settings, keyring: dict[str, str]
) -> None:
    fast = settings.model_copy(update={"lease_sweep_seconds": 0.1})
    agent = keyring["agent"]
    with TestClient(app_with_runner(fast)) as client:
        tid = submit(client, agent)["id"]
        r = post(client, agent, f"/tasks/{tid}/claim", {"lease_seconds": 1})
        assert r.status_code == 200
        deadline = time.monotonic() + 30
        status = "running"
        while status == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            status = client.get(f"/tasks/{tid}", headers=auth(agent)).json()["status"]
        assert status == "queued"
        r = post(client, keyring["agent2"], f"/tasks/{tid}/claim")
        assert r.status_code == 200


def test_openapi_describes_the_task_shapes(client: Any) -> None:
    spec = client.get("/openapi.json").json()
    get = spec["paths"]["/tasks/{task_id}"]["get"]
    ref = get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/TaskOut")
    props = spec["components"]["schemas"]["TaskOut"]["properties"]
    for f in ("id", "agent_name", "task_type", "status", "payload", "result", "error"):
        assert f in props
    step = spec["components"]["schemas"]["StepRequest"]["properties"]["kind"]
    assert set(step["enum"]) == {"prompt", "model_output", "tool_call", "note"}
    assert "201" in spec["paths"]["/tasks"]["post"]["responses"]


@pytest.mark.parametrize("task_type", ["TradePrecheck", "pricing.check:v2", "desk/fx-exposure"])
def test_task_types_are_names_not_only_lowercase(
    client: Any, keyring: dict[str, str], task_type: str
) -> None:
    r = post(client, keyring["agent"], "/tasks", {"task_type": task_type, "payload": {}})
    assert r.status_code == 201, r.text


def test_correlation_and_causation_ids_come_from_headers(
    client: Any, keyring: dict[str, str]
) -> None:
    """SPEC §1's optional meta: set by X-Correlation-Id / X-Causation-Id, checked,
    and a bad one is a 422 that writes nothing."""
    agent = keyring["agent"]
    body = {"task_type": "position_check", "payload": PAYLOAD}
    hdrs = {"X-Correlation-Id": "deal-7781", "X-Causation-Id": "msg-0042"}
    r = post(client, agent, "/tasks", body, **hdrs)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    events = client.get(f"/tasks/{tid}/events", headers=auth(keyring["officer"])).json()
    assert events[0]["meta"]["correlation_id"] == "deal-7781"
    assert events[0]["meta"]["causation_id"] == "msg-0042"
    before = head(client, keyring["auditor"])
    r = post(client, agent, "/tasks", body, **{"X-Correlation-Id": "has space"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "X-Correlation-Id"
    assert head(client, keyring["auditor"]) == before
