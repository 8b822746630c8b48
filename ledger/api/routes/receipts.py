"""Receipts (C2SP tlog-proof, ``ledger.proofs.receipts``): one event's, or a
task's (every event of its stream), proven against the latest checkpoint
that covers them and, when ``LEDGER_WITNESS_QUORUM`` is set, carries that
many witness cosignatures. ``ledger verify FILE --key ... [--witness ...]``
checks one offline."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse

from ledger import errors, store, tasks
from ledger.api.deps import Context, Ctx, require
from ledger.api.models import PROBLEM_RESPONSE
from ledger.db import q
from ledger.events import Principal, envelope_from_row
from ledger.proofs import receipts
from ledger.proofs import store as tree_store
from ledger.proofs.store import SignedCheckpoint
from ledger.proofs.tiles import TileCache
from ledger.witness import store as witness_store

router = APIRouter(tags=["proofs"])
Auditor = Annotated[Principal, Depends(require("auditor", "officer"))]


async def _covering(ctx: Context, conn: Any, position: int) -> SignedCheckpoint:
    quorum = ctx.settings.witness_quorum
    deadline = time.monotonic() + max(ctx.settings.checkpoint_wait_seconds, 5.0)
    while True:
        if quorum:
            cp = await witness_store.latest_with_quorum(conn, quorum)
        else:
            cp = await tree_store.latest_checkpoint_async(conn)
        if cp is not None and cp.size >= position:
            return cp
        if time.monotonic() >= deadline:
            more = f" and cosigned by {quorum} witnesses" if quorum else ""
            raise errors.Unavailable(
                f"no checkpoint signed{more} covers position {position} yet", retry_after=1
            )
        await conn.execute(q("proofs", "want_checkpoint"))
        await asyncio.sleep(0.05)


@router.get(
    "/audit/receipt",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {receipts.MEDIA_TYPE: {}}, "description": "C2SP tlog-proof"},
        404: {**PROBLEM_RESPONSE, "description": "no event at that position, or no such task"},
    },
)
async def receipt(
    ctx: Ctx,
    _: Auditor,
    position: Annotated[int | None, Query(ge=1, description="an event's position")] = None,
    task: Annotated[str | None, Query(description="a task id: a receipt for each event")] = None,
) -> PlainTextResponse:
    if (position is None) == (task is None):
        raise errors.InvalidInput("give one of position or task")
    async with ctx.pool.connection() as conn:
        await tree_store.refuse_if_halted(conn)
        if position is not None:
            cur = await conn.execute(q("log", "event_at"), {"position": position})
            row = await cur.fetchone()
            if row is None:
                raise errors.NotFound(f"no event at position {position}")
            events = [envelope_from_row(*row)]
        else:
            events = await store.read_stream(conn, tasks.stream_for(str(task)))
            if not events:
                raise errors.NotFound(f"no task {task}")
        cp = await _covering(ctx, conn, max(e["position"] for e in events))
        note = await witness_store.cosigned(conn, cp)
        cache = TileCache(limit=64)
        parts = [
            receipts.render(
                dict(e), await tree_store.inclusion(conn, cache, e["position"], cp.size), note
            )
            for e in events
        ]
    return PlainTextResponse("".join(parts), media_type=receipts.MEDIA_TYPE)
