"""Liveness and readiness: open to load balancers, no credentials needed.

503 when the database cannot be reached, and when the tree builder has
halted (``merkle_state.halted``: events under the signed tree were
rewritten): the state is read from the database, so it is the same answer
whichever process builds the tree."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ledger import store
from ledger.api.deps import Context, Ctx
from ledger.api.errors import RETRY_AFTER
from ledger.api.models import Health
from ledger.api.probe import probe_of
from ledger.proofs import store as tree_store
from ledger.witness import store as witness_store
from ledger.witness.submitter import parse_witnesses

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(ctx: Ctx) -> Any:
    try:
        # its own session, never queued behind requests for a pooled one
        async with probe_of(ctx).session() as conn:
            position, _ = await store.head_async(conn)
            witnesses = await _witnesses(ctx, conn)
            tree = await tree_store.read_state_async(conn)
    except Exception:
        body = {
            "status": "unavailable",
            "database": "unreachable",
            "head_position": -1,
            "appended_since_start": ctx.appender.appended,
        }
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})
    answer = {
        "status": "ok",
        "database": "ok",
        "head_position": position,
        "appended_since_start": ctx.appender.appended,
        "witnesses": witnesses,
        "tree": "ok",
        "tree_size": tree.size,
    }
    if tree.halted:
        answer |= {"status": "halted", "tree": "halted", "reason": tree.halted}
        return JSONResponse(answer, status_code=503)
    return answer


async def _witnesses(ctx: Context, conn: Any) -> list[dict[str, Any]] | None:
    if not ctx.settings.witnesses:
        return None
    configured = {w.key.vkey for w in parse_witnesses(ctx.settings.witnesses)}
    return [
        {
            "witness": s.witness.split("+", 1)[0],
            "url": s.url,
            "reachable": s.ok,
            "cosigned_size": s.size,
            "error": s.error,
            "checked_at": s.checked_at.isoformat(),
        }
        for s in await witness_store.statuses(conn)
        if s.witness in configured  # not one taken out of LEDGER_WITNESSES since
    ]
