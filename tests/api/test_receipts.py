"""Receipts (C2SP tlog-proof) of an event and of a task, cosigned by two
witness processes, checked offline by ``ledger verify`` with a quorum."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import psycopg
from fastapi.testclient import TestClient

from ledger.proofs import cosignature, note, signing
from tests.support import (
    ORIGIN,
    app_with_runner,
    append_events,
    auth,
    ledger_verify,
    proof_settings,
)
from tests.witness_support import witness_key, witnesses


def test_receipts_and_checkpoints_verify_only_with_their_quorum(
    db_url: str,
    key_file: Path,
    tmp_path: Path,
    keyring: dict[str, str],
    service_conn: psycopg.Connection[Any],
) -> None:
    log_vkey = signing.create_key_file(key_file, ORIGIN).verifier.vkey
    homes = [tmp_path / "w1", tmp_path / "w2"]
    wk = [witness_key(h, f"witness.example/w{i}") for i, h in enumerate(homes, 1)]
    stranger = cosignature.Cosigner.generate("witness.example/w3").key.vkey
    with witnesses(homes, [log_vkey]) as (w1, w2):
        settings = proof_settings(db_url, key_file).model_copy(
            update={"witnesses": f"{w1.url} {wk[0]},{w2.url} {wk[1]}", "witness_quorum": 2}
        )
        with TestClient(app_with_runner(settings)) as client:
            agent, auditor = auth(keyring["agent"]), auth(keyring["auditor"])
            r = client.post(
                "/tasks", json={"task_type": "pricing", "payload": {"x": 1}}, headers=agent
            )
            assert r.status_code == 201
            task, position = r.json()["id"], r.json()["position"]
            assert client.post(f"/tasks/{task}/claim", headers=agent).status_code == 200
            step = {"kind": "note", "content": "priced"}
            assert client.post(f"/tasks/{task}/steps", json=step, headers=agent).status_code == 201
            append_events(service_conn, 5)
            one = client.get(
                "/audit/receipt", params={"position": position}, headers=auth(keyring["officer"])
            )
            assert one.status_code == 200, one.text
            whole = client.get("/audit/receipt", params={"task": task}, headers=auditor)
            assert whole.status_code == 200
            cp_text = client.get("/log/checkpoint").text
            export = client.get("/audit/export", headers=auditor).content
            assert (
                client.get(
                    "/audit/receipt", params={"position": position}, headers=agent
                ).status_code
                == 403
            )
    lines = one.text.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1" and lines[2] == f"index {position - 1}"
    event = orjson.loads(base64.b64decode(lines[1].removeprefix("extra ")))
    assert event["position"] == position and event["type"] == "TaskSubmitted"
    assert whole.text.count("c2sp.org/tlog-proof@v1\n") == 3

    files = {}
    for name, body in [("one", one.text), ("task", whole.text), ("cp", cp_text)]:
        files[name] = tmp_path / f"{name}.tlog-proof"
        files[name].write_text(body)
    (tmp_path / "export.ndjson").write_bytes(export)
    quorum = ["--key", log_vkey, "--witness", wk[0], "--witness", wk[1], "--quorum", "2"]
    for f in (files["one"], files["task"]):
        ok = ledger_verify(f, *quorum)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "cosigned by 2 of 2 witnesses" in ok.stdout
    ok = ledger_verify(tmp_path / "export.ndjson", "--checkpoint", str(files["cp"]), *quorum)
    assert ok.returncode == 0, ok.stdout
    # a witness the checkpoint was not shown to: a quorum of 3 fails
    three = [*quorum[:-1], "3", "--witness", stranger]
    bad = ledger_verify(files["one"], *three)
    assert bad.returncode == 1 and "2 valid cosignatures of the 3 demanded" in bad.stdout
    # the checkpoint without its cosignatures: what only the operator signed
    bare = (
        cp_text.split("\n\n")[0]
        + "\n\n"
        + next(
            ln + "\n"
            for ln in cp_text.split("\n\n")[1].splitlines()
            if ln.startswith(f"— {ORIGIN} ")
        )
    )
    assert note.open_checkpoint(bare, [note.Verifier.parse(log_vkey)])
    files["cp"].write_text(bare)
    bad = ledger_verify(tmp_path / "export.ndjson", "--checkpoint", str(files["cp"]), *quorum)
    assert bad.returncode == 1 and "0 valid cosignatures" in bad.stdout
    assert (
        ledger_verify(
            tmp_path / "export.ndjson", "--checkpoint", str(files["cp"]), "--key", log_vkey
        ).returncode
        == 0
    )
    # a task's receipt with an event left out, or an event altered, fails
    first, _second, third = whole.text.split("c2sp.org/tlog-proof@v1\n")[1:]
    files["task"].write_text("".join("c2sp.org/tlog-proof@v1\n" + p for p in (first, third)))
    bad = ledger_verify(files["task"], *quorum)
    assert bad.returncode == 1 and "missing or extra" in bad.stdout
    altered = dict(event, data={**event["data"], "payload": {"x": 2}})
    files["one"].write_text(
        one.text.replace(lines[1], "extra " + base64.b64encode(orjson.dumps(altered)).decode())
    )
    bad = ledger_verify(files["one"], *quorum)
    assert bad.returncode == 1 and "does not hash" in bad.stdout
