"""The single writer: what goes in hashes the same when read back, concurrent
writers get one gap-free chain, and a version conflict refuses only the
command that has it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger import db, errors, store
from ledger.appender import Appender, append_sync
from ledger.audit.chain import ChainVerifier, verify_file
from ledger.audit.stored import verify_rows
from ledger.canonical import canonical_bytes, compute_event_hash
from ledger.events import Envelope, NewEvent, StreamAppend
from tests.support import auth

META = {"actor": "tester", "role": "agent", "request_id": "appender"}

# What jsonb would rewrite (numbers, key order) and what tempts an encoder to escape.
TRICKY_DATA: dict[str, Any] = {
    "one": 1.0,
    "hundred": 1e2,
    "neg_zero": -0.0,
    "big": 1e21,
    "tenth": 0.1,
    "tiny": 5e-324,
    "accent": "é",
    "emoji": "😀",
    "line_sep": "a\u2028b\u2029c",
    "controls": "\x00\x1f\x7f\t\n",
    "nested": {"z": [1.5, {"é": -0.0, "😀": 2, "\ufb33": 3, "a": None}], "a": True},
    "é": "key",
    "😀": "astral key",
    "\ufb33": "after astral in code points",
}
# The same content as RFC 8785 reads it (numbers are doubles).
TRICKY_READ = {
    **TRICKY_DATA,
    "one": 1,
    "hundred": 100,
    "neg_zero": 0,
    "nested": {"z": [1.5, {"é": 0, "😀": 2, "\ufb33": 3, "a": None}], "a": True},
}


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_tricky_content_hashes_the_same_when_read_back(
    db_url: str, client: Any, keyring: dict[str, str], tmp_path: Path
) -> None:
    async def append_and_read() -> tuple[list[Envelope], list[dict[str, Any]]]:
        app = Appender(db_url)
        await app.start()
        try:
            recorded = await app.append(
                StreamAppend(
                    stream="test-x",
                    events=[NewEvent("Tested", TRICKY_DATA), NewEvent("Tested", {"n": [1e2, 1.0]})],
                    meta=META,
                )
            )
        finally:
            await app.close()
        conninfo = db.service_conninfo(db_url)
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            events = await store.read_stream(conn, "test-x")
        return recorded, events

    recorded, events = _run(append_and_read())
    assert [e["hash"] for e in events] == [r["hash"] for r in recorded]
    for event in events:
        assert compute_event_hash(event) == event["hash"]
    assert events[0]["data"] == TRICKY_READ
    assert events[1]["data"] == {"n": [100, 1]}

    # jsonb did rewrite the content (and cannot hold U+0000: the view shows
    # U+FFFD there rather than failing); the hash does not depend on it.
    with psycopg.connect(db_url) as conn:
        (body,) = conn.execute(
            "SELECT body FROM events_json WHERE position = %s", (events[0]["position"],)
        ).fetchone() or (None,)
        (canonical,) = conn.execute(
            "SELECT canonical FROM events WHERE position = %s", (events[0]["position"],)
        ).fetchone() or (None,)
    assert body["data"]["controls"] == "\ufffd\x1f\x7f\t\n"
    assert body["data"]["big"] == 1e21
    assert canonical_bytes(body) not in bytes(canonical)

    # Through the API: GET /events gives the same events, which re-hash.
    page = client.get("/events", params={"after": 5}, headers=auth(keyring["auditor"])).json()
    assert [e["hash"] for e in page["items"]] == [e["hash"] for e in events]
    for event in page["items"]:
        assert compute_event_hash(event) == event["hash"]

    # The export (API and CLI) verifies offline.
    api_bundle = tmp_path / "api.ndjson"
    api_bundle.write_bytes(client.get("/audit/export", headers=auth(keyring["auditor"])).content)
    env = {**os.environ, "LEDGER_DATABASE_URL": db_url}
    cli = subprocess.run(
        [sys.executable, "-m", "ledger", "export"], env=env, capture_output=True, timeout=60
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == api_bundle.read_bytes()
    with api_bundle.open("rb") as f:
        result = verify_file(f, expect_head=(7, events[-1]["hash"]))
    assert result.ok, result
    assert (result.verified_from, result.verified_to) == (1, 7)


def _chain_ok(conn: psycopg.Connection[Any], last: int) -> None:
    v = ChainVerifier(start=1)
    rows = conn.execute(db.q("events", "verify_range"), {"from": 1, "to": last}).fetchall()
    result = verify_rows(rows, v)
    assert result.ok, result
    assert result.count == last


WRITERS = 8
PER_WRITER = 2000
IN_FLIGHT = 25  # appends each writer has waiting at once


def test_race_eight_writers_two_appenders(db_url: str, super_conn: psycopg.Connection[Any]) -> None:
    """8 writers × 2,000 events through two appenders (two connections, as two
    API processes would have): positions 1..16,000 gap-free, one chain, every
    acknowledged append present exactly once."""

    async def race() -> dict[tuple[int, int], Envelope]:
        appenders = [Appender(db_url, max_batch_events=200) for _ in range(2)]
        for a in appenders:
            await a.start()
        acked: dict[tuple[int, int], Envelope] = {}

        async def writer(w: int) -> None:
            app = appenders[w % 2]
            for start in range(0, PER_WRITER, IN_FLIGHT):
                seqs = range(start, min(start + IN_FLIGHT, PER_WRITER))
                results = await asyncio.gather(
                    *(
                        app.append(
                            StreamAppend(
                                stream=f"race-w{w}",
                                events=[NewEvent("Raced", {"w": w, "i": i})],
                                meta=META,
                            )
                        )
                        for i in seqs
                    )
                )
                for i, (rec,) in zip(seqs, results, strict=True):
                    acked[(w, i)] = rec

        try:
            await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        finally:
            for a in appenders:
                await a.close()
        assert all(a.batches > 1 for a in appenders)
        return acked

    acked = asyncio.run(race())
    total = WRITERS * PER_WRITER
    assert len(acked) == total
    assert sorted(r["position"] for r in acked.values()) == list(range(1, total + 1))

    rows = super_conn.execute(
        "SELECT position, (body->'data'->>'w')::int, (body->'data'->>'i')::int, version, stream "
        "FROM events_json ORDER BY position"
    ).fetchall()
    assert [r[0] for r in rows] == list(range(1, total + 1))
    stored = {(w, i): (p, v, s) for p, w, i, v, s in rows}
    assert len(stored) == total  # each (writer, seq) exactly once
    for key, rec in acked.items():
        assert stored[key] == (rec["position"], rec["version"], rec["stream"])
    for w in range(WRITERS):
        versions = sorted(v for p, ww, i, v, s in rows if ww == w)
        assert versions == list(range(1, PER_WRITER + 1))
    head = super_conn.execute("SELECT position FROM ledger_head").fetchone()
    assert head == (total,)
    _chain_ok(super_conn, total)


def test_version_conflict_refuses_only_that_command(service_conn: psycopg.Connection[Any]) -> None:
    def cmd(stream: str, expected: int | None, n: int = 1) -> StreamAppend:
        return StreamAppend(
            stream=stream,
            events=[NewEvent("Tested", {"k": k}) for k in range(n)],
            meta=META,
            expected_version=expected,
        )

    results = append_sync(
        service_conn,
        [
            cmd("test-a", 0, 2),  # new stream: ok, versions 1-2
            cmd("test-a", 5),  # stale: refused
            cmd("test-b", 0),  # ok
            cmd("test-a", 0),  # decided on the empty stream, but the first made it 2
            cmd("test-a", 2),  # right after the first: ok
            cmd("test-c", None),  # any version: ok
        ],
    )
    ok = [r for r in results if isinstance(r, list)]
    assert [[(e["position"], e["version"]) for e in r] for r in ok] == [
        [(1, 1), (2, 2)],
        [(3, 1)],
        [(4, 3)],
        [(5, 1)],
    ]
    assert isinstance(results[1], errors.VersionConflict)
    assert (results[1].expected, results[1].actual) == (5, 2)
    assert isinstance(results[3], errors.VersionConflict)
    assert results[3].actual == 2
    assert service_conn.execute("SELECT count(*) FROM events").fetchone() == (5,)
    assert service_conn.execute("SELECT position FROM ledger_head").fetchone() == (5,)
    _chain_ok(service_conn, 5)


def test_one_batch_sees_its_own_earlier_commands(service_conn: psycopg.Connection[Any]) -> None:
    """A batch's events go into the table in one statement at its end; a
    command still sees what earlier commands of the same batch did to its
    stream and to its idempotency key."""
    key = ("agent-1", "key-1", b"\x01" * 32)

    def cmd(stream: str, expected: int | None, idem: Any = None, n: int = 1) -> StreamAppend:
        return StreamAppend(
            stream=stream,
            events=[NewEvent("Tested", {"k": k}) for k in range(n)],
            meta=META,
            expected_version=expected,
            idempotency=idem,
        )

    results = append_sync(
        service_conn,
        [
            cmd("s-1", 0, key, 2),  # ok: positions 1-2
            cmd("s-2", 0),  # ok: 3
            cmd("s-3", 0, key),  # the same key, the same request: the first's answer
            cmd("s-4", 0, ("agent-1", "key-1", b"\x02" * 32)),  # same key, other request
            cmd("s-1", None),  # after s-2 and the refusals: s-1 is at version 2
            cmd("s-2", 1, n=2),  # s-2 at 1: ok, versions 2-3
            cmd("s-1", 2),  # stale: the one before made s-1 version 3
        ],
    )
    assert [(e["position"], e["version"]) for e in results[0]] == [(1, 1), (2, 2)]  # type: ignore[union-attr]
    assert isinstance(results[2], errors.DuplicateCommand)
    assert isinstance(results[3], errors.IdempotencyMismatch)
    assert [(e["position"], e["version"]) for e in results[4]] == [(4, 3)]  # type: ignore[union-attr]
    assert [(e["position"], e["version"]) for e in results[5]] == [(5, 2), (6, 3)]  # type: ignore[union-attr]
    assert isinstance(results[6], errors.VersionConflict) and results[6].actual == 3
    rows = service_conn.execute("SELECT stream, version FROM events ORDER BY position").fetchall()
    assert rows == [("s-1", 1), ("s-1", 2), ("s-2", 1), ("s-1", 3), ("s-2", 2), ("s-2", 3)]
    assert service_conn.execute(
        "SELECT stream, first_position, last_position FROM idempotency_keys"
    ).fetchall() == [("s-1", 1, 2)]
    _chain_ok(service_conn, 6)


def test_concurrent_commands_on_one_stream_one_wins(db_url: str) -> None:
    """Twenty commands all decided on an empty stream: one is recorded, the
    rest refused with a version conflict, in whatever batches they land."""

    async def go() -> list[Any]:
        app = Appender(db_url, max_batch_events=7)
        await app.start()
        try:
            return await asyncio.gather(
                *(
                    app.append(
                        StreamAppend(
                            stream="test-one",
                            events=[NewEvent("Tested", {"i": i})],
                            meta=META,
                            expected_version=0,
                        )
                    )
                    for i in range(20)
                ),
                return_exceptions=True,
            )
        finally:
            await app.close()

    results = asyncio.run(go())
    wins = [r for r in results if isinstance(r, list)]
    assert len(wins) == 1
    assert wins[0][0]["position"] == 1
    assert all(isinstance(r, errors.VersionConflict) for r in results if not isinstance(r, list))


@pytest.mark.parametrize("role", ["ledger_service"])
def test_recorded_at_never_decreases(db_url: str, role: str) -> None:
    async def go() -> list[Envelope]:
        app = Appender(db_url, role=role, max_batch_events=3)
        await app.start()
        try:
            out = await asyncio.gather(
                *(
                    app.append(
                        StreamAppend(
                            stream=f"test-t{i % 3}", events=[NewEvent("Tested", {})], meta=META
                        )
                    )
                    for i in range(30)
                )
            )
        finally:
            await app.close()
        return [r for rs in out for r in rs]

    recorded = sorted(asyncio.run(go()), key=lambda r: r["position"])
    stamps = [r["recorded_at"] for r in recorded]
    assert stamps == sorted(stamps)
    assert [r["position"] for r in recorded] == list(range(1, 31))


def test_a_command_the_database_refuses_fails_alone(db_url: str) -> None:
    """A command the database refuses (here a stream name its CHECK forbids)
    rolls back the batch transaction; the appender then appends the others
    on their own, so only the bad one fails."""

    async def go() -> list[Any]:
        app = Appender(db_url)
        await app.start()
        try:
            return await asyncio.gather(
                *(
                    app.append(
                        StreamAppend(
                            stream="Not a stream" if i == 2 else f"test-{i}",
                            events=[NewEvent("Tested", {"i": i})],
                            meta=META,
                        )
                    )
                    for i in range(5)
                ),
                return_exceptions=True,
            )
        finally:
            await app.close()

    results = asyncio.run(go())
    assert isinstance(results[2], errors.InvalidInput)
    ok = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(r, list) for r in ok), ok
    assert sorted(r[0]["position"] for r in ok) == [1, 2, 3, 4]
