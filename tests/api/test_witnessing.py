"""The service submits each new checkpoint to its witnesses (real
``ledger witness`` processes), stores their cosignatures and serves them; a
witness that dies is reported and catches up when it is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from ledger.proofs import cosignature, note
from ledger.proofs.signing import create_key_file
from ledger.settings import Settings
from tests.support import ORIGIN, app_with_runner, append_events, auth, proof_settings, wait_until
from tests.witness_support import witness_key, witnesses


def cosigned(client: Any, keys: list[cosignature.CosignerKey], path: str, **kw: Any) -> Any:
    r = client.get(path, **kw)
    if r.status_code != 200:
        return None
    good, _bad = cosignature.count_valid(r.text, keys)
    return r.text, good


def test_checkpoints_are_cosigned_and_a_dead_witness_catches_up(
    db_url: str,
    key_file: Path,
    tmp_path: Path,
    keyring: dict[str, str],
    service_conn: psycopg.Connection[Any],
    super_conn: psycopg.Connection[Any],
) -> None:
    log_vkey = create_key_file(key_file, ORIGIN).verifier.vkey
    homes = [tmp_path / "w1", tmp_path / "w2"]
    wkeys = [witness_key(h, f"witness.example/w{i}") for i, h in enumerate(homes, 1)]
    keys = [cosignature.CosignerKey.parse(k) for k in wkeys]
    with witnesses(homes, [log_vkey]) as (w1, w2):
        settings: Settings = proof_settings(db_url, key_file).model_copy(
            update={
                "witnesses": f"{w1.url} {wkeys[0]}, {w2.url} {wkeys[1]}",
                "witness_quorum": 2,
                "witness_retry_seconds": 0.1,
            }
        )
        with TestClient(app_with_runner(settings)) as client:
            append_events(service_conn, 30)
            head = int(service_conn.execute("SELECT max(position) FROM events").fetchone()[0])

            def quorum_at(size: int) -> Any:
                got = cosigned(client, keys, "/log/checkpoint")
                if got is None or len(got[1]) < 2:
                    return None
                cp, _ = note.open_checkpoint(got[0], [note.Verifier.parse(log_vkey)])
                return got[0] if cp.size >= size else None

            wait_until(lambda: quorum_at(head), what="a quorum-cosigned checkpoint")
            # the audit route serves the same cosignatures
            a = client.get("/audit/checkpoint", headers=auth(keyring["auditor"]))
            assert len(cosignature.count_valid(a.text, keys)[0]) == 2
            # what each witness keeps is what it cosigned
            for w, k in zip((w1, w2), keys, strict=True):
                import hashlib

                mon = httpx.get(f"{w.url}/{hashlib.sha256(ORIGIN.encode()).hexdigest()}/checkpoint")
                assert mon.status_code == 200 and k.timestamp_in(mon.text)
            gone = cosignature.Cosigner.generate("witness.example/gone").key.vkey
            super_conn.execute(
                "INSERT INTO witness_status (witness, url, ok) VALUES (%s, 'http://gone', false)",
                (gone,),
            )
            h = client.get("/health").json()  # a witness no longer configured is not shown
            assert [x["reachable"] for x in h["witnesses"]] == [True, True]
            assert all(x["cosigned_size"] >= head for x in h["witnesses"])

            # the second witness dies: the ledger goes on, /health says so
            w2.kill()
            append_events(service_conn, 10)
            head2 = head + 10

            def w2_down() -> bool:
                ws = {x["url"]: x for x in client.get("/health").json()["witnesses"]}
                return not ws[w2.url]["reachable"] and "unreachable" in (ws[w2.url]["error"] or "")

            wait_until(w2_down, what="/health telling of the dead witness")
            r = client.get("/audit/checkpoint", headers=auth(keyring["auditor"]))
            cp, _ = note.open_checkpoint(r.text, [note.Verifier.parse(log_vkey)])
            assert cp.size >= head2  # signing goes on
            assert [k.name for k in cosignature.count_valid(r.text, keys)[0]] in (
                [],
                ["witness.example/w1"],
            )
            stale = client.get("/log/checkpoint").text  # still the last quorum-cosigned one
            assert note.open_checkpoint(stale, [note.Verifier.parse(log_vkey)])[0].size < head2

            # back again (same key and state): it is given the latest checkpoint
            w2.start()
            wait_until(lambda: quorum_at(head2), what="the returned witness cosigning")
            ws = client.get("/health").json()["witnesses"]
            assert all(x["reachable"] for x in ws)
    # the cosignatures are kept like the checkpoints: not even a superuser
    # deletes one without disabling the trigger first
    for sql in (
        "DELETE FROM checkpoint_cosignatures",
        "UPDATE checkpoint_cosignatures SET line = ''",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            super_conn.execute(sql)
    assert super_conn.execute("SELECT count(*) FROM checkpoint_cosignatures").fetchone()[0] >= 4
