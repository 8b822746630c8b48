"""Auditors' endpoints: head, verification and the export bundle (SPEC §2, §4)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from ledger import errors, store
from ledger.api.deps import Caller, Ctx, Principal, require
from ledger.api.models import Head, VerifyResult
from ledger.db import q, session_setup
from ledger.verify import Bad, ChainVerifier, Result, verify_rows

router = APIRouter(tags=["audit"])
Auditor = Annotated[Principal, Depends(require("auditor"))]


@router.get("/audit/head", response_model=Head)
async def get_head(ctx: Ctx, _: Caller) -> Head:
    async with ctx.pool.connection() as conn:
        position, hash_ = await store.head_async(conn)
    return Head(position=position, hash=hash_)


def _hash_at(conn: psycopg.Connection[Any], position: int) -> str | None:
    row = conn.execute(q("events", "event_hash_at"), {"position": position}).fetchone()
    return bytes(row[0]).hex() if row else None


def _check_range(
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
    row = conn.execute(q("events", "max_position")).fetchone()
    max_pos = int(row[0]) if row else 0
    wrow = conn.execute(q("events", "watermark")).fetchone()
    wpos = int(wrow[0]) if wrow else 0
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


def _verify_sync(
    url: str, role: str | None, first: int | None, last: int | None
) -> tuple[Result, int]:
    """Runs in a worker thread on its own connection: CPU-bound hashing stays
    off the event loop. Returns the result and how many events it checked.

    One REPEATABLE READ snapshot holds the head, the watermark and the events,
    so appends committing meanwhile cannot look like a mismatch."""
    with psycopg.connect(url, autocommit=True) as conn:
        session_setup(role)(conn)
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        head = store.head(conn)
        head_pos, head_hash = head
        incremental = first is None and last is None
        if incremental:
            wrow = conn.execute(q("events", "watermark")).fetchone()
            assert wrow is not None
            wpos, whash = int(wrow[0]), bytes(wrow[1]).hex()
            if wpos and _hash_at(conn, wpos) != whash:
                # What was verified before changed: find the first bad position.
                result = _check_range(conn, 1, head_pos, None, head)
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
                anchor = _hash_at(conn, start - 1) or "0" * 64
            if start > end:
                conn.rollback()
                return Result(True, None, None, None), 0
        result = _check_range(conn, start, end, anchor, head)
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


@router.get("/audit/verify", response_model=VerifyResult)
async def verify(
    ctx: Ctx,
    _: Auditor,
    from_: Annotated[
        int | None, Query(alias="from", ge=1, description="re-check from this position")
    ] = None,
    to: Annotated[int | None, Query(ge=1, description="re-check up to this position")] = None,
) -> dict[str, Any]:
    """Without parameters: checks what is new since the last verification (the
    watermark) and answers for the whole ledger. With ``from``/``to``: re-checks
    that range in full."""
    if from_ is not None and to is not None and to < from_:
        raise errors.InvalidInput(
            "to must not be smaller than from",
            errors=[{"field": "to", "rule": "ge_from", "message": "to < from"}],
        )
    if to is not None and from_ is None:
        from_ = 1
    lock: asyncio.Lock = ctx.extras.setdefault("verify_lock", asyncio.Lock())
    async with lock:
        result, checked = await asyncio.to_thread(
            _verify_sync, ctx.url, ctx.settings.db_role, from_, to
        )
    return {**result.as_dict(), "checked": checked}


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "one event per line"}},
)
async def export(
    ctx: Ctx,
    _: Auditor,
    from_: Annotated[int, Query(alias="from", ge=1)] = 1,
    to: Annotated[
        int | None, Query(ge=1, description="default: the head when the export starts")
    ] = None,
) -> StreamingResponse:
    async with ctx.pool.connection() as conn:
        head_pos, _h = await store.head_async(conn)
    last = min(to, head_pos) if to is not None else head_pos
    if to is not None and to < from_:
        raise errors.InvalidInput(
            "to must not be smaller than from",
            errors=[{"field": "to", "rule": "ge_from", "message": "to < from"}],
        )

    return StreamingResponse(
        store.export_pages_async(ctx.pool, from_, last),
        media_type="application/x-ndjson",
        headers={
            "X-Ledger-From": str(from_),
            "X-Ledger-To": str(last),
            "Content-Disposition": f'attachment; filename="ledger-{from_}-{last}.ndjson"',
        },
    )
