"""KEK rotation with the service running (docs/privacy.md §3): every live
key is wrapped again, the old KEK leaves its file, and the service goes on
sealing and reading with the new one."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ledger import cli
from ledger.privacy import crypto
from ledger.settings import Settings
from tests.api.test_privacy_fields import KYC, submit_kyc
from tests.support import auth


def test_rotate_kek_while_serving(
    client: Any,
    keyring: dict[str, str],
    settings: Settings,
    db_url: str,
    super_conn: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    officer = keyring["officer"]
    first = submit_kyc(client, keyring["agent"])["id"]
    path = settings.home / "kek.key"
    old = crypto.load_kek(path)
    (old_wrapped,) = super_conn.execute("SELECT wrapped FROM data_keys").fetchone()

    monkeypatch.setenv("LEDGER_DATABASE_URL", db_url)
    monkeypatch.setenv("LEDGER_HOME", str(settings.home))
    assert cli.main(["privacy", "rotate-kek"]) == 0
    new = crypto.load_kek(path)
    assert new.id != old.id and not (settings.home / "kek.key.next").exists()
    rows = super_conn.execute("SELECT kek_id, wrapped FROM data_keys").fetchall()
    assert [r[0] for r in rows] == [new.id]
    assert bytes(rows[0][1]) != bytes(old_wrapped)
    with pytest.raises(crypto.KeyError_):
        old.unwrap(rows[0][1])  # what the old KEK wrapped is all it can open
    assert new.unwrap(rows[0][1]) == old.unwrap(old_wrapped)
    in_force = super_conn.execute("SELECT kek_id FROM privacy_kek").fetchone()
    assert in_force == (new.id,)

    # the service still holds the old KEK: it is refused a key, reloads, seals
    second = submit_kyc(client, keyring["agent"], {**KYC, "client_id": "C-2"})["id"]
    assert (
        client.get(f"/tasks/{second}", headers=auth(officer)).json()["payload"]["client_id"]
        == "C-2"
    )
    assert client.get(f"/tasks/{first}", headers=auth(officer)).json()["payload"] == KYC
    kek_ids = super_conn.execute("SELECT DISTINCT kek_id FROM data_keys").fetchall()
    assert kek_ids == [(new.id,)]

    # a KEK file that is not the ledger's cannot rotate it, nor seal with it
    path.write_text(crypto.b64u(bytes(32)) + "\n")
    path.chmod(0o600)
    assert cli.main(["privacy", "rotate-kek"]) == 2
    assert super_conn.execute("SELECT kek_id FROM privacy_kek").fetchone() == (new.id,)
    assert [r[0] for r in super_conn.execute("SELECT kek_id FROM data_keys")] == [new.id] * 2


def test_an_unusable_kek_file_refuses_protected_writes_only(
    client: Any, keyring: dict[str, str], settings: Settings, super_conn: psycopg.Connection[Any]
) -> None:
    path = settings.home / "kek.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(crypto.b64u(bytes(range(32))) + "\n")
    path.chmod(0o644)  # readable by others: refused
    head = super_conn.execute("SELECT position FROM ledger_head").fetchone()[0]
    r = client.post(
        "/tasks", json={"task_type": "kyc_review", "payload": KYC}, headers=auth(keyring["agent"])
    )
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert "chmod 600" in r.json()["detail"] and r.headers["retry-after"] == "5"
    assert super_conn.execute("SELECT position FROM ledger_head").fetchone()[0] == head
    body = {"task_type": "position_check", "payload": {"symbol": "AAPL"}}
    assert client.post("/tasks", json=body, headers=auth(keyring["agent"])).status_code == 201
    path.chmod(0o600)
    assert submit_kyc(client, keyring["agent"])["id"]
