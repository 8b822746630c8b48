"""The event log in position order (officers and auditors)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from ledger import store
from ledger.api.deps import Ctx, require
from ledger.api.models import EventPage
from ledger.events import Principal
from ledger.privacy import service as privacy

router = APIRouter(tags=["events"])


@router.get("/events", response_model=EventPage)
async def list_events(
    ctx: Ctx,
    reader: Annotated[Principal, Depends(require("officer", "auditor"))],
    after: Annotated[int, Query(ge=0, description="return events after this position")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    async with ctx.pool.connection() as conn:
        items = await store.read_after(conn, after, limit)
    shown = await privacy.of(ctx).reveal_events(reader, items)
    return {"items": shown, "next_after": items[-1]["position"] if items else after}
