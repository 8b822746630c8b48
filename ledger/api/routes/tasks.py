"""Task endpoints (SPEC §4): commands through ``ledger.commands``, reads folded
from the task's stream with the same ``ledger.tasks.evolve``."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from ledger import commands, errors, tasks
from ledger.api.deps import Caller, CheckedBody, Ctx, Principal, meta_for, require
from ledger.api.models import PROBLEM_RESPONSE, EventOut
from ledger.api.task_models import (
    CommentRequest,
    CompleteRequest,
    FailRequest,
    LeaseRequest,
    ReasonRequest,
    Replay,
    StepRequest,
    TaskOut,
    TaskSubmit,
    TaskSubmitted,
    Written,
)
from projections import task_view, watch

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: PROBLEM_RESPONSE for status in (404, 409, 412)
}
router = APIRouter(tags=["tasks"], responses=_PROBLEMS)

Agent = Annotated[Principal, Depends(require("agent"))]
Officer = Annotated[Principal, Depends(require("officer"))]
AgentOrOfficer = Annotated[Principal, Depends(require("agent", "officer"))]
Replayer = Annotated[Principal, Depends(require("officer", "auditor"))]
TaskId = Annotated[uuid.UUID, "the task's UUID"]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description="the task version the command was decided on (412 if it moved on)",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="retry-safe: same key and body answer as the first time, writing nothing",
    ),
]
_IF_MATCH_RE = re.compile(r'^(?:W/)?"?(\d{1,15})"?$')
REPLAYED_HEADER = "Idempotent-Replayed"


def _expected(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    m = _IF_MATCH_RE.match(if_match.strip())
    if not m:
        raise errors.InvalidInput(
            "If-Match must be the task's version, e.g. If-Match: 3",
            errors=[{"field": "If-Match", "rule": "version", "message": "a version number"}],
        )
    return int(m.group(1))


async def _run(
    request: Request,
    response: Response,
    ctx: Ctx,
    principal: Principal,
    task_id: uuid.UUID | None,
    command: tasks.TaskCommand,
    raw: Any,
    if_match: str | None,
    idempotency_key: str | None,
) -> commands.Outcome:
    expected = _expected(if_match)
    idem = None
    if idempotency_key is not None:
        route = request.scope.get("route")
        bound = {
            "route": f"{request.method} {getattr(route, 'path', request.url.path)}",
            "task_id": str(task_id) if task_id is not None else None,
            "body": raw,
        }
        if expected is not None:
            bound["if_match"] = expected
        idem = (idempotency_key, bound)
    out = await commands.execute(
        ctx,
        str(task_id) if task_id is not None else None,
        command,
        principal,
        meta=meta_for(request, principal, idempotency_key=idempotency_key),
        expected_version=expected,
        idempotency=idem,
    )
    if out.duplicate:
        response.headers[REPLAYED_HEADER] = "true"
    response.headers["ETag"] = f'"{out.state.version}"'
    return out


def _lease_seconds(ctx: Ctx, body: LeaseRequest | None) -> int:
    seconds = body.lease_seconds if body and body.lease_seconds else None
    seconds = seconds or ctx.settings.default_lease_seconds
    if seconds > ctx.settings.max_lease_seconds:
        raise errors.InvalidInput(
            f"lease_seconds: at most {ctx.settings.max_lease_seconds}",
            errors=[{"field": "lease_seconds", "rule": "le", "message": "lease too long"}],
        )
    return seconds


@router.post("/tasks", response_model=TaskSubmitted, status_code=201)
async def submit(
    request: Request,
    response: Response,
    ctx: Ctx,
    agent: Agent,
    body: TaskSubmit,
    raw: CheckedBody,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Submit a task: a new stream ``task-<UUIDv7>`` starting with TaskSubmitted."""
    cmd = tasks.Submit(body.task_type, body.payload, body.priority)
    out = await _run(request, response, ctx, agent, None, cmd, raw, if_match, idempotency_key)
    response.headers["Location"] = f"/tasks/{out.task_id}"
    return {
        "id": out.task_id,
        "status": out.state.status,
        "version": out.version,
        "position": out.position,
    }


@router.post("/tasks/{task_id}/claim", response_model=TaskOut)
async def claim(
    request: Request,
    response: Response,
    ctx: Ctx,
    agent: Agent,
    task_id: TaskId,
    raw: CheckedBody,
    body: LeaseRequest | None = None,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Claim a queued task: you become its worker until the lease lapses."""
    cmd = commands.claim(_lease_seconds(ctx, body))
    out = await _run(request, response, ctx, agent, task_id, cmd, raw, if_match, idempotency_key)
    return tasks.view(out.state)


@router.post("/tasks/{task_id}/lease", response_model=TaskOut)
async def renew_lease(
    request: Request,
    response: Response,
    ctx: Ctx,
    agent: Agent,
    task_id: TaskId,
    raw: CheckedBody,
    body: LeaseRequest | None = None,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Renew the claim's lease (the worker only)."""
    cmd = tasks.RenewLease(commands.lease_until(_lease_seconds(ctx, body)))
    out = await _run(request, response, ctx, agent, task_id, cmd, raw, if_match, idempotency_key)
    return tasks.view(out.state)


@router.post("/tasks/{task_id}/steps", response_model=Written, status_code=201)
async def record_step(
    request: Request,
    response: Response,
    ctx: Ctx,
    agent: Agent,
    task_id: TaskId,
    body: StepRequest,
    raw: CheckedBody,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Record a step of the execution trace (the worker only)."""
    cmd = tasks.RecordStep(body.kind, body.content)
    out = await _run(request, response, ctx, agent, task_id, cmd, raw, if_match, idempotency_key)
    return {"version": out.version, "position": out.position}


@router.post("/tasks/{task_id}/approval-request", response_model=TaskOut)
async def request_approval(
    request: Request,
    response: Response,
    ctx: Ctx,
    agent: Agent,
    task_id: TaskId,
    body: ReasonRequest,
    raw: CheckedBody,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Ask an officer to approve before going on (the worker only)."""
    cmd = tasks.RequestApproval(body.reason)
    out = await _run(request, response, ctx, agent, task_id, cmd, raw, if_match, idempotency_key)
    return tasks.view(out.state)


@router.post("/tasks/{task_id}/approve", response_model=TaskOut)
async def approve(
    request: Request,
    response: Response,
    ctx: Ctx,
    officer: Officer,
    task_id: TaskId,
    body: CommentRequest,
    raw: CheckedBody,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Approve a task awaiting approval: it runs on with the same worker."""
    cmd = tasks.Approve(body.comment)
    out = await _run(request, response, ctx, officer, task_id, cmd, raw, if_match, idempotency_key)
    return tasks.view(out.state)


@router.post("/tasks/{task_id}/reject", response_model=TaskOut)
async def reject(
    request: Request,
    response: Response,
    ctx: Ctx,
    officer: Officer,
    task_id: TaskId,
    body: CommentRequest,
    raw: CheckedBody,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Reject a task awaiting approval (final)."""
    cmd = tasks.Reject(body.comment)
    out = await _run(request, response, ctx, officer, task_id, cmd, raw, if_match, idempotency_key)
    return tasks.view(out.state)


@router.post("/tasks/{task_id}/complete", response_model=TaskOut)
async def complete(
    request: Request,
    response: Response,
    ctx: Ctx,
    agent: Agent,
    task_id: TaskId,
    body: CompleteRequest,
    raw: CheckedBody,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Complete the task with its result (the worker only; final)."""
    cmd = tasks.Complete(body.result)
    out = await _run(request, response, ctx, agent, task_id, cmd, raw, if_match, idempotency_key)
    return tasks.view(out.state)


@router.post("/tasks/{task_id}/fail", response_model=TaskOut)
async def fail(
    request: Request,
    response: Response,
    ctx: Ctx,
    agent: Agent,
    task_id: TaskId,
    body: FailRequest,
    raw: CheckedBody,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Fail the task (the worker only); a retryable failure may be requeued."""
    cmd = tasks.Fail(body.error, body.retryable)
    out = await _run(request, response, ctx, agent, task_id, cmd, raw, if_match, idempotency_key)
    return tasks.view(out.state)


@router.post("/tasks/{task_id}/requeue", response_model=TaskOut)
async def requeue(
    request: Request,
    response: Response,
    ctx: Ctx,
    who: AgentOrOfficer,
    task_id: TaskId,
    body: ReasonRequest,
    raw: CheckedBody,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Put a retryable failed task (or a running one whose lease lapsed) back
    in the queue. Officers and any agent (SPEC §3)."""
    cmd = tasks.Requeue(body.reason, tasks.format_time(commands.now()))
    out = await _run(request, response, ctx, who, task_id, cmd, raw, if_match, idempotency_key)
    return tasks.view(out.state)


@router.post("/tasks/{task_id}/cancel", response_model=TaskOut)
async def cancel(
    request: Request,
    response: Response,
    ctx: Ctx,
    who: AgentOrOfficer,
    task_id: TaskId,
    body: ReasonRequest,
    raw: CheckedBody,
    if_match: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Cancel a task that is not finished (officers, and the submitting agent)."""
    cmd = tasks.Cancel(body.reason)
    out = await _run(request, response, ctx, who, task_id, cmd, raw, if_match, idempotency_key)
    return tasks.view(out.state)


@router.get(
    "/tasks/{task_id}",
    response_model=TaskOut,
    responses={503: PROBLEM_RESPONSE},
)
async def get_task(
    ctx: Ctx,
    _: Caller,
    task_id: TaskId,
    response: Response,
    min_position: Annotated[
        int | None,
        Query(ge=0, description="wait (bounded) until the task view includes this position"),
    ] = None,
) -> dict[str, Any]:
    """The task's current state from the task view (the same fold, kept by the
    projection runner; it may lag the writes by a moment). ``min_position``:
    the position a command answered with; the view is awaited until it
    includes it (read your writes), at most ``max_wait_seconds``, else 503."""
    pos = await watch.ensure(ctx, task_view.NAME, min_position)
    async with ctx.pool.connection() as conn:
        state = await task_view.get(conn, str(task_id))
    if state is None:
        # Not in the view: either no such task, or the view is behind (its
        # runner slow or down). The ledger decides; a task it has is folded
        # from its stream, so a read is never a false 404.
        state, _events = await commands.load(ctx.pool, str(task_id))
        if state is None:
            raise errors.NotFound(
                f"no task {task_id} (the task view is folded up to position {pos})",
                view_position=pos,
            )
        response.headers["X-Read-From"] = "ledger"
    response.headers["ETag"] = f'"{state.version}"'
    response.headers["X-Projection-Position"] = str(pos)
    return tasks.view(state)


@router.get("/tasks/{task_id}/events", response_model=list[EventOut])
async def task_events(ctx: Ctx, _: Caller, task_id: TaskId) -> list[dict[str, Any]]:
    """Every event of the task, full envelopes (hashes included), in order."""
    _state, events = await commands.load(ctx.pool, str(task_id))
    if not events:
        raise errors.NotFound(f"no task {task_id}")
    return events


@router.get("/tasks/{task_id}/replay", response_model=Replay)
async def replay(
    ctx: Ctx,
    _: Replayer,
    task_id: TaskId,
    at: Annotated[
        str | None,
        Query(description="an RFC 3339 moment, e.g. 2026-11-25T09:00:01.5Z"),
    ] = None,
    position: Annotated[int | None, Query(ge=1, description="a ledger position")] = None,
) -> dict[str, Any]:
    """The task as it stood at a moment (``at``) or ledger position, and the
    events that made it: the same fold as every other read."""
    if (at is None) == (position is None):
        raise errors.InvalidInput(
            "give exactly one of ?at=<RFC 3339 time> or ?position=N",
            errors=[{"field": "at", "rule": "one_of", "message": "at or position"}],
        )
    moment = None
    if at is not None:
        try:
            moment = tasks.parse_time(at)
            if not _RFC3339_RE.match(at):
                raise ValueError(at)
        except ValueError:
            raise errors.InvalidInput(
                "at: an RFC 3339 time with a zone is expected, e.g. 2026-11-25T09:00:01Z",
                errors=[{"field": "at", "rule": "rfc3339", "message": "not an RFC 3339 time"}],
            ) from None
    state, events = await commands.load(
        ctx.pool, str(task_id), upto_position=position, upto_time=moment
    )
    if state is None:
        exists, _all = await commands.load(ctx.pool, str(task_id))
        if exists is None:
            raise errors.NotFound(f"no task {task_id}")
    return {"state": tasks.view(state) if state else None, "events": events}


_RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
)
