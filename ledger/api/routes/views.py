"""Reads from the projections (SPEC §4): task lists with keyset pagination,
counts, the projections' status, and the work queue's claim.

Registered before the task router: ``/tasks/stats`` must not be taken for a
task id by ``GET /tasks/{task_id}``."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Response

from ledger import commands, errors, keys, store, views
from ledger.api.deps import Caller, Ctx, QueueCall, require
from ledger.api.models import PROBLEM_RESPONSE
from ledger.api.task_models import TASK_TYPE_PATTERN, Status, TaskOut
from ledger.api.view_models import ClaimNext, ProjectionsOut, TaskPage, TaskStats
from ledger.api.watch import read_view
from ledger.events import Principal
from ledger.privacy import service as privacy

router = APIRouter(
    tags=["views"],
    responses={
        503: PROBLEM_RESPONSE,
    },
)

Overseer = Annotated[Principal, Depends(require("officer", "auditor", "admin"))]
POSITION_HEADER = "X-Projection-Position"
AGENT_PATTERN = keys.NAME_RE.pattern
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
CURSOR_PREFIX = "c1."
MinPosition = Annotated[
    int | None,
    Query(ge=0, description="wait (bounded) until the view includes this ledger position"),
]


def _filters_digest(filters: tuple[str | None, ...]) -> str:
    return hashlib.sha256(orjson.dumps(filters)).hexdigest()[:12]


def encode_cursor(after: int, filters: tuple[str | None, ...]) -> str:
    raw = orjson.dumps([after, _filters_digest(filters)])
    return CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, filters: tuple[str | None, ...]) -> int:
    def bad(message: str) -> errors.InvalidInput:
        return errors.InvalidInput(
            f"cursor: {message}; pass the next_cursor of the previous page unchanged",
            errors=[{"field": "cursor", "rule": "cursor", "message": message}],
        )

    if not cursor.startswith(CURSOR_PREFIX):
        raise bad("not a cursor this service gave out")
    body = cursor[len(CURSOR_PREFIX) :]
    try:
        value = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise bad("not a cursor this service gave out") from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], int)
        or isinstance(value[0], bool)
        or value[0] < 0
        or not isinstance(value[1], str)
    ):
        raise bad("not a cursor this service gave out")
    if value[1] != _filters_digest(filters):
        raise bad("this cursor belongs to a list with other filters")
    return int(value[0])


@router.get("/tasks", response_model=TaskPage)
async def list_tasks(
    ctx: Ctx,
    caller: Caller,
    response: Response,
    status: Annotated[Status | None, Query(description="only tasks in this status")] = None,
    agent_name: Annotated[
        str | None,
        Query(pattern=AGENT_PATTERN, description="only tasks this agent submitted"),
    ] = None,
    task_type: Annotated[str | None, Query(pattern=TASK_TYPE_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    min_position: MinPosition = None,
) -> dict[str, Any]:
    """Tasks from the task view, in submission order, ``limit`` at a time.

    The order is each task's submission position, which never changes, so
    following ``next_cursor`` neither repeats nor skips a task however many
    are written meanwhile (a task whose status changes may of course leave or
    enter a status filter between pages)."""
    filters = (status, agent_name, task_type)
    after = decode_cursor(cursor, filters) if cursor is not None else 0
    pos, rows = await read_view(
        ctx,
        views.TASKS,
        min_position,
        lambda conn: views.task_page(
            conn,
            after=after,
            limit=limit + 1,
            status=status,
            agent_name=agent_name,
            task_type=task_type,
        ),
    )
    more = len(rows) > limit
    rows = rows[:limit]
    response.headers[POSITION_HEADER] = str(pos)
    items = await privacy.of(ctx).reveal_states(caller, [row.state for row in rows])
    return {
        "items": items,
        "next_cursor": encode_cursor(rows[-1].created_position, filters) if more else None,
    }


@router.get("/tasks/stats", response_model=TaskStats)
async def task_stats(
    ctx: Ctx, _: Caller, response: Response, min_position: MinPosition = None
) -> dict[str, Any]:
    """Tasks by status, per submitting agent and per task type (the task_counts view)."""
    pos, counts = await read_view(ctx, views.TASK_COUNTS, min_position, views.task_stats)
    response.headers[POSITION_HEADER] = str(pos)
    return {"position": pos, "by_agent": counts["agent"], "by_task_type": counts["task_type"]}


@router.post(
    "/tasks/claim",
    response_model=TaskOut,
    responses={204: {"description": "no task of those types is queued"}},
)
async def claim_next(call: QueueCall, body: ClaimNext | None = None) -> Any:
    """Claim the next queued task (of ``task_types``): highest priority first,
    then the oldest. 204 when none is queued."""
    ctx = call.ctx
    out = await commands.claim_next(
        ctx,
        call.principal,
        body.task_types if body else None,
        call.lease_seconds(body.lease_seconds if body else None),
        meta=call.meta(),
        idempotency=call.idempotency(None),
        slots=ctx.extras["claim_slots"],
        candidates=ctx.settings.claim_candidates,
    )
    if out is None:
        return Response(status_code=204)
    call.answered(out)
    call.response.headers["Location"] = f"/tasks/{out.task_id}"
    return await privacy.of(ctx).reveal_state(call.principal, out.state)


@router.get("/projections", response_model=ProjectionsOut)
async def list_projections(ctx: Ctx, _: Overseer) -> dict[str, Any]:
    """Every projection: how far it has folded the ledger (position and the
    event hash there), its lag behind the head, and whether a runner leads it."""
    async with ctx.pool.connection() as conn:
        rows, held = await views.checkpoints_async(conn)
        head, _hash = await store.head_async(conn)
    return {"head_position": head, "items": [r.status(held) for r in rows]}
