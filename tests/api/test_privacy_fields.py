"""Protected fields over HTTP on a real PostgreSQL (docs/privacy.md §1–§4):
sealed before hashing, opened for agents and officers, a marker for others,
and task types without a policy stored exactly as before."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ledger import canonical
from ledger.privacy.fields import MARK
from tests.support import auth, create_key

KYC = {
    "client_id": "C-1042",
    "client_name": "Ada Lovelace",
    "date_of_birth": "1815-12-10",
    "jurisdiction": "GB",
}


def post(client: Any, key: str, path: str, body: Any = None) -> Any:
    return client.post(path, json=body, headers=auth(key))


def submit_kyc(client: Any, key: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    r = post(client, key, "/tasks", {"task_type": "kyc_review", "payload": payload or KYC})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def work_kyc(client: Any, keyring: dict[str, str], tid: str) -> int:
    """Claim, one step, complete; the completion's position."""
    worker = keyring["agent2"]
    assert post(client, worker, f"/tasks/{tid}/claim").status_code == 200
    r = post(client, worker, f"/tasks/{tid}/steps", {"kind": "note", "content": "Ada checked"})
    assert r.status_code == 201, r.text
    r = post(client, worker, f"/tasks/{tid}/complete", {"result": {"findings": "Ada ok", "ok": 1}})
    assert r.status_code == 200, r.text
    return int(r.json()["position"])


def test_protected_fields_are_ciphertext_in_the_chain_and_clear_to_readers(
    client: Any, keyring: dict[str, str], super_conn: Any
) -> None:
    tid = submit_kyc(client, keyring["agent"])["id"]
    done_at = work_kyc(client, keyring, tid)

    rows = super_conn.execute(
        "SELECT canonical, hash FROM events WHERE stream = %s ORDER BY version", (f"task-{tid}",)
    ).fetchall()
    assert len(rows) == 4
    for raw, hash_ in rows:
        assert b"Ada" not in bytes(raw) and b"1815" not in bytes(raw)
        assert hashlib.sha256(bytes(raw)).digest() == bytes(hash_)
    submitted = orjson.loads(bytes(rows[0][0]))["data"]["payload"]
    assert submitted["client_id"] == "C-1042" and submitted["jurisdiction"] == "GB"
    inner = submitted["client_name"][MARK]
    assert inner["alg"] == "A256GCM" and inner["subject"] == "client:C-1042"
    assert inner["field"] == "/payload/client_name" and inner["class"] == "personal"

    for role in ("agent", "officer"):
        task = client.get(f"/tasks/{tid}?min_position={done_at}", headers=auth(keyring[role]))
        task = task.json()
        assert task["payload"] == KYC
        assert task["result"] == {"findings": "Ada ok", "ok": 1}
        events = client.get(f"/tasks/{tid}/events", headers=auth(keyring[role])).json()
        assert events[1 + 1]["data"]["content"] == "Ada checked"

    task = client.get(f"/tasks/{tid}", headers=auth(keyring["auditor"])).json()
    marked = task["payload"]["client_name"][MARK]
    assert marked["status"] == "withheld" and marked["subject"] == "client:C-1042"
    assert "ct" not in marked and task["payload"]["jurisdiction"] == "GB"
    replay = client.get(f"/tasks/{tid}/replay?position=10000", headers=auth(keyring["auditor"]))
    assert "Ada" not in replay.text and replay.json()["state"]["status"] == "done"
    assert (
        "Ada"
        in client.get(f"/tasks/{tid}/replay?position=10000", headers=auth(keyring["officer"])).text
    )
    page = client.get("/events?limit=1000", headers=auth(keyring["auditor"])).text
    assert "Ada" not in page and '"ct":' in page  # events as stored: they still hash
    items = client.get("/events?limit=1000", headers=auth(keyring["auditor"])).json()["items"]
    assert all(canonical.compute_event_hash(e) == e["hash"] for e in items)
    export = client.get("/audit/export", headers=auth(keyring["auditor"])).text
    assert "Ada" not in export and "1815" not in export


def test_a_task_type_without_a_policy_is_stored_as_before(
    client: Any, keyring: dict[str, str], super_conn: Any
) -> None:
    payload = {"client_name": "Ada Lovelace", "nested": {MARK: {"v": 1, "kid": "x", "ct": "y"}}}
    r = post(
        client, keyring["agent"], "/tasks", {"task_type": "position_check", "payload": payload}
    )
    assert r.status_code == 201
    (raw,) = super_conn.execute(
        "SELECT canonical FROM events WHERE position = %s", (r.json()["position"],)
    ).fetchone()
    assert orjson.loads(bytes(raw))["data"]["payload"] == payload
    assert canonical.canonical_bytes(payload) in bytes(raw)
    got = client.get(f"/tasks/{r.json()['id']}", headers=auth(keyring["auditor"])).json()
    assert got["payload"] == payload
    assert super_conn.execute("SELECT count(*) FROM data_keys").fetchone()[0] == 0


def test_bad_protected_input_is_refused_and_writes_nothing(
    client: Any, keyring: dict[str, str], super_conn: Any
) -> None:
    head = super_conn.execute("SELECT position FROM ledger_head").fetchone()[0]
    no_subject = {k: v for k, v in KYC.items() if k != "client_id"}
    for payload in (no_subject, {**KYC, "client_id": "has space"}, {**KYC, "x": {MARK: 1}}):
        r = post(
            client, keyring["agent"], "/tasks", {"task_type": "kyc_review", "payload": payload}
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
    assert super_conn.execute("SELECT position FROM ledger_head").fetchone()[0] == head
    assert super_conn.execute("SELECT count(*) FROM data_keys").fetchone()[0] == 0


def test_each_task_has_its_own_key_per_subject(
    client: Any, keyring: dict[str, str], super_conn: Any
) -> None:
    a = submit_kyc(client, keyring["agent"])["id"]
    b = submit_kyc(client, keyring["agent"])["id"]
    r = post(
        client,
        keyring["agent"],
        "/tasks",
        {
            "task_type": "client_exposure_review",
            "payload": {"client_id": "C-1042", "desk": "rates", "client_name": "Ada", "limits": 5},
        },
    )
    assert r.status_code == 201, r.text
    rows = super_conn.execute(
        "SELECT subject, stream, length(wrapped) FROM data_keys ORDER BY stream, subject"
    ).fetchall()
    streams = {f"task-{a}", f"task-{b}", f"task-{r.json()['id']}"}
    assert {s for _sub, s, _n in rows} == streams and len(rows) == 4
    assert all(n == 40 for _s, _t, n in rows)
    assert ("desk:rates", f"task-{r.json()['id']}", 40) in rows


def test_the_policies_are_served_as_declared(client: Any, keyring: dict[str, str]) -> None:
    r = client.get("/privacy/policies", headers=auth(keyring["auditor"]))
    assert r.status_code == 200
    kyc = r.json()["task_types"]["kyc_review"]
    assert {"field": "/payload/client_name", "class": "personal"} in kyc["fields"]
    assert kyc["subjects"] == {"personal": {"prefix": "client", "field": "client_id"}}
    assert (kyc["retention_days"], kyc["rule"]) == (1825, "mifir-5y")
    assert r.json()["readers"] == {
        "personal": ["agent", "officer"],
        "confidential": ["agent", "officer"],
    }
    assert "position_check" not in r.json()["task_types"]
    assert client.get("/privacy/policies", headers=auth(keyring["agent"])).status_code == 403


def test_agents_read_in_clear_only_tasks_they_submitted_or_worked(
    client: Any, keyring: dict[str, str], db_url: str
) -> None:
    tid = submit_kyc(client, keyring["agent"])["id"]
    queued = submit_kyc(client, keyring["agent"])["id"]
    done_at = work_kyc(client, keyring, tid)
    stranger = create_key(db_url, "agent-3", "agent")
    for key in (keyring["agent"], keyring["agent2"]):  # the submitter, the worker
        got = client.get(f"/tasks/{tid}", params={"min_position": done_at}, headers=auth(key))
        assert got.json()["payload"] == KYC and got.json()["result"]["findings"] == "Ada ok"
    got = client.get(f"/tasks/{tid}", headers=auth(stranger)).json()
    assert got["payload"]["client_name"][MARK]["status"] == "withheld"
    assert got["result"]["findings"][MARK]["status"] == "withheld"
    listed = client.get("/tasks", params={"task_type": "kyc_review"}, headers=auth(stranger))
    assert "Ada" not in listed.text and len(listed.json()["items"]) == 2
    events = client.get(f"/tasks/{tid}/events", headers=auth(stranger)).json()
    assert "Ada" not in str(events)
    assert all(canonical.compute_event_hash(e) == e["hash"] for e in events)  # as stored
    # claiming a task makes its worker one who needs to know
    r = post(client, stranger, f"/tasks/{queued}/claim")
    assert r.status_code == 200 and r.json()["payload"] == KYC
