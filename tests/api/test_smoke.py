from __future__ import annotations

from typing import Any

from tests.support import auth


def test_head_of_an_empty_ledger_then_after_keys(client: Any, keyring: dict[str, str]) -> None:
    r = client.get("/audit/head", headers=auth(keyring["auditor"]))
    assert r.status_code == 200
    assert r.json()["position"] == 5  # five principals were created
    assert len(r.json()["hash"]) == 64
