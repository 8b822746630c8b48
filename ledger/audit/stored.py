"""Verification of the events as stored (``GET /audit/verify``): the chain
rules of :mod:`ledger.audit.chain` over the table's rows, each row's columns
held to its canonical bytes, and the head and the verified watermark held to
the events.

The service keeps a verified watermark (position and hash) so the default
check hashes what is new, plus a rolling slice of what it verified before
(``swept_to``), and holds its anchors (the watermark's event, the tree's last
leaf) to the events; ``from``/``to`` re-check a range in full.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable
from typing import Any

import psycopg

from ledger import db, store
from ledger.audit.anchors import (
    Anchor,
    broken_anchor,
    hash_at,
    principals_mismatch,
    tree_halted,
)
from ledger.audit.chain import Bad, ChainVerifier, Result
from ledger.canonical import ZERO_HASH, envelope_tail
from ledger.db import q

_TAIL_RE = re.compile(
    rb',"position":(-?\d+),"prev_hash":"([^"]*)","recorded_at":"([^"]*)",'
    rb'"stream":"([^"]*)","type":"([^"]*)","version":(-?\d+)}\Z'
)
# How many already-verified events each incremental verification re-hashes.
SWEEP_EVENTS = 100_000
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
    if head_pos and hash_at(conn, head_pos) != head_hash:
        return v.result(
            Bad(head_pos, f"the ledger head's hash differs from the event at position {head_pos}")
        )
    return v.result()


def _first_bad(conn: psycopg.Connection[Any], head: tuple[int, str], why: Anchor) -> Result:
    """An anchor broke: the whole ledger is checked to name the first bad
    position; if every event still verifies, the anchor itself is it."""
    result = check_range(conn, 1, head[0], None, head)
    if not result.ok:
        return result
    return Result(
        False,
        result.verified_from,
        result.verified_to,
        result.head_hash,
        why.position,
        why.reason,
        result.count,
    )


def _earliest(conn: psycopg.Connection[Any], head: tuple[int, str], found: Result) -> Result:
    """Something failed in part of the ledger: the first bad position of the
    whole (an earlier one may have been hidden from the part checked)."""
    full = check_range(conn, 1, head[0], None, head)
    return found if full.ok else full


def _incremental(
    conn: psycopg.Connection[Any], head: tuple[int, str], sweep: int
) -> tuple[Result, dict[str, Any] | None]:
    """What is new since the watermark, the anchors it rests on, and the next
    slice (``sweep`` events) of what was verified before, re-hashed in turn so
    that a change anywhere in the verified range is found within
    ceil(watermark / sweep) calls. Returns the result and where to move the
    watermark (None: nowhere)."""
    head_pos, head_hash = head
    wpos, wraw, swept = conn.execute(q("events", "watermark_sweep")).fetchone() or (0, b"", 0)
    whash = bytes(wraw).hex()
    broken = broken_anchor(conn, wpos, whash, head_pos)
    if broken is not None:
        return _first_bad(conn, head, broken), None
    new = check_range(conn, wpos + 1, head_pos, whash if wpos else None, head)
    if not new.ok:
        return _earliest(conn, head, new), None
    rechecked, swept_to = 0, swept
    if wpos and sweep > 0:
        start = swept + 1 if swept < wpos else 1
        end = min(wpos, start + sweep - 1)
        old = check_range(conn, start, end, hash_at(conn, start - 1) if start > 1 else None, head)
        if not old.ok:
            return _earliest(conn, head, old), None
        rechecked, swept_to = old.count, end
    move = {
        "position": head_pos,
        "hash": bytes.fromhex(head_hash) if head_pos else bytes(32),
        "swept_to": swept_to,
    }
    if not head_pos:
        return Result(True, None, None, None, count=new.count, swept=rechecked), move
    return Result(True, 1, head_pos, head_hash, count=new.count, swept=rechecked), move


def _whole_ledger(conn: psycopg.Connection[Any], result: Result) -> Result:
    """What every verification also answers for: the principals table is the
    fold of the PrincipalKey* events, and the tree builder has not halted."""
    problems = [result.reason] if result.reason else []
    if why := principals_mismatch(conn):
        problems.append(why)
    if halted := tree_halted(conn):
        problems.append(f"the tree builder halted: {halted}")
    if result.ok and not problems:
        return result
    return Result(
        False,
        result.verified_from,
        result.verified_to,
        result.head_hash,
        result.first_bad_position,
        "; ".join(problems),
        result.count,
        result.swept,
    )


def verify_stored(
    url: str, role: str | None, first: int | None, last: int | None, sweep: int = SWEEP_EVENTS
) -> tuple[Result, int]:
    """Verify the stored events: the range ``first..last``, or (both None) what
    is new since the watermark plus a slice of what was verified before,
    moving it. Either way the principals table and the tree builder's state are
    held to the events too. Returns the result and how many events it hashed.
    Blocking and CPU-bound: run it in a worker thread.

    One REPEATABLE READ snapshot holds the head, the watermark and the events,
    so appends committing meanwhile cannot look like a mismatch."""
    with psycopg.connect(db.service_conninfo(url, role)) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        head = store.head(conn)
        move = None
        if first is None and last is None:
            result, move = _incremental(conn, head, sweep)
        else:
            start = first or 1
            end = min(last if last is not None else head[0], head[0])
            anchor = (hash_at(conn, start - 1) or ZERO_HASH) if start > 1 else None
            if start > end:
                result = Result(True, None, None, None)
            else:
                result = check_range(conn, start, end, anchor, head)
        result = _whole_ledger(conn, result)
        conn.rollback()
        if result.ok and move is not None:
            conn.autocommit = True
            conn.execute(q("events", "move_watermark"), move)
        return result, result.count
