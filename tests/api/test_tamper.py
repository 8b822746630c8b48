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

from tests.support import auth, failed_at, ledger_verify
from tests.tamper_support import bytes_edit, export, flip_data_digit, make_ledger10

TARGET = 7  # the event the cases change; the ledger holds 10


@pytest.fixture
def ledger10(client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]) -> Any:
    """Ten events (five keys, five test events), verified once (watermark at 10)."""
    return make_ledger10(client, keyring, service_conn)


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
    "canonical-data-byte": (lambda c: bytes_edit(c, TARGET, flip_data_digit), TARGET),
    "canonical-json-byte": (lambda c: bytes_edit(c, TARGET, _break_json), TARGET),
    "canonical-tail-byte": (lambda c: bytes_edit(c, TARGET, _tail_version), TARGET),
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
