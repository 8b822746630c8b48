"""A large batch chained in Python under the head lock and COPYed in
(``ledger.copy_append``) answers, stores and hashes exactly as
``ledger_append()`` does: the same outcomes, positions and versions for the
same commands, stored bytes that are RFC 8785 and verify, one chain across
batches of either kind."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import psycopg
import pytest
import rfc8785

from ledger import appender, db, errors
from ledger.appender import Appender, _results, append_sync
from ledger.audit.chain import ChainVerifier
from ledger.audit.stored import verify_rows
from ledger.copy_append import append_copy
from ledger.events import NewEvent, StreamAppend

META = {"actor": "tester", "role": "agent", "request_id": "copy"}
KEY = ("agent-1", "key-1", b"\x01" * 32)


def cmd(stream: str, expected: int | None, idem: Any = None, n: int = 1) -> StreamAppend:
    return StreamAppend(
        stream=stream,
        events=[NewEvent("Tested", {"k": k, "x": 1.5, "é": "😀"}) for k in range(n)],
        meta=META,
        expected_version=expected,
        idempotency=idem,
    )


def batch() -> list[StreamAppend]:
    """Every outcome, and commands that depend on earlier ones of the batch."""
    return [
        cmd("s-1", 0, KEY, 2),  # ok: positions 1-2
        cmd("s-2", 0),  # ok: 3
        cmd("s-3", 0, KEY),  # the same key, the same request: the first's answer
        cmd("s-4", 0, ("agent-1", "key-1", b"\x02" * 32)),  # same key, other request
        cmd("s-1", None),  # any version: s-1 at 2, so 3
        cmd("s-2", 1, n=2),  # s-2 at 1: ok, versions 2-3
        cmd("s-1", 2),  # stale: the one before made s-1 version 3
        cmd("s-5", 5),  # stale on a new stream
        cmd("s-5", None, n=0),  # no events at all
    ]


def _outcomes(results: list[Any]) -> list[Any]:
    return [
        [(e["position"], e["stream"], e["version"], e["type"], e["data"], e["meta"]) for e in r]
        if isinstance(r, list)
        else (type(r).__name__, getattr(r, "actual", None))
        for r in results
    ]


def _copy(url: str, appends: list[StreamAppend]) -> list[Any]:
    async def go() -> list[Any]:
        async with await psycopg.AsyncConnection.connect(
            db.service_conninfo(url), autocommit=True
        ) as conn:
            return _results(appends, await append_copy(conn, appends))

    return asyncio.run(go())


def _stored_ok(conn: psycopg.Connection[Any], last: int) -> None:
    rows = conn.execute(db.q("events", "verify_range"), {"from": 1, "to": last}).fetchall()
    result = verify_rows(rows, ChainVerifier(start=1))
    assert result.ok and result.count == last, result
    for row in rows:
        canonical = bytes(row[-1])
        assert rfc8785.dumps(orjson.loads(canonical)) == canonical  # the reference's bytes


def test_the_same_batch_answers_alike_on_both_paths(
    db_url: str, service_conn: psycopg.Connection[Any]
) -> None:
    by_sql = append_sync(service_conn, batch())
    sql_rows = service_conn.execute(
        "SELECT position, stream, version, type FROM events ORDER BY position"
    ).fetchall()
    sql_keys = service_conn.execute("SELECT * FROM idempotency_keys").fetchall()
    # the same commands again on the same ledger, by COPY, on streams and a key
    # of their own: the same answers, six positions on
    fresh = [
        cmd(
            c.stream.replace("s-", "t-"),
            c.expected_version,
            c.idempotency and (c.idempotency[0], "key-2", c.idempotency[2]),
            len(c.events),
        )
        for c in batch()
    ]
    by_copy = _copy(db_url, fresh)
    want = _outcomes(by_sql)
    shift = [
        [(p - 6, s.replace("t-", "s-"), *rest) for p, s, *rest in g] if isinstance(g, list) else g
        for g in _outcomes(by_copy)
    ]
    assert shift == want
    assert isinstance(by_copy[2], errors.DuplicateCommand)
    assert "positions 7..8" in by_copy[2].detail
    assert isinstance(by_copy[3], errors.IdempotencyMismatch)
    rows = service_conn.execute(
        "SELECT position, stream, version, type FROM events WHERE position > 6 ORDER BY position"
    ).fetchall()
    assert [(p - 6, s.replace("t-", "s-"), v, t) for p, s, v, t in rows] == sql_rows
    keys = service_conn.execute(
        "SELECT stream, first_position, last_position FROM idempotency_keys ORDER BY stream"
    ).fetchall()
    assert keys == [("s-1", 1, 2), ("t-1", 7, 8)] and len(sql_keys) == 1
    assert service_conn.execute("SELECT position FROM ledger_head").fetchone() == (12,)
    _stored_ok(service_conn, 12)


def test_batches_of_both_kinds_make_one_chain(
    db_url: str, service_conn: psycopg.Connection[Any]
) -> None:
    n = 0
    for i in range(3):
        by_copy = _copy(db_url, [cmd(f"c-{i}", 0, n=40), cmd(f"c-{i}", 40, n=3)])
        assert [len(r) for r in by_copy] == [40, 3]
        by_sql = append_sync(service_conn, [cmd(f"q-{i}", 0, n=5)])
        assert [len(r) for r in by_sql] == [5]
        n += 48
    _stored_ok(service_conn, n)
    stamps = [
        r[0] for r in service_conn.execute("SELECT recorded_at FROM events ORDER BY position")
    ]
    assert stamps == sorted(stamps)
    # what the head says is what the last event says
    head = service_conn.execute("SELECT position, hash FROM ledger_head").fetchone()
    last = service_conn.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
    assert head == last.fetchone()


def test_the_appender_takes_large_batches_through_copy(
    db_url: str, service_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = appender.append_copy

    async def counted(conn: Any, appends: Any) -> Any:
        calls.append(sum(len(a.events) for a in appends))
        return await real(conn, appends)

    monkeypatch.setattr(appender, "append_copy", counted)
    monkeypatch.setattr(appender, "COPY_MIN_EVENTS", 30)

    async def go() -> list[Any]:
        app = Appender(db_url, max_batch_events=500)
        await app.start()
        try:
            return await asyncio.gather(
                *(app.append(cmd(f"w-{i}", 0, n=10)) for i in range(40)),
                app.append(cmd("Not a stream", 0, n=10)),  # refused by the CHECK, alone
                return_exceptions=True,
            )
        finally:
            await app.close()

    results = asyncio.run(go())
    assert calls and max(calls) >= 30
    assert all(isinstance(r, list) and len(r) == 10 for r in results[:40])
    assert isinstance(results[40], errors.LedgerError)
    _stored_ok(service_conn, 400)
