"""A large batch's append: chained here under the head lock, its rows COPYed in.

``ledger_append()`` (schema.sql) chains in PL/pgSQL, ~25 µs an event: right
for the small batches of single-event commands (one round trip), slow for
commands of many events. For a batch of at least ``COPY_MIN_EVENTS`` the
appender runs this instead, in one transaction on its connection:

1. ``ledger_append_begin()`` locks the head row ``FOR UPDATE`` exactly as
   ``ledger_append()`` does and returns the head, the batch's timestamp (the
   same rule and text), each named stream's version and each named
   idempotency key's earlier use;
2. here, each command is decided as ``ledger_append()`` decides it
   (idempotency first, then the expected version, a stream an earlier command
   of the batch wrote counting its pending events), and its events are
   chained: the canonical bytes are the caller's ``{"data":..,"meta":..``
   prefix and :func:`ledger.canonical.envelope_tail`, the bytes the SQL
   builds, so every hash is the same as that path's;
3. the rows are COPYed (binary) into ``events``, then the idempotency keys go
   in, the head moves and ``ledger_events`` is notified; the commit releases
   the lock.

It returns the rows ``ledger_append()`` would have returned, so the
appender answers both paths alike. The lock is held from the first read to
the commit, so position order is commit order as before; a crash before the
commit leaves nothing.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ledger import db
from ledger.canonical import envelope_tail
from ledger.events import StreamAppend

COPY_MIN_EVENTS = 200  # batches this large take this path (HTTP's rarely are)
COPY_EVENTS = (
    "COPY events (position, stream, version, type, recorded_at, prev_hash, hash, canonical)"
    " FROM STDIN (FORMAT BINARY)"
)
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# PostgreSQL's binary COPY stream (the COPY page of its manual): a signature,
# flags and header-extension length, then per row a field count and each
# field as length + bytes, then -1
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
COPY_TRAILER = struct.pack("!h", -1)

Row = tuple[int, str, int | None, int | None, bytes | None, bytes | None, str | None, int | None]


def _begin_params(appends: Sequence[StreamAppend]) -> tuple[list[str], list[str], list[str]]:
    streams = sorted({c.stream for c in appends})
    idem = [c.idempotency for c in appends if c.idempotency is not None]
    return streams, [i[0] for i in idem], [i[1] for i in idem]


class _Chain:
    """The batch decided and chained in command order."""

    def __init__(self, begin_rows: Sequence[tuple[Any, ...]]) -> None:
        self.versions: dict[str, int] = {}
        self.keys: dict[tuple[str, str], tuple[bytes, int, int]] = {}
        for kind, stream, key, position, last, h, text in begin_rows:
            if kind == "head":
                self.position, self.hash, self.ts_text = int(position), bytes(h), str(text)
            elif kind == "stream":
                self.versions[stream] = int(position)
            else:
                self.keys[(stream, key)] = (bytes(h), int(position), int(last))
        self.ts = datetime.fromisoformat(self.ts_text)
        micros = (self.ts - PG_EPOCH) // timedelta(microseconds=1)
        self._ts_field = struct.pack("!iq", 8, micros)  # timestamptz: µs since 2000-01-01 UTC
        self.rows: list[bytes] = []  # the COPY's rows, binary
        self.out: list[Row] = []  # as ledger_append() returns them
        self.new_keys: list[tuple[str, str, bytes, str, int, int]] = []

    def command(self, c: int, cmd: StreamAppend) -> None:
        if cmd.idempotency is not None:
            actor, key, digest = cmd.idempotency
            prior = self.keys.get((actor, key))
            if prior is not None:
                outcome = "duplicate" if prior[0] == digest else "idempotency_mismatch"
                self.out.append((c, outcome, prior[1], None, None, None, None, prior[2]))
                return
        cur = self.versions.get(cmd.stream, 0)
        if cmd.expected_version is not None and cmd.expected_version != cur:
            self.out.append((c, "conflict", None, None, None, None, None, cur))
            return
        first = self.position + 1
        ts_text, stream, sha256 = self.ts_text, cmd.stream, hashlib.sha256
        s = stream.encode()
        pack, ts_field = struct.pack, self._ts_field
        for e, body in zip(cmd.events, cmd.bodies, strict=True):
            self.position += 1
            cur += 1
            prev = self.hash
            canon = body + envelope_tail(self.position, prev.hex(), ts_text, stream, e.type, cur)
            self.hash = sha256(canon).digest()
            t = e.type.encode()
            # position, stream, version, type, recorded_at, prev_hash, hash, canonical
            self.rows.append(
                pack(
                    f"!hiqi{len(s)}siqi{len(t)}s", 8, 8, self.position, len(s), s, 8, cur, len(t), t
                )
                + ts_field
                + pack("!i32si32si", 32, prev, 32, self.hash, len(canon))
                + canon
            )
            self.out.append((c, "ok", self.position, cur, self.hash, prev, ts_text, None))
        self.versions[stream] = cur
        if cmd.idempotency is not None and cmd.events:
            actor, key, digest = cmd.idempotency
            self.keys[(actor, key)] = (digest, first, self.position)
            self.new_keys.append((actor, key, digest, stream, first, self.position))


async def append_copy(
    conn: psycopg.AsyncConnection[Any], appends: Sequence[StreamAppend]
) -> list[Row]:
    """One batch through COPY; ``conn`` in autocommit mode (the appender's)."""
    for a in appends:
        a.prepare()
    async with conn.transaction():
        cur = await conn.execute(db.q("events", "append_begin"), _begin_params(appends))
        chain = _Chain(await cur.fetchall())
        # Each command's rows go out as soon as they are chained, so the
        # server inserts one command's rows while the next is chained here
        # (a batch whose every command is refused COPYs no row: harmless).
        async with conn.cursor().copy(COPY_EVENTS) as copy:
            await copy.write(COPY_HEADER)
            for c, cmd in enumerate(appends, 1):
                n0 = len(chain.rows)
                chain.command(c, cmd)
                if len(chain.rows) > n0:
                    await copy.write(b"".join(chain.rows[n0:]))
            await copy.write(COPY_TRAILER)
        if chain.rows:
            k = chain.new_keys
            await conn.execute(
                db.q("events", "append_finish"),
                {
                    "actors": [x[0] for x in k],
                    "keys": [x[1] for x in k],
                    "digests": [x[2] for x in k],
                    "streams": [x[3] for x in k],
                    "firsts": [x[4] for x in k],
                    "lasts": [x[5] for x in k],
                    "position": chain.position,
                    "hash": chain.hash,
                    "at": chain.ts,
                },
            )
    return chain.out
