"""Erasure with four eyes on a real PostgreSQL (docs/privacy.md §5–§6): the
subject's keys are destroyed with SubjectForgotten, reads show the fields
erased, and every export, checkpoint and proof from before still verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from ledger import cli
from ledger.privacy.fields import MARK
from ledger.settings import Settings
from tests.api.test_privacy_fields import KYC, post, submit_kyc, work_kyc
from tests.support import auth, create_key, proof_settings, vkey, wait_for_checkpoint

OTHER = {**KYC, "client_id": "C-7", "client_name": "Grace Hopper"}


@pytest.fixture
def settings(db_url: str, key_file: Path) -> Settings:  # fast checkpoints, the test's own key
    return proof_settings(db_url, key_file)


def head(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT position FROM ledger_head").fetchone()[0])


def forget(client: Any, keyring: dict[str, str], subject: str) -> dict[str, Any]:
    r = post(
        client, keyring["officer"], "/privacy/erasures", {"subject": subject, "reason": "art17"}
    )
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    assert out["status"] == "proposed" and out["proposed_by"] == "officer-1"
    return out


def approve(client: Any, key: str, erasure_id: str) -> Any:
    return post(client, key, f"/privacy/erasures/{erasure_id}/approve", {"comment": "ok"})


def export(client: Any, key: str, to: int | None = None) -> bytes:
    params = {"to": to} if to else {}
    r = client.get("/audit/export", params=params, headers=auth(key))
    assert r.status_code == 200
    return bytes(r.content)


def test_forget_subject_needs_four_eyes_and_keeps_every_proof(
    client: Any,
    keyring: dict[str, str],
    db_url: str,
    super_conn: psycopg.Connection[Any],
    tmp_path: Path,
    key_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    auditor, officer, admin = keyring["auditor"], keyring["officer"], keyring["admin"]
    a = submit_kyc(client, keyring["agent"])["id"]
    work_kyc(client, keyring, a)
    b = submit_kyc(client, keyring["agent"])["id"]
    c = submit_kyc(client, keyring["agent"], OTHER)["id"]

    size = head(super_conn)
    cp_text = wait_for_checkpoint(client, auditor, size)
    (tmp_path / "cp1.txt").write_text(cp_text)
    (tmp_path / "key.vkey").write_text(vkey(client, auditor).vkey + "\n")
    before = export(client, auditor, size)
    (tmp_path / "before.ndjson").write_bytes(before)
    r = client.get(
        "/audit/proof/inclusion", params={"position": 7, "tree_size": size}, headers=auth(auditor)
    )
    (tmp_path / "inc.json").write_bytes(r.content)
    stored_7 = client.get("/events", params={"after": 6, "limit": 1}, headers=auth(auditor))
    (tmp_path / "event7.json").write_bytes(orjson.dumps(stored_7.json()["items"][0]))

    req = forget(client, keyring, "client:C-1042")
    eid = req["id"]
    # the other roles cannot decide it, nor can the proposer under another role
    assert approve(client, officer, eid).status_code == 403
    assert approve(client, keyring["auditor"], eid).status_code == 403
    as_admin = create_key(db_url, "officer-1", "admin")  # the proposer, re-keyed as an admin
    written = head(super_conn)
    r = approve(client, as_admin, eid)
    assert r.status_code == 403 and "four eyes" in r.json()["detail"]
    assert head(super_conn) == written
    alive = super_conn.execute("SELECT count(*) FROM data_keys WHERE wrapped IS NOT NULL")
    assert alive.fetchone()[0] == 3

    r = approve(client, admin, eid)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "forgotten" and done["decided_by"] == "admin-1"
    assert len(done["keys"]) == 2
    assert approve(client, admin, eid).status_code == 409  # decided once
    rows = super_conn.execute(
        "SELECT subject, wrapped IS NULL, destroyed_by FROM data_keys ORDER BY subject"
    ).fetchall()
    assert sorted(rows) == [
        ("client:C-1042", True, "SubjectForgotten"),
        ("client:C-1042", True, "SubjectForgotten"),
        ("client:C-7", False, None),
    ]

    # reads: erased for everyone, the other subject untouched, the fold unchanged
    for role in ("officer", "agent", "auditor"):
        for tid in (a, b):
            got = client.get(f"/tasks/{tid}", headers=auth(keyring[role])).json()
            mark = got["payload"]["client_name"][MARK]
            assert mark["status"] == "erased" and mark["erased_by"] == "SubjectForgotten"
            assert got["payload"]["client_id"] == "C-1042"
    got = client.get(f"/tasks/{a}", params={"min_position": size}, headers=auth(officer))
    assert got.json()["status"] == "done"
    assert client.get(f"/tasks/{c}", headers=auth(officer)).json()["payload"] == OTHER
    replay = client.get(f"/tasks/{a}/replay", params={"position": size}, headers=auth(officer))
    assert "Ada" not in replay.text and "erased" in replay.text
    assert replay.json()["state"]["result"]["ok"] == 1

    # nothing new is recorded about a forgotten subject
    r = post(client, keyring["agent"], "/tasks", {"task_type": "kyc_review", "payload": KYC})
    assert r.status_code == 409, r.text
    # ...and a second request to forget it is refused
    r = post(client, officer, "/privacy/erasures", {"subject": "client:C-1042", "reason": "x"})
    assert r.status_code == 409

    # exports: the same bytes as before, verified against the same checkpoint
    after = export(client, auditor, size)
    assert after == before
    whole = export(client, auditor)
    assert whole.startswith(before) and b"Ada" not in whole
    (tmp_path / "after.ndjson").write_bytes(whole)
    kf = str(tmp_path / "key.vkey")
    cp1 = str(tmp_path / "cp1.txt")
    capsys.readouterr()
    assert (
        cli.main(["verify", str(tmp_path / "before.ndjson"), "--checkpoint", cp1, "--key", kf]) == 0
    )
    assert cli.main(["verify", str(tmp_path / "after.ndjson")]) == 0
    (tmp_path / "after-1-size.ndjson").write_bytes(after)
    args = ["verify", str(tmp_path / "after-1-size.ndjson"), "--checkpoint", cp1, "--key", kf]
    assert cli.main(args) == 0  # the same checkpoint as before the erasure
    # the inclusion proof taken before still proves the stored event
    base = ["verify", "--checkpoint", cp1, "--key", kf]
    ev = [*base, "--event", str(tmp_path / "event7.json"), "--proof", str(tmp_path / "inc.json")]
    assert cli.main(ev) == 0
    # and the ledger after the erasure is consistent with the checkpoint before it
    new_size = head(super_conn)
    (tmp_path / "cp2.txt").write_text(wait_for_checkpoint(client, auditor, new_size))
    cons = client.get(
        "/audit/proof/consistency", params={"from": size, "to": new_size}, headers=auth(auditor)
    )
    cp2 = tmp_path / "cp2.txt"
    (tmp_path / "con.json").write_bytes(cons.content)
    args = ["verify", "--checkpoint", str(cp2), "--key", kf, "--old-checkpoint", cp1]
    assert cli.main([*args, "--proof", str(tmp_path / "con.json")]) == 0
    # the task's audit bundle: proven against a checkpoint, its keys said erased
    bundle_file = tmp_path / "task.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEDGER_DATABASE_URL", db_url)
        mp.setenv("LEDGER_SIGNING_KEY_FILE", str(key_file))
        mp.setenv("LEDGER_HOME", str(tmp_path / "cli-home"))
        assert cli.main(["audit-bundle", "--task", a, "--out", str(bundle_file)]) == 0
    bundle = orjson.loads(bundle_file.read_bytes())
    (kid,) = bundle["protected"]  # the task's one key, among those the erasure destroyed
    assert kid in done["keys"] and bundle["protected"][kid]["status"] == "erased"
    assert bundle["protected"][kid]["erased_at_position"] == done["position"]
    assert b"Ada" not in bundle_file.read_bytes()
    assert cli.main(["verify", str(bundle_file), "--key", kf]) == 0
    out = capsys.readouterr().out
    assert "Ada" not in out and "all 4 events of task-" in out


def test_legal_hold_on_a_subject_blocks_its_erasure_until_released(
    client: Any, keyring: dict[str, str], super_conn: psycopg.Connection[Any]
) -> None:
    officer, admin = keyring["officer"], keyring["admin"]
    tid = submit_kyc(client, keyring["agent"])["id"]
    hold = {"scope": "subject", "target": "client:C-1042", "reason": "litigation 2026-17"}
    r = post(client, officer, "/privacy/holds", hold)
    assert r.status_code == 201, r.text
    hold_id = r.json()["id"]
    assert post(client, admin, "/privacy/holds", hold).status_code == 403  # officers place holds
    listed = client.get("/privacy/holds", headers=auth(keyring["auditor"])).json()
    assert [h["id"] for h in listed] == [hold_id]

    eid = forget(client, keyring, "client:C-1042")["id"]
    written = head(super_conn)
    r = approve(client, admin, eid)
    assert r.status_code == 409 and "legal hold" in r.json()["detail"]
    assert head(super_conn) == written
    assert client.get(f"/tasks/{tid}", headers=auth(officer)).json()["payload"] == KYC

    r = post(client, officer, f"/privacy/holds/{hold_id}/release", {"reason": "settled"})
    assert r.status_code == 200, r.text
    assert (
        post(client, officer, f"/privacy/holds/{hold_id}/release", {"reason": "x"}).status_code
        == 409
    )
    assert client.get("/privacy/holds", headers=auth(officer)).json() == []
    assert approve(client, admin, eid).status_code == 200
    got = client.get(f"/tasks/{tid}", headers=auth(officer)).json()
    assert got["payload"]["client_name"][MARK]["status"] == "erased"


def test_rejected_erasure_destroys_nothing(
    client: Any, keyring: dict[str, str], super_conn: psycopg.Connection[Any]
) -> None:
    tid = submit_kyc(client, keyring["agent"])["id"]
    eid = forget(client, keyring, "client:C-1042")["id"]
    r = post(client, keyring["admin"], f"/privacy/erasures/{eid}/reject", {"comment": "no basis"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert approve(client, keyring["admin"], eid).status_code == 409
    assert client.get(f"/tasks/{tid}", headers=auth(keyring["officer"])).json()["payload"] == KYC
    gone = super_conn.execute("SELECT count(*) FROM data_keys WHERE wrapped IS NULL")
    assert gone.fetchone()[0] == 0
    for bad in ({"subject": "nobody", "reason": "x"}, {"subject": "client:C 1", "reason": "x"}):
        r = post(client, keyring["officer"], "/privacy/erasures", bad)
        assert r.status_code == 422
