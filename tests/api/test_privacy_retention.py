"""Retention and legal hold on a real PostgreSQL (docs/privacy.md §7): what
expires, what a hold keeps, and expiry as an event that destroys keys."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from ledger import cli, clock
from ledger.appender import append_sync
from ledger.events import NewEvent, StreamAppend
from ledger.privacy import retention
from ledger.privacy.fields import MARK
from tests.api.test_privacy_fields import KYC, post, submit_kyc, work_kyc
from tests.support import auth

EXPOSURE = {"client_id": "C-9", "desk": "rates", "client_name": "Alan Turing", "limits": 7}
LATER = clock.now() + timedelta(days=6 * 365 + 2)  # past every rule's period


def done_task(client: Any, keyring: dict[str, str], task_type: str, payload: Any) -> str:
    r = post(client, keyring["agent"], "/tasks", {"task_type": task_type, "payload": payload})
    assert r.status_code == 201, r.text
    tid: str = r.json()["id"]
    worker = keyring["agent2"]
    assert post(client, worker, f"/tasks/{tid}/claim").status_code == 200
    r = post(client, worker, f"/tasks/{tid}/complete", {"result": {"exposure": 1}})
    assert r.status_code == 200, r.text
    return tid


def test_plan_and_apply_expire_finished_unheld_tasks_only(
    client: Any,
    keyring: dict[str, str],
    service_conn: psycopg.Connection[Any],
    super_conn: psycopg.Connection[Any],
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    officer = keyring["officer"]
    done = submit_kyc(client, keyring["agent"])["id"]
    work_kyc(client, keyring, done)
    cancelled = submit_kyc(client, keyring["agent"])["id"]
    r = post(client, officer, f"/tasks/{cancelled}/cancel", {"reason": "dup"})
    assert r.status_code == 200
    queued = submit_kyc(client, keyring["agent"])["id"]
    held_task = submit_kyc(client, keyring["agent"])["id"]
    work_kyc(client, keyring, held_task)
    held_type = done_task(client, keyring, "client_exposure_review", EXPOSURE)
    holds = [
        {"scope": "task", "target": held_task, "reason": "subpoena 1"},
        {"scope": "task_type", "target": "client_exposure_review", "reason": "regulator review"},
    ]
    for h in holds:
        assert post(client, officer, "/privacy/holds", h).status_code == 201

    # nothing is due now; six years on, the finished unheld tasks are
    assert retention.plan(service_conn, clock.now()) == []
    planned = {e.task_type: e for e in retention.plan(service_conn, LATER)}
    kyc = planned["kyc_review"]
    assert kyc.rule == "mifir-5y" and kyc.retention_days == 1825
    assert sorted(t["task_id"] for t in kyc.tasks) == sorted([done, cancelled])
    assert [t["task_id"] for t in kyc.held] == [held_task]
    assert queued not in str(kyc.as_dict())
    exposure = planned["client_exposure_review"]
    assert exposure.tasks == [] and [t["task_id"] for t in exposure.held] == [held_type]

    # the same plan over HTTP and from the command line
    r = client.get("/privacy/retention/plan", params={"as_of": clock.format_time(LATER)},
                   headers=auth(officer))  # fmt: skip
    assert r.status_code == 200 and r.json()["expiries"][0]["task_type"] == "kyc_review"
    assert client.get("/privacy/retention/plan", headers=auth(keyring["agent"])).status_code == 403
    monkeypatch.setenv("LEDGER_DATABASE_URL", db_url)
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LEDGER_OPERATOR", "records-officer")
    capsys.readouterr()
    assert cli.main(["retention", "plan", "--as-of", clock.format_time(LATER)]) == 0
    out = capsys.readouterr().out
    assert f"expire {done}" in out and f"held   {held_task}" in out
    assert cli.main(["retention", "apply", "--as-of", clock.format_time(LATER)]) == 2
    assert cli.main(["retention", "apply", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == []  # nothing is due today

    # expiry (the moment given, as the command line would once it is due)
    meta = {"actor": "records-officer", "role": "admin", "request_id": "test"}
    (applied,) = retention.apply(service_conn, LATER, meta)
    assert applied["rule"] == "mifir-5y" and sorted(applied["tasks"]) == sorted([done, cancelled])
    (raw,) = super_conn.execute(
        "SELECT canonical FROM events WHERE position = %s", (applied["position"],)
    ).fetchone()
    event = orjson.loads(bytes(raw))
    assert event["type"] == "RetentionExpired" and event["meta"]["actor"] == "records-officer"
    assert event["data"]["keys"] == applied["keys"] and len(applied["keys"]) == 2
    assert event["data"]["as_of"] == clock.format_time(LATER)
    gone = super_conn.execute(
        "SELECT stream FROM data_keys WHERE destroyed_by = 'RetentionExpired' ORDER BY stream"
    ).fetchall()
    assert sorted(s for (s,) in gone) == sorted([f"task-{done}", f"task-{cancelled}"])

    got = client.get(f"/tasks/{done}", headers=auth(officer)).json()
    assert got["payload"]["client_name"][MARK]["status"] == "erased"
    assert got["payload"]["client_name"][MARK]["erased_by"] == "RetentionExpired"
    assert client.get(f"/tasks/{held_task}", headers=auth(officer)).json()["payload"] == KYC
    assert client.get(f"/tasks/{queued}", headers=auth(officer)).json()["payload"] == KYC
    # expired once: a second run finds nothing more of it
    again = {e.task_type: e for e in retention.plan(service_conn, LATER)}
    assert again["kyc_review"].tasks == []

    # releasing the type's hold lets its task expire on the next run
    hold_id = next(
        h["id"] for h in client.get("/privacy/holds", headers=auth(officer)).json()
        if h["scope"] == "task_type"
    )  # fmt: skip
    assert (
        post(client, officer, f"/privacy/holds/{hold_id}/release", {"reason": "closed"}).status_code
        == 200
    )
    (second,) = retention.apply(service_conn, LATER, meta)
    assert second["tasks"] == [held_type] and len(second["keys"]) == 2  # client and desk keys


def test_the_database_refuses_to_expire_or_forget_what_a_hold_covers(
    client: Any,
    keyring: dict[str, str],
    service_conn: psycopg.Connection[Any],
    super_conn: psycopg.Connection[Any],
) -> None:
    """A hold placed after the plan was made still wins: the trigger refuses
    the RetentionExpired or SubjectForgotten event, and no key goes."""
    officer = keyring["officer"]
    tid = submit_kyc(client, keyring["agent"])["id"]
    work_kyc(client, keyring, tid)
    (planned,) = retention.plan(service_conn, LATER)  # the plan, made before the hold
    hold = {"scope": "subject", "target": "client:C-1042", "reason": "new claim"}
    assert post(client, officer, "/privacy/holds", hold).status_code == 201
    head = super_conn.execute("SELECT position FROM ledger_head").fetchone()[0]
    meta = {"actor": "records-officer", "role": "admin", "request_id": "test"}
    stale = {"rule": planned.rule, "task_type": "kyc_review", "tasks": [tid], "keys": planned.keys}
    forgotten = {"subject": "client:C-1042", "keys": planned.keys}
    for stream, etype, data in (
        ("retention-00000000-0000-7000-8000-000000000001", "RetentionExpired", stale),
        ("erasure-00000000-0000-7000-8000-000000000001", "SubjectForgotten", forgotten),
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            append_sync(service_conn, [StreamAppend(stream, [NewEvent(etype, data)], meta, 0)])
    assert super_conn.execute("SELECT position FROM ledger_head").fetchone()[0] == head
    live = super_conn.execute("SELECT count(*) FROM data_keys WHERE wrapped IS NOT NULL")
    assert live.fetchone()[0] == 1
    # and apply, planning afresh, lets nothing held expire
    assert retention.apply(service_conn, LATER, meta) == []
    assert client.get(f"/tasks/{tid}", headers=auth(officer)).json()["payload"] == KYC
