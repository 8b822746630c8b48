"""What an auditor does with checkpoints: catch a rewritten ledger, refuse
forged or altered checkpoints, check everything offline with `ledger verify`."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from ledger import cli
from ledger.appender import append_sync
from ledger.audit import offline
from ledger.canonical import canonical_bytes
from ledger.events import NewEvent, StreamAppend
from ledger.proofs import note, origin, signing
from ledger.settings import Settings
from tests.support import ORIGIN, append_events, auth, proof_settings, vkey, wait_for_checkpoint


@pytest.fixture
def settings(db_url: str, key_file: Path) -> Settings:  # fast checkpoints, the test's own key
    return proof_settings(db_url, key_file)


def rewrite_history(super_conn: psycopg.Connection[Any], position: int) -> None:
    """What a superuser can do: edit an old event and recompute every later
    hash, so the chain itself still verifies."""
    super_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    rows = super_conn.execute(
        "SELECT position, canonical FROM events WHERE position >= %s ORDER BY position",
        (position - 1,),
    ).fetchall()
    prev = hashlib.sha256(bytes(rows[0][1])).hexdigest()
    for pos, canonical in rows[1:]:
        event = orjson.loads(bytes(canonical))
        if pos == position:
            event["data"] = {**event["data"], "rewritten": True}
        event["prev_hash"] = prev
        canon = canonical_bytes(event)
        prev = hashlib.sha256(canon).hexdigest()
        super_conn.execute(
            "UPDATE events SET canonical = %s, prev_hash = %s, hash = %s WHERE position = %s",
            (canon, bytes.fromhex(event["prev_hash"]), bytes.fromhex(prev), pos),
        )
    super_conn.execute("ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_delete")
    super_conn.execute("UPDATE ledger_head SET hash = %s", (bytes.fromhex(prev),))


def wipe_tree(super_conn: psycopg.Connection[Any]) -> None:
    """...and throw away the tree and every checkpoint, so the service signs anew."""
    super_conn.execute("ALTER TABLE checkpoints DISABLE TRIGGER checkpoints_no_update_delete")
    super_conn.execute("DELETE FROM checkpoints")
    super_conn.execute("DELETE FROM merkle_tiles")
    super_conn.execute(
        "UPDATE merkle_state SET size = 0, root = sha256(''::bytea), last_hash = %s, halted = NULL",
        (bytes(32),),
    )


def export(client: Any, key: str) -> bytes:
    r = client.get("/audit/export", headers=auth(key))
    assert r.status_code == 200
    return bytes(r.content)


def consistency(client: Any, key: str, old: int, new: int) -> tuple[dict[str, Any], list[bytes]]:
    r = client.get("/audit/proof/consistency", params={"from": old, "to": new}, headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    return body, [bytes.fromhex(h) for h in body["hashes"]]


def test_rewrite_with_a_rebuilt_tree_is_caught_by_consistency(
    settings: Settings,
    keyring: dict[str, str],
    service_conn: psycopg.Connection[Any],
    super_conn: psycopg.Connection[Any],
) -> None:
    from fastapi.testclient import TestClient

    from ledger.api.app import create_app

    key = keyring["auditor"]
    append_events(service_conn, 30)
    with TestClient(create_app(settings, tree=True)) as client:
        v = [vkey(client, key)]
        saved = note.open_checkpoint(wait_for_checkpoint(client, key, 35), v)[0]
        # the honest ledger grows: the saved checkpoint is consistent with the new one
        append_events(service_conn, 5)
        honest = note.open_checkpoint(wait_for_checkpoint(client, key, 40), v)[0]
        proof = consistency(client, key, 35, 40)
        assert offline.check_consistency(saved, honest, *proof).startswith("OK")
    # with the service stopped, a superuser rewrites position 12 and everything
    # after it, throws the tree and the checkpoints away and starts the service
    # again: it builds a tree over the forged history and signs it
    rewrite_history(super_conn, 12)
    wipe_tree(super_conn)
    append_events(service_conn, 1)
    with TestClient(create_app(settings, tree=True)) as client:
        forged = note.open_checkpoint(wait_for_checkpoint(client, key, 41), v)[0]
        assert forged.size == 41
        # the forged ledger is consistent in itself...
        bundle = export(client, key)
        assert offline.check_bundle(bundle, forged, None, None)[-1].startswith("OK")
        # ...but not with the checkpoint the auditor saved before the rewrite
        with pytest.raises(offline.Failed, match="rewritten"):
            offline.check_consistency(saved, forged, *consistency(client, key, 35, 41))
        with pytest.raises(offline.Failed, match="differs from what was signed"):
            offline.check_bundle(bundle, saved, None, None)


def test_rewrite_under_a_kept_tree_halts_it_and_fails_the_bundle(
    client: Any,
    keyring: dict[str, str],
    service_conn: psycopg.Connection[Any],
    super_conn: psycopg.Connection[Any],
) -> None:
    key = keyring["auditor"]
    append_events(service_conn, 10)
    v = [vkey(client, key)]
    saved = note.open_checkpoint(wait_for_checkpoint(client, key, 15), v)[0]
    assert offline.check_bundle(export(client, key), saved, None, None)[-1].startswith("OK")
    rewrite_history(super_conn, 3)
    append_events(service_conn, 1)  # chains to the forged head
    deadline = time.monotonic() + 30
    while (halted := super_conn.execute("SELECT halted FROM merkle_state").fetchone()[0]) is None:
        assert time.monotonic() < deadline, "the tree builder did not notice the rewrite"
        time.sleep(0.05)
    assert "rewritten" in halted
    with pytest.raises(offline.Failed, match="differs from what was signed"):
        offline.check_bundle(export(client, key), saved, None, None)


def test_forged_or_altered_checkpoints_are_refused(
    client: Any, keyring: dict[str, str], tmp_path: Path
) -> None:
    key = keyring["auditor"]
    text = wait_for_checkpoint(client, key, 5)
    real = vkey(client, key)
    cp, _ = note.open_checkpoint(text, [real])
    other = note.Signer.generate(ORIGIN)  # same name, another key
    forged = note.sign_checkpoint(note.Checkpoint(cp.origin, cp.size, bytes(32)), other)
    with pytest.raises(note.NoteError, match="not signed by any"):
        note.open_checkpoint(forged, [real])
    altered = text.replace(f"\n{cp.size}\n", f"\n{cp.size + 1}\n")
    with pytest.raises(note.NoteError, match="does not verify"):
        note.open_checkpoint(altered, [real])
    # the same through `ledger verify`
    (tmp_path / "events.ndjson").write_bytes(export(client, key))
    for name, body, want in (("ok", text, 0), ("forged", forged, 1), ("altered", altered, 1)):
        (tmp_path / f"{name}.txt").write_text(body)
        argv = ["verify", str(tmp_path / "events.ndjson"), "--checkpoint"]
        assert cli.main([*argv, str(tmp_path / f"{name}.txt"), "--key", real.vkey]) == want, name


def test_key_file_readable_by_others_stops_the_service(settings: Settings, key_file: Path) -> None:
    from fastapi.testclient import TestClient

    from ledger.api.app import create_app

    signing.create_key_file(key_file, ORIGIN)
    key_file.chmod(0o644)
    with (
        pytest.raises(signing.KeyFileError, match="group and others"),
        TestClient(create_app(settings, tree=True)),
    ):
        pass


def test_offline_verify_and_audit_bundle(
    client: Any,
    keyring: dict[str, str],
    service_conn: psycopg.Connection[Any],
    db_url: str,
    key_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = keyring["auditor"]
    task = str(uuid.uuid4())
    meta = {"actor": "agent-1", "role": "agent", "request_id": "t"}
    for i in range(3):
        append_events(service_conn, 4)
        cmd = StreamAppend(f"task-{task}", [NewEvent("TaskStepRecorded", {"i": i})], meta)
        assert isinstance(append_sync(service_conn, [cmd])[0], list)
    text = wait_for_checkpoint(client, key, 20)
    v = vkey(client, key)
    (tmp_path / "key.vkey").write_text(v.vkey + "\n")
    (tmp_path / "cp.txt").write_text(text)
    kf = str(tmp_path / "key.vkey")

    # one event with its inclusion proof
    r = client.get("/events", params={"after": 9, "limit": 1}, headers=auth(key))
    event = r.json()["items"][0]
    (tmp_path / "event.json").write_bytes(orjson.dumps(event))
    r = client.get(
        "/audit/proof/inclusion", params={"position": 10, "tree_size": 20}, headers=auth(key)
    )
    (tmp_path / "inc.json").write_bytes(r.content)
    base = ["verify", "--checkpoint", str(tmp_path / "cp.txt"), "--key", kf]
    assert (
        cli.main(
            [*base, "--event", str(tmp_path / "event.json"), "--proof", str(tmp_path / "inc.json")]
        )
        == 0
    )
    event["data"]["i"] = 99
    (tmp_path / "bad.json").write_bytes(orjson.dumps(event))
    assert (
        cli.main(
            [*base, "--event", str(tmp_path / "bad.json"), "--proof", str(tmp_path / "inc.json")]
        )
        == 1
    )

    # an old checkpoint against this one
    old = client.get(
        "/audit/checkpoints", params={"after": 0, "limit": 1}, headers=auth(key)
    ).json()["items"][0]
    (tmp_path / "old.txt").write_text(old["note"])
    proof = client.get(
        "/audit/proof/consistency", params={"from": old["tree_size"], "to": 20}, headers=auth(key)
    )
    (tmp_path / "con.json").write_bytes(proof.content)
    assert (
        cli.main(
            [
                *base,
                "--old-checkpoint",
                str(tmp_path / "old.txt"),
                "--proof",
                str(tmp_path / "con.json"),
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                *base,
                "--old-checkpoint",
                str(tmp_path / "old.txt"),
                "--proof",
                str(tmp_path / "inc.json"),
            ]
        )
        == 1
    )

    # the audit bundle of one task, written from the database, checked with nothing else
    monkeypatch.setenv("LEDGER_DATABASE_URL", db_url)
    monkeypatch.setenv("LEDGER_SIGNING_KEY_FILE", str(key_file))
    out = tmp_path / "task.json"
    assert cli.main(["audit-bundle", "--task", task, "--out", str(out)]) == 0
    bundle = orjson.loads(out.read_bytes())
    assert [e["version"] for e in bundle["events"]] == [1, 2, 3]
    assert bundle["public_key"] == v.vkey
    capsys.readouterr()
    assert cli.main(["verify", str(out), "--key", kf]) == 0
    assert "all 3 events of task-" in capsys.readouterr().out
    tampered = {
        **bundle,
        "events": [dict(bundle["events"][0], data={"i": 7}), *bundle["events"][1:]],
    }
    (tmp_path / "t1.json").write_bytes(orjson.dumps(tampered))
    assert cli.main(["verify", str(tmp_path / "t1.json"), "--key", kf]) == 1
    dropped = {**bundle, "events": bundle["events"][1:], "proofs": bundle["proofs"][1:]}
    (tmp_path / "t2.json").write_bytes(orjson.dumps(dropped))
    assert cli.main(["verify", str(tmp_path / "t2.json"), "--key", kf]) == 1
    other = note.Signer.generate(ORIGIN).verifier.vkey
    assert cli.main(["verify", str(out), "--key", other]) == 1
    assert all(p["tree_size"] == bundle["proofs"][0]["tree_size"] for p in bundle["proofs"])


def test_key_rotation_is_announced_before_the_new_key_signs(
    client: Any,
    keyring: dict[str, str],
    service_conn: psycopg.Connection[Any],
    key_file: Path,
) -> None:
    key = keyring["auditor"]
    wait_for_checkpoint(client, key, 5)
    old = vkey(client, key)
    _, new_signer = signing.rotate_key_file(key_file, ORIGIN)
    new = new_signer.verifier
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert signing.retired_path(key_file, old.key_id).exists()
    append_events(service_conn, 3)
    deadline = time.monotonic() + 30
    while True:
        items = client.get("/audit/checkpoints", headers=auth(key)).json()["items"]
        if any(new.key_id.hex() in i["key_ids"] for i in items):
            break
        assert time.monotonic() < deadline, "the new key never signed"
        time.sleep(0.05)
    (announced,) = [
        e
        for e in client.get("/events", params={"limit": 1000}, headers=auth(key)).json()["items"]
        if e["type"] == "SigningKeyAnnounced"
    ]
    assert announced["stream"] == f"signing-{new.key_id.hex()}"
    assert announced["data"]["vkey"] == new.vkey
    assert announced["data"]["previous_vkey"] == old.vkey
    by_new = [i for i in items if new.key_id.hex() in i["key_ids"]]
    # nothing signed by the new key before its announcement was in the tree...
    assert min(i["tree_size"] for i in by_new) >= announced["position"]
    # ...and the first checkpoint covering the announcement is vouched for by the old key
    first = min(by_new, key=lambda i: i["tree_size"])
    assert note.open_checkpoint(first["note"], [old])[1] == [old]
    assert note.open_checkpoint(first["note"], [new])[1] == [new]
    assert vkey(client, key) == new


def test_a_ledger_keeps_the_origin_of_its_first_checkpoint(
    client: Any,
    keyring: dict[str, str],
    settings: Settings,
    service_conn: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi.testclient import TestClient

    from ledger.api.app import create_app

    key = keyring["auditor"]
    append_events(service_conn, 3)
    assert wait_for_checkpoint(client, key, 3).startswith(ORIGIN + "\n")
    given = settings.model_dump(exclude_unset=True)
    # another origin asked for by name: the service refuses to start and says what to do
    other = Settings(**{**given, "origin": "other.example/log"})
    with (
        pytest.raises(origin.OriginMismatch, match=f"set LEDGER_ORIGIN={ORIGIN}"),
        TestClient(create_app(other, tree=True)),
    ):
        pass
    # no origin given: the ledger's own is used, never the default
    monkeypatch.delenv("LEDGER_ORIGIN", raising=False)
    unset = Settings(**{k: v for k, v in given.items() if k != "origin"})
    assert unset.origin != ORIGIN
    with TestClient(create_app(unset, tree=True)) as c2:
        append_events(service_conn, 2)
        text = wait_for_checkpoint(c2, key, 5)
    assert note.Checkpoint.parse_text(text.split("\n\n")[0] + "\n").origin == ORIGIN
    # `ledger signing-key rotate` from a shell without LEDGER_ORIGIN names the new key
    # after the ledger's origin, not the default
    monkeypatch.setenv("LEDGER_DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("LEDGER_SIGNING_KEY_FILE", str(settings.signing_key_file))
    assert cli.main(["signing-key", "rotate"]) == 0
    assert settings.signing_key_file is not None
    assert signing.load_key_file(settings.signing_key_file).verifier.name == ORIGIN
    monkeypatch.setenv("LEDGER_ORIGIN", "other.example/log")
    assert cli.main(["signing-key", "rotate"]) != 0  # refused, with the stored origin named
    # `ledger run` refuses in one line before it starts anything
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "ledger", "run", "--port", "1"],
        env={**os.environ, "LEDGER_HOME": str(settings.home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert f"set LEDGER_ORIGIN={ORIGIN}" in proc.stderr and "Traceback" not in proc.stderr
    assert "serving on" not in proc.stderr, proc.stderr
