"""Authorization follows the chain: the service's own database role cannot
rewrite who may do what (``principals``) or what was verified
(``verify_watermark``); only the append path's trigger and the verifier's
function (SECURITY DEFINER, owned by the schema's owner) write them. A
superuser still can, and verification reports it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support import auth

REFUSED = {
    "principals-role": "UPDATE principals SET role = 'admin' WHERE name = 'agent-1'",
    "principals-revive": "UPDATE principals SET revoked_position = NULL",
    "principals-insert": (
        "INSERT INTO principals (name, role, key_sha256, created_position) "
        "VALUES ('mallory', 'admin', '\\x00', 1)"
    ),
    "principals-delete": "DELETE FROM principals",
    "principals-truncate": "TRUNCATE principals",
    "watermark-update": "UPDATE verify_watermark SET position = 0",
    "watermark-insert": "INSERT INTO verify_watermark (id) VALUES (false)",
    "watermark-delete": "DELETE FROM verify_watermark",
}


@pytest.mark.parametrize("statement", list(REFUSED.values()), ids=list(REFUSED))
def test_service_role_may_not_write_principals_or_the_watermark(
    keyring: dict[str, str], service_conn: psycopg.Connection[Any], statement: str
) -> None:
    before = service_conn.execute("SELECT * FROM principals ORDER BY name").fetchall()
    mark = service_conn.execute("SELECT * FROM verify_watermark").fetchall()
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        service_conn.execute(statement)
    assert service_conn.execute("SELECT * FROM principals ORDER BY name").fetchall() == before
    assert service_conn.execute("SELECT * FROM verify_watermark").fetchall() == mark


def test_the_agent_stays_an_agent(
    client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]
) -> None:
    """The attack the grants stop: the agent's key never reaches the admin routes."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        service_conn.execute("UPDATE principals SET role = 'admin' WHERE name = 'agent-1'")
    assert client.get("/admin/keys", headers=auth(keyring["agent"])).status_code == 403


def test_the_watermark_moves_only_forward_onto_an_event_it_names(
    client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]
) -> None:
    body = client.get("/audit/verify", headers=auth(keyring["auditor"])).json()
    assert body["ok"] and body["verified_to"] == 5
    (h3,) = service_conn.execute("SELECT hash FROM events WHERE position = 3").fetchone() or ()
    (h5,) = service_conn.execute("SELECT hash FROM events WHERE position = 5").fetchone() or ()
    moved = "SELECT ledger_verified(%s, %s, 0)"
    assert service_conn.execute(moved, (3, h3)).fetchone() == (False,)  # backwards
    assert service_conn.execute(moved, (9, h5)).fetchone() == (False,)  # no such event
    assert service_conn.execute(moved, (5, h3)).fetchone() == (False,)  # not its hash
    assert service_conn.execute("SELECT position, hash FROM verify_watermark").fetchone() == (
        5,
        h5,
    )


TAMPER = {
    "role": ("UPDATE principals SET role = 'admin' WHERE name = 'agent-1'", "agent-1"),
    "revived": (
        "UPDATE principals SET revoked_position = NULL WHERE name = 'agent-2'",
        "agent-2",
    ),
    "key": (
        "UPDATE principals SET key_sha256 = sha256('lk_forged'::bytea) WHERE name = 'officer-1'",
        "officer-1",
    ),
    "deleted": ("DELETE FROM principals WHERE name = 'auditor-1'", "auditor-1"),
    "inserted": (
        "INSERT INTO principals (name, role, key_sha256, created_position) "
        "VALUES ('mallory', 'admin', sha256('lk_mallory'::bytea), 1)",
        "mallory",
    ),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_a_superuser_edit_of_principals_is_reported_by_verification(
    client: Any, keyring: dict[str, str], super_conn: psycopg.Connection[Any], case: str
) -> None:
    auditor = auth(keyring["auditor"])
    r = client.post("/admin/keys/agent-2/revoke", headers=auth(keyring["admin"]), json={})
    assert r.status_code == 200, r.text
    assert client.get("/audit/verify", headers=auditor).json()["ok"] is True
    statement, name = TAMPER[case]
    super_conn.execute(statement)
    for params in ({}, {"from": 1}, {"from": 2, "to": 3}):
        body = client.get("/audit/verify", params=params, headers=auditor).json()
        assert body["ok"] is False, (params, body)
        assert "principals table" in body["reason"] and repr(name) in body["reason"], body
        assert body["first_bad_position"] is None, body  # every event still verifies
