"""Verification of the events as stored (``GET /audit/verify``): the chain
rules of :mod:`ledger.audit.chain` over the table's rows, each row's columns
held to its canonical bytes, and the head and the verified watermark held to
the events.

The service keeps a verified watermark (position and hash) so the default
check hashes only what is new; ``from``/``to`` re-check a range in full.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable
from typing import Any

import psycopg

from ledger import db, store
from ledger.audit.chain import Bad, ChainVerifier, Result
from ledger.canonical import ZERO_HASH, envelope_tail
from ledger.db import q

_TAIL_RE = re.compile(
    rb',"position":(-?\d+),"prev_hash":"([^"]*)","recorded_at":"([^"]*)",'
    rb'"stream":"([^"]*)","type":"([^"]*)","version":(-?\d+)}\Z'
)
_TAIL_NAMES = ("position", "prev_hash", "recorded_at", "stream", "type", "version")


def _disagreement(canonical: bytes, columns: tuple[Any, ...]) -> str:
    """Why a row's columns and its canonical bytes disagree, for the report."""
    m = _TAIL_RE.search(canonical, max(0, len(canonical) - 600))
    if m is None:
        return "canonical bytes do not end with the event's fields"
    wrong = [
        f"{name} column {col!s} vs {raw.decode(errors='replace')} in the canonical bytes"
        for name, col, raw in zip(_TAIL_NAMES, columns, m.groups(), strict=True)
        if str(col).encode() != raw
    ]
    return "stored columns disagree with the canonical bytes: " + "; ".join(wrong)


def verify_rows(rows: Iterable[tuple[Any, ...]], v: ChainVerifier) -> Result:
    """Verify stored rows (position, stream, version, type, recorded_at text,
    prev_hash, hash, canonical), as the ``verify_range`` query gives them.

    Besides the chain, each row's columns must agree with its canonical
    bytes: the bytes end with exactly the fields the columns hold.

    A row that continues the chain exactly as expected is checked on raw
    digests (no hex strings but the one the next row's tail needs); any
    other row goes through ``ChainVerifier.check``, which accepts it or says
    what is wrong with it, so the fast path decides nothing on its own.
    """
    sha = hashlib.sha256
    versions = v.versions
    prev_raw: bytes | None = None  # the hash the next row must name, once one row passed
    prev_hex = ""
    try:
        for position, stream, version, type_, recorded_at, prev, h, canonical in rows:
            if prev_raw is not None:
                last = versions.get(stream)
                if (
                    position == v.expected_position
                    and prev == prev_raw
                    and (version == last + 1 if last is not None else version >= 1)
                    and recorded_at >= v.last_recorded_at
                    and sha(canonical).digest() == h
                    and canonical.endswith(
                        envelope_tail(position, prev_hex, recorded_at, stream, type_, version)
                    )
                ):
                    versions[stream] = version
                    v.last_recorded_at = recorded_at
                    v.expected_position = position + 1
                    v.count += 1
                    prev_raw = h
                    prev_hex = h.hex()
                    continue
                v.prev_hash = prev_hex
            canonical = bytes(canonical)
            row_prev_hex = bytes(prev).hex()
            if not canonical.endswith(
                envelope_tail(position, row_prev_hex, recorded_at, stream, type_, version)
            ):
                raise Bad(
                    position,
                    _disagreement(
                        canonical, (position, row_prev_hex, recorded_at, stream, type_, version)
                    ),
                )
            v.check(
                position,
                stream,
                version,
                recorded_at,
                row_prev_hex,
                bytes(h).hex(),
                sha(canonical).hexdigest(),
            )
            prev_raw, prev_hex = bytes(h), str(v.prev_hash)
    except Bad as bad:
        return v.result(bad)
    finally:
        if prev_raw is not None:
            v.prev_hash = prev_hex
    return v.result()


def _hash_at(conn: psycopg.Connection[Any], position: int) -> str | None:
    row = conn.execute(q("events", "event_hash_at"), {"position": position}).fetchone()
    return bytes(row[0]).hex() if row else None


def check_range(
    conn: psycopg.Connection[Any], start: int, end: int, anchor: str | None, head: tuple[int, str]
) -> Result:
    """Verify positions start..end (end ≤ the head) as stored; when the range
    reaches the head, also that the head row and the events agree: no event
    beyond it, the event at it carries its hash, none verified before is gone."""
    v = ChainVerifier(start=start, anchor=anchor)
    if start <= end:
        with contextlib.closing(
            store.prefetched(
                conn, q("events", "verify_range"), {"from": start, "to": end}, name="verify"
            )
        ) as rows:
            result = verify_rows(rows, v)
        if not result.ok:
            return result
        if result.count < end - start + 1:
            missing = start + result.count
            return v.result(
                Bad(missing, f"position {missing} is missing (the range should end at {end})")
            )
    head_pos, head_hash = head
    if end != head_pos:
        return v.result()
    (max_pos,) = conn.execute(q("events", "max_position")).fetchone() or (0,)
    (wpos, _whash) = conn.execute(q("events", "watermark")).fetchone() or (0, b"")
    if max_pos > head_pos:
        return v.result(
            Bad(
                head_pos + 1,
                f"events exist beyond the ledger head {head_pos} (up to position {max_pos})",
            )
        )
    if wpos > head_pos:
        return v.result(
            Bad(
                head_pos + 1,
                f"position {head_pos + 1} is missing: the ledger was verified up to "
                f"position {wpos} before, but now ends at {head_pos}",
            )
        )
    if head_pos and _hash_at(conn, head_pos) != head_hash:
        return v.result(
            Bad(head_pos, f"the ledger head's hash differs from the event at position {head_pos}")
        )
    return v.result()


def verify_stored(
    url: str, role: str | None, first: int | None, last: int | None
) -> tuple[Result, int]:
    """Verify the stored events: the range ``first..last``, or (both None) what
    is new since the watermark, moving it. Returns the result and how many
    events it hashed. Blocking and CPU-bound: run it in a worker thread.

    One REPEATABLE READ snapshot holds the head, the watermark and the events,
    so appends committing meanwhile cannot look like a mismatch."""
    with psycopg.connect(db.service_conninfo(url, role)) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        head = store.head(conn)
        head_pos, head_hash = head
        incremental = first is None and last is None
        if incremental:
            wpos, wraw = conn.execute(q("events", "watermark")).fetchone() or (0, bytes(32))
            whash = bytes(wraw).hex()
            if wpos and _hash_at(conn, wpos) != whash:
                # What was verified before changed: find the first bad position.
                result = check_range(conn, 1, head_pos, None, head)
                conn.rollback()
                if result.ok:
                    result = Result(
                        False,
                        result.verified_from,
                        result.verified_to,
                        result.head_hash,
                        wpos,
                        "the event at the verified watermark changed since it was verified",
                        result.count,
                    )
                return result, result.count
            start, end, anchor = wpos + 1, head_pos, (whash if wpos else None)
        else:
            start = first or 1
            end = min(last if last is not None else head_pos, head_pos)
            anchor = None
            if start > 1:
                anchor = _hash_at(conn, start - 1) or ZERO_HASH
            if start > end:
                conn.rollback()
                return Result(True, None, None, None), 0
        result = check_range(conn, start, end, anchor, head)
        conn.rollback()
        if not result.ok or not incremental:
            return result, result.count
        if end >= start:
            conn.autocommit = True
            conn.execute(
                q("events", "move_watermark"),
                {"position": end, "hash": bytes.fromhex(result.head_hash or "")},
            )
        if not head_pos:
            return Result(True, None, None, None), result.count
        return Result(True, 1, head_pos, head_hash), result.count
