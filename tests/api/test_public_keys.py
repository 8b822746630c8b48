"""GET /audit/public-key?all=true: every key the log has signed with, so
checkpoints from before a rotation still verify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger import cli
from ledger.proofs import note, signing
from ledger.settings import Settings
from tests.support import (
    ORIGIN,
    append_events,
    auth,
    proof_settings,
    wait_for_checkpoint,
    wait_until,
)


@pytest.fixture
def settings(db_url: str, key_file: Path) -> Settings:
    return proof_settings(db_url, key_file)


def test_every_key_is_listed_with_the_sizes_it_signed(
    client: Any,
    keyring: dict[str, str],
    service_conn: psycopg.Connection[Any],
    key_file: Path,
    tmp_path: Path,
) -> None:
    a = auth(keyring["auditor"])
    wait_for_checkpoint(client, keyring["auditor"], 5)
    first = client.get("/audit/public-key", params={"all": "true"}, headers=a).text
    assert len(first.splitlines()) == 1
    old_note = client.get("/audit/checkpoint", headers=a).text
    (tmp_path / "old.cp").write_text(old_note)
    _, new_signer = signing.rotate_key_file(key_file, ORIGIN)
    new = new_signer.verifier
    append_events(service_conn, 3)

    def rotated() -> Any:
        r = client.get(
            "/audit/public-key", params={"all": "true"}, headers={**a, "Accept": "application/json"}
        )
        keys = r.json()["keys"]
        return keys if len(keys) == 2 else None

    keys = wait_until(rotated, what="the new key signing")
    old_k, new_k = keys
    assert old_k["vkey"] == first.strip() and new_k["vkey"] == new.vkey
    assert old_k["from_size"] <= old_k["to_size"] <= new_k["from_size"] <= new_k["to_size"]
    # every checkpoint ever signed opens with the listed keys, the key in force at its size
    listed = [note.Verifier.parse(k["vkey"]) for k in keys]
    items = client.get("/audit/checkpoints", params={"limit": 1000}, headers=a).json()["items"]
    for item in items:
        _cp, good = note.open_checkpoint(item["note"], listed)
        spans = [k for k in keys if k["from_size"] <= item["tree_size"] <= k["to_size"]]
        assert {g.vkey for g in good} <= {k["vkey"] for k in spans}
    # the text form is a --key file: the checkpoint from before the rotation verifies
    text = client.get("/audit/public-key", params={"all": "true"}, headers=a).text
    assert text.splitlines() == [old_k["vkey"], new_k["vkey"]]
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text(text)
    latest = client.get("/audit/checkpoint", headers=a).text
    (tmp_path / "new.cp").write_text(latest)
    new_size = note.open_checkpoint(latest, [new])[0].size
    old_size = note.open_checkpoint(old_note, listed)[0].size
    proof = client.get(
        "/audit/proof/consistency", params={"from": old_size, "to": new_size}, headers=a
    )
    (tmp_path / "proof.json").write_text(proof.text)
    args = [
        "verify",
        "--checkpoint",
        str(tmp_path / "new.cp"),
        "--old-checkpoint",
        str(tmp_path / "old.cp"),
        "--proof",
        str(tmp_path / "proof.json"),
        "--key",
        str(keyfile),
    ]
    assert cli.main(args) == 0
    assert cli.main([*args[:-1], new.vkey]) == 1  # the latest key alone: the old one fails
    # the plain form is still the one key of the latest checkpoint (SPEC §5)
    assert client.get("/audit/public-key", headers=a).text.strip() == new.vkey
