"""Auditors' endpoints: head, verification and the export bundle (SPEC §2, §4)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from ledger import errors, store
from ledger.api.deps import Caller, Ctx, require
from ledger.api.models import Head, VerifyResult
from ledger.audit.stored import verify_stored
from ledger.events import Principal

router = APIRouter(tags=["audit"])
Auditor = Annotated[Principal, Depends(require("auditor"))]


@router.get("/audit/head", response_model=Head)
async def get_head(ctx: Ctx, _: Caller) -> Head:
    async with ctx.pool.connection() as conn:
        position, hash_ = await store.head_async(conn)
    return Head(position=position, hash=hash_)


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
    watermark), holds the watermark's event and the signed tree's last leaf to
    the events, re-hashes the next slice of what was verified before (a change
    anywhere is found within a few calls) and answers for the whole ledger.
    With ``from``/``to``: re-checks that range in full. Either way, not ok
    when the principals table is not the fold of the PrincipalKey* events or
    the tree builder has halted (the reason says which)."""
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
            verify_stored,
            ctx.url,
            ctx.settings.db_role,
            from_,
            to,
            ctx.settings.verify_sweep_events,
        )
    return {**result.as_dict(), "checked": checked, "rechecked": result.swept}


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
        store.export_pages(ctx.pool, from_, last),
        media_type="application/x-ndjson",
        headers={
            "X-Ledger-From": str(from_),
            "X-Ledger-To": str(last),
            "Content-Disposition": f'attachment; filename="ledger-{from_}-{last}.ndjson"',
        },
    )
