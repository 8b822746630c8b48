"""Tamper detection (SPEC §2): a superuser drops the guards and rewrites the
table; both the offline verifier (the real ``ledger verify`` command on an
export) and ``GET /audit/verify`` name the first bad position."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.appender import append_sync
from ledger.events import NewEvent, StreamAppend
from ledger.settings import Settings
from tests.support import (
    app_with_runner,
    append,
    auth,
    failed_at,
    ledger_verify,
    wait_until,
)

VECTORS = Path(__file__).parent.parent / "vectors"
META = {"actor": "tester", "role": "agent", "request_id": "tamper"}
TARGET = 7  # the event the cases change; the ledger holds 10


@pytest.fixture
def ledger10(client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]) -> Any:
    """Ten events (five keys, five test events), verified once (watermark at 10)."""
    cmds = [
        StreamAppend(
            stream=f"test-{i % 2}",
            events=[NewEvent("Tested", {"i": i, "f": 0.5, "s": "é😀"})],
            meta=META,
        )
        for i in range(5)
    ]
    for res in append_sync(service_conn, cmds):
        assert isinstance(res, list)
    head = client.get("/audit/head", headers=auth(keyring["auditor"])).json()
    assert head["position"] == 10
    first = client.get("/audit/verify", headers=auth(keyring["auditor"])).json()
    assert first["ok"] and first["verified_to"] == 10
    return head


def export(client: Any, key: str, path: Path) -> Path:
    r = client.get("/audit/export", headers=auth(key))
    assert r.status_code == 200
    path.write_bytes(r.content)
    return path


def _bytes_edit(
    conn: psycopg.Connection[Any], position: int, edit: Callable[[bytes], bytes]
) -> None:
    (canonical,) = conn.execute(
        "SELECT canonical FROM events WHERE position = %s", (position,)
    ).fetchone() or (None,)
    assert canonical is not None
    new = edit(bytes(canonical))
    assert new != canonical
    conn.execute("UPDATE events SET canonical = %s WHERE position = %s", (new, position))


def _flip_data_digit(b: bytes) -> bytes:
    i = b.index(b'"i":') + 4
    return b[:i] + (b"9" if b[i : i + 1] != b"9" else b"8") + b[i + 1 :]


def _break_json(b: bytes) -> bytes:
    return b"[" + b[1:]  # one byte: the opening brace


def _tail_version(b: bytes) -> bytes:
    i = b.rindex(b'"version":') + len(b'"version":')
    return b[:i] + b"7" + b[i + 1 :]


def _swap(conn: psycopg.Connection[Any], a: int, b: int) -> None:
    conn.execute("UPDATE events SET position = 1000000 WHERE position = %s", (a,))
    conn.execute("UPDATE events SET position = %s WHERE position = %s", (a, b))
    conn.execute("UPDATE events SET position = %s WHERE position = 1000000", (b,))


def _flip_column(column: str) -> Callable[[psycopg.Connection[Any]], None]:
    def go(conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            f"UPDATE events SET {column} = set_byte({column}, 5, get_byte({column}, 5) # 1) "
            "WHERE position = %s",
            (TARGET,),
        )

    return go


def _sql(statement: str) -> Callable[[psycopg.Connection[Any]], None]:
    return lambda conn: conn.execute(statement, {"p": TARGET})  # type: ignore[arg-type,return-value]


# name -> (tamper, first bad position)
CASES: dict[str, tuple[Callable[[psycopg.Connection[Any]], None], int]] = {
    "canonical-data-byte": (lambda c: _bytes_edit(c, TARGET, _flip_data_digit), TARGET),
    "canonical-json-byte": (lambda c: _bytes_edit(c, TARGET, _break_json), TARGET),
    "canonical-tail-byte": (lambda c: _bytes_edit(c, TARGET, _tail_version), TARGET),
    "hash": (_flip_column("hash"), TARGET),
    "prev_hash": (_flip_column("prev_hash"), TARGET),
    "stream": (_sql("UPDATE events SET stream = 'test-9' WHERE position = %(p)s"), TARGET),
    "version": (_sql("UPDATE events SET version = version + 100 WHERE position = %(p)s"), TARGET),
    "type": (_sql("UPDATE events SET type = 'Tested2' WHERE position = %(p)s"), TARGET),
    "recorded_at": (
        _sql(
            "UPDATE events SET recorded_at = recorded_at - interval '1 microsecond' "
            "WHERE position = %(p)s"
        ),
        TARGET,
    ),
    # the event at 7 vanishes from its place: 7 is reported missing (8 follows 6)
    "position": (_sql("UPDATE events SET position = 1007 WHERE position = %(p)s"), TARGET),
    "delete": (_sql("DELETE FROM events WHERE position = %(p)s"), TARGET),
    "swap": (lambda c: _swap(c, TARGET, TARGET + 1), TARGET),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_is_named_at_the_first_bad_position(
    case: str,
    ledger10: dict[str, Any],
    client: Any,
    keyring: dict[str, str],
    super_conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    tamper, first_bad = CASES[case]
    super_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    tamper(super_conn)

    # the default (incremental) check and a full re-check both see it
    for params in ({}, {"from": 1}):
        r = client.get("/audit/verify", params=params, headers=auth(keyring["auditor"]))
        assert r.status_code == 200
        body = r.json()
        assert body["ok"] is False, (params, body)
        assert body["first_bad_position"] == first_bad, (params, body)
        assert body["reason"]

    bundle = export(client, keyring["auditor"], tmp_path / "export.ndjson")
    proc = ledger_verify(bundle)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert failed_at(proc) == first_bad, proc.stdout
    head = f"{ledger10['position']}:{ledger10['hash']}"
    proc = ledger_verify(bundle, "--expect-head", head)
    assert proc.returncode == 1
    assert failed_at(proc) == first_bad, proc.stdout
    m = re.search(r"^\(positions (\d+)\.\.(\d+) verified before it\)", proc.stdout, re.M)
    if m:  # what verified is said honestly: never the bad position itself
        assert int(m.group(1)) <= int(m.group(2)) < first_bad, proc.stdout


def test_untampered_ledger_verifies_both_ways(
    ledger10: dict[str, Any], client: Any, keyring: dict[str, str], tmp_path: Path
) -> None:
    body = client.get("/audit/verify", params={"from": 1}, headers=auth(keyring["auditor"])).json()
    assert body["ok"] is True
    assert (body["verified_from"], body["verified_to"]) == (1, 10)
    assert body["head_hash"] == ledger10["hash"]
    bundle = export(client, keyring["auditor"], tmp_path / "export.ndjson")
    proc = ledger_verify(bundle, "--expect-head", f"10:{ledger10['hash']}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK: positions 1..10")


def _first_bad(client: Any, keyring: dict[str, str], params: dict[str, Any]) -> int:
    """The first bad position ``GET /audit/verify`` names; it must find one."""
    body = client.get("/audit/verify", params=params, headers=auth(keyring["auditor"])).json()
    assert body["ok"] is False and body["reason"], (params, body)
    return int(body["first_bad_position"])


def test_cut_tail_under_the_head(
    ledger10: dict[str, Any],
    client: Any,
    keyring: dict[str, str],
    super_conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    """The last two events deleted; the head row still says 10."""
    super_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    super_conn.execute("DELETE FROM events WHERE position >= 9")
    assert _first_bad(client, keyring, {"from": 1}) == 9
    assert _first_bad(client, keyring, {}) == 9

    bundle = export(client, keyring["auditor"], tmp_path / "export.ndjson")
    # Alone, a shorter bundle is a consistent prefix: only a saved head exposes the cut.
    assert ledger_verify(bundle).returncode == 0
    proc = ledger_verify(bundle, "--expect-head", f"10:{ledger10['hash']}")
    assert proc.returncode == 1
    assert failed_at(proc) == 9, proc.stdout


def test_cut_tail_and_head_moved_back(
    ledger10: dict[str, Any],
    client: Any,
    keyring: dict[str, str],
    super_conn: psycopg.Connection[Any],
) -> None:
    """The tail deleted and the head row moved back to match: the chain is a
    consistent prefix, but the service verified up to 10 before."""
    super_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    super_conn.execute("ALTER TABLE ledger_head DISABLE TRIGGER ledger_head_forward")
    super_conn.execute("DELETE FROM events WHERE position >= 9")
    super_conn.execute(
        "UPDATE ledger_head SET position = 8, hash = (SELECT hash FROM events WHERE position = 8)"
    )
    assert client.get("/audit/head", headers=auth(keyring["auditor"])).json()["position"] == 8
    assert _first_bad(client, keyring, {"from": 1}) == 9
    assert _first_bad(client, keyring, {}) == 9


# Tamperings of the head row and the watermark, which only the service's own
# check sees: statements, GET /audit/verify's parameters, the first bad position.
ONLINE_CASES: dict[str, tuple[list[str], dict[str, Any], int]] = {
    # an event slipped in past the head (the head row not moved)
    "event_beyond_the_head": (
        [
            "INSERT INTO events "
            "(position, stream, version, type, recorded_at, prev_hash, hash, canonical) "
            "SELECT 11, 'test-5', 1, type, recorded_at, hash, hash, canonical "
            "FROM events WHERE position = 10"
        ],
        {"from": 1},
        11,
    ),
    "head_hash_disagrees_with_the_last_event": (
        ["UPDATE ledger_head SET hash = set_byte(hash, 0, get_byte(hash, 0) # 1)"],
        {"from": 1},
        10,
    ),
    # The watermark says 10 was verified; a later plain incremental call has
    # nothing new to check, but it sees the event at the watermark changed and
    # looks for the first bad position.
    "incremental_verify_notices_a_changed_watermark_event": (
        [
            "ALTER TABLE events DISABLE TRIGGER events_no_update_delete",
            "UPDATE events SET hash = set_byte(hash, 0, get_byte(hash, 0) # 1) WHERE position = 10",
        ],
        {},
        10,
    ),
}


@pytest.mark.parametrize("case", list(ONLINE_CASES))
def test_head_and_watermark_tampering_is_named(
    case: str,
    ledger10: dict[str, Any],
    client: Any,
    keyring: dict[str, str],
    super_conn: psycopg.Connection[Any],
) -> None:
    statements, params, first_bad = ONLINE_CASES[case]
    for statement in statements:
        super_conn.execute(statement)
    assert _first_bad(client, keyring, params) == first_bad


def test_a_wrong_expected_head_names_only_what_came_before(
    ledger10: dict[str, Any], client: Any, keyring: dict[str, str], tmp_path: Path
) -> None:
    bundle = export(client, keyring["auditor"], tmp_path / "export.ndjson")
    proc = ledger_verify(bundle, "--expect-head", "6:" + "ab" * 32)
    assert proc.returncode == 1
    assert failed_at(proc) == 6, proc.stdout
    assert "(positions 1..5 verified before it)" in proc.stdout, proc.stdout


def test_the_rolling_recheck_finds_an_old_edit_within_a_few_calls(
    settings: Settings,
    keyring: dict[str, str],
    service_conn: psycopg.Connection[Any],
    super_conn: psycopg.Connection[Any],
) -> None:
    """With a sweep of 3 events on a ledger of 10, an edit at position 2 after
    everything was verified is found by the third incremental call at most."""
    from fastapi.testclient import TestClient

    for i in range(5):
        append(service_conn, StreamAppend(f"test-{i}", [NewEvent("Tested", {"i": i})], META))
    key = auth(keyring["auditor"])
    with TestClient(app_with_runner(settings.model_copy(update={"verify_sweep_events": 3}))) as c:
        first = c.get("/audit/verify", headers=key).json()
        assert first["ok"] and first["verified_to"] == 10
        super_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
        _bytes_edit(super_conn, 2, lambda b: b.replace(b'"agent-2"', b'"agent-9"', 1))
        answers = [c.get("/audit/verify", headers=key).json() for _ in range(4)]
    bad = [a for a in answers if not a["ok"]]
    assert bad, answers
    assert answers.index(bad[0]) <= 3, answers
    assert all(a["rechecked"] <= 3 for a in answers if a["ok"]), answers
    assert bad[0]["first_bad_position"] == 2, bad[0]


def test_a_halted_tree_builder_shows_in_health_and_every_audit_answer(
    ledger10: dict[str, Any],
    client: Any,
    keyring: dict[str, str],
    super_conn: psycopg.Connection[Any],
    service_conn: psycopg.Connection[Any],
) -> None:
    """The last event and the head are rewritten (hashes recomputed, as a
    careful forger would); the next append then does not extend the signed
    tree, the builder halts, and the service says so everywhere."""
    auditor = auth(keyring["auditor"])
    wait_until(lambda: client.get("/health").json().get("tree_size") == 10, what="the tree at 10")
    assert client.get("/health").status_code == 200
    super_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    _bytes_edit(super_conn, 10, _flip_data_digit)
    super_conn.execute(
        "UPDATE events SET hash = sha256(canonical) WHERE position = 10;"
        "UPDATE ledger_head SET hash = (SELECT hash FROM events WHERE position = 10)"
    )
    append(service_conn, StreamAppend("test-9", [NewEvent("Tested", {"i": 99})], META))

    health = wait_until(
        lambda: (r := client.get("/health")).status_code == 503 and r, what="/health 503"
    )
    body = health.json()
    assert body["status"] == "halted" and body["tree"] == "halted", body
    assert "events under the tree were rewritten" in body["reason"], body
    for path, params in (
        ("/audit/checkpoint", {}),
        ("/audit/checkpoints", {}),
        ("/audit/public-key", {}),
        ("/audit/proof/inclusion", {"position": 1, "tree_size": 10}),
        ("/audit/proof/consistency", {"from": 1, "to": 10}),
    ):
        r = client.get(path, params=params, headers=auditor)
        assert r.status_code == 503, (path, r.text)
        problem = r.json()
        assert problem["type"].endswith("/tree-halted"), problem
        assert "events under the tree were rewritten" in problem["detail"], problem
        assert "retry-after" not in r.headers
    # unauthenticated callers learn nothing more than before
    assert client.get("/audit/checkpoint").status_code == 401
    verify = client.get("/audit/verify", headers=auditor).json()
    assert verify["ok"] is False
    assert verify["first_bad_position"] == 10, verify  # its hash no longer the signed leaf
    assert "the tree builder halted" in verify["reason"], verify


def test_a_rewrite_that_moves_every_table_but_the_signed_tree_is_caught(
    ledger10: dict[str, Any],
    client: Any,
    keyring: dict[str, str],
    super_conn: psycopg.Connection[Any],
) -> None:
    """The forger rewrites the last event with its hash, and moves the head,
    the watermark and the tree's state to match; the leaf the signed
    checkpoint covers still names the old event."""
    auditor = auth(keyring["auditor"])
    wait_until(
        lambda: (
            (r := client.get("/audit/checkpoint", headers=auditor)).status_code == 200
            and r.headers["x-ledger-tree-size"] == "10"
        ),
        what="a checkpoint of size 10",
    )
    super_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    _bytes_edit(super_conn, 10, _flip_data_digit)
    super_conn.execute(
        "UPDATE events SET hash = sha256(canonical) WHERE position = 10;"
        "UPDATE ledger_head SET hash = (SELECT hash FROM events WHERE position = 10);"
        "UPDATE verify_watermark SET hash = (SELECT hash FROM events WHERE position = 10);"
        "UPDATE merkle_state SET last_hash = (SELECT hash FROM events WHERE position = 10)"
    )
    body = client.get("/audit/verify", headers=auditor).json()
    assert body["ok"] is False, body
    assert body["first_bad_position"] == 10, body
    assert "signed checkpoint of size 10" in body["reason"], body
