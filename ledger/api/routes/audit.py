"""Auditors' endpoints: head, verification and the export bundle (SPEC §2, §4)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from ledger import errors, store
from ledger.api.deps import Caller, Ctx, Principal, require
from ledger.api.models import Head, VerifyResult
from ledger.db import q, session_setup
from ledger.verify import ChainVerifier, Result, verify_rows

router = APIRouter(tags=["audit"])
Auditor = Annotated[Principal, Depends(require("auditor"))]
EXPORT_CHUNK = 5000


@router.get("/audit/head", response_model=Head)
async def get_head(ctx: Ctx, _: Caller) -> Head:
    async with ctx.pool.connection() as conn:
        position, hash_ = await store.head_async(conn)
    return Head(position=position, hash=hash_)


def _verify_sync(
    url: str, role: str | None, first: int | None, last: int | None
) -> tuple[Result, int]:
    """Runs in a worker thread on its own connection: CPU-bound hashing stays
    off the event loop. Returns the result and how many events it checked."""
    with psycopg.connect(url, autocommit=True) as conn:
        session_setup(role)(conn)
        conn.autocommit = False
        head_pos, head_hash = store.head(conn)
        incremental = first is None and last is None
        if incremental:
            wrow = conn.execute(q("events", "watermark")).fetchone()
            assert wrow is not None
            wpos, whash = int(wrow[0]), bytes(wrow[1]).hex()
            if wpos:
                hrow = conn.execute(q("events", "event_hash_at"), {"position": wpos}).fetchone()
                if hrow is None or bytes(hrow[0]).hex() != whash:
                    return Result(
                        False,
                        1,
                        wpos - 1,
                        None,
                        wpos,
                        "the event at the verified watermark changed since it was verified; "
                        "re-check the whole ledger with ?from=1",
                    ), 0
            start, end, anchor = wpos + 1, head_pos, (whash if wpos else None)
        else:
            start = first or 1
            end = min(last if last is not None else head_pos, head_pos)
            anchor = None
            if start > 1:
                arow = conn.execute(
                    q("events", "event_hash_at"), {"position": start - 1}
                ).fetchone()
                anchor = bytes(arow[0]).hex() if arow else "0" * 64
        if start > end:
            conn.rollback()
            if incremental:
                return Result(
                    True, 1 if head_pos else None, head_pos or None, head_hash if head_pos else None
                ), 0
            return Result(True, None, None, None), 0
        v = ChainVerifier(start=start, anchor=anchor)
        with conn.cursor(name="verify") as cur:
            cur.itersize = 10_000
            cur.execute(q("events", "verify_range"), {"from": start, "to": end})
            result = verify_rows(cur, v)
        conn.rollback()
        if not result.ok:
            return result, v.count
        if result.count < end - start + 1:
            missing = start + result.count
            return Result(
                False,
                result.verified_from,
                result.verified_to,
                result.head_hash,
                missing,
                f"position {missing} is missing (the range should end at {end})",
            ), v.count
        if incremental:
            conn.autocommit = True
            conn.execute(
                q("events", "move_watermark"),
                {"position": end, "hash": bytes.fromhex(result.head_hash or "")},
            )
            return Result(True, 1, end, result.head_hash), v.count
        return result, v.count


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

    async def lines() -> AsyncIterator[bytes]:
        if from_ > last:
            return
        async with ctx.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(name="export")
            try:
                await cur.execute(q("events", "events_range"), {"from": from_, "to": last})
                while True:
                    rows = await cur.fetchmany(EXPORT_CHUNK)
                    if not rows:
                        break
                    yield b"".join(store.export_line(c, h) for c, h in rows)
            finally:
                await cur.close()

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={
            "X-Ledger-From": str(from_),
            "X-Ledger-To": str(last),
            "Content-Disposition": f'attachment; filename="ledger-{from_}-{last}.ndjson"',
        },
    )
