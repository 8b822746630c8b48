"""Task endpoints (SPEC §4): commands through ``ledger.commands`` (each route
one :func:`deps.command` dependency), reads folded from the task's stream with
the same ``ledger.tasks.evolve``."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Response

from ledger import clock, commands, errors, tasks, views
from ledger.api.deps import (
    AgentCall,
    AgentOrOfficerCall,
    Call,
    Caller,
    Ctx,
    OfficerCall,
    require,
)
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
from ledger.api.watch import read_view
from ledger.events import Principal
from ledger.privacy import service as privacy

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: PROBLEM_RESPONSE for status in (404, 409, 412)
}
router = APIRouter(tags=["tasks"], responses=_PROBLEMS)

Replayer = Annotated[Principal, Depends(require("officer", "auditor"))]
TaskId = Annotated[uuid.UUID, "the task's UUID"]
F = TypeVar("F", bound=Callable[..., Any])


async def _shown(call: Call, out: commands.Outcome) -> dict[str, Any]:
    """The task after a command, as the caller may see its protected fields."""
    return await privacy.of(call.ctx).reveal_state(call.principal, out.state)


def _post(path: str, model: Any, status_code: int = 200) -> Callable[[F], F]:
    """A command route: POST (its dependency declares the headers it reads)."""
    return router.post(path, response_model=model, status_code=status_code)


@_post("/tasks", TaskSubmitted, 201)
async def submit(body: TaskSubmit, call: AgentCall) -> dict[str, Any]:
    """Submit a task: a new stream ``task-<UUIDv7>`` starting with TaskSubmitted."""
    out = await call.run(None, tasks.Submit(body.task_type, body.payload, body.priority))
    call.response.headers["Location"] = f"/tasks/{out.task_id}"
    return {
        "id": out.task_id,
        "status": out.state.status,
        "version": out.version,
        "position": out.position,
    }


@_post("/tasks/{task_id}/claim", TaskOut)
async def claim(
    task_id: TaskId, call: AgentCall, body: LeaseRequest | None = None
) -> dict[str, Any]:
    """Claim a queued task: you become its worker until the lease lapses."""
    lease = call.lease_seconds(body.lease_seconds if body else None)
    return await _shown(call, await call.run(task_id, commands.claim(lease)))


@_post("/tasks/{task_id}/lease", TaskOut)
async def renew_lease(
    task_id: TaskId, call: AgentCall, body: LeaseRequest | None = None
) -> dict[str, Any]:
    """Renew the claim's lease (the worker only)."""
    until = clock.lease_until(call.lease_seconds(body.lease_seconds if body else None))
    return await _shown(call, await call.run(task_id, tasks.RenewLease(until)))


@_post("/tasks/{task_id}/steps", Written, 201)
async def record_step(task_id: TaskId, body: StepRequest, call: AgentCall) -> dict[str, Any]:
    """Record a step of the execution trace (the worker only)."""
    out = await call.run(task_id, tasks.RecordStep(body.kind, body.content))
    return {"version": out.version, "position": out.position}


@_post("/tasks/{task_id}/approval-request", TaskOut)
async def request_approval(task_id: TaskId, body: ReasonRequest, call: AgentCall) -> dict[str, Any]:
    """Ask an officer to approve before going on (the worker only)."""
    return await _shown(call, await call.run(task_id, tasks.RequestApproval(body.reason)))


@_post("/tasks/{task_id}/approve", TaskOut)
async def approve(task_id: TaskId, body: CommentRequest, call: OfficerCall) -> dict[str, Any]:
    """Approve a task awaiting approval: it runs on with the same worker."""
    return await _shown(call, await call.run(task_id, tasks.Approve(body.comment)))


@_post("/tasks/{task_id}/reject", TaskOut)
async def reject(task_id: TaskId, body: CommentRequest, call: OfficerCall) -> dict[str, Any]:
    """Reject a task awaiting approval (final)."""
    return await _shown(call, await call.run(task_id, tasks.Reject(body.comment)))


@_post("/tasks/{task_id}/complete", TaskOut)
async def complete(task_id: TaskId, body: CompleteRequest, call: AgentCall) -> dict[str, Any]:
    """Complete the task with its result (the worker only; final)."""
    return await _shown(call, await call.run(task_id, tasks.Complete(body.result)))


@_post("/tasks/{task_id}/fail", TaskOut)
async def fail(task_id: TaskId, body: FailRequest, call: AgentCall) -> dict[str, Any]:
    """Fail the task (the worker only); a retryable failure may be requeued."""
    return await _shown(call, await call.run(task_id, tasks.Fail(body.error, body.retryable)))


@_post("/tasks/{task_id}/requeue", TaskOut)
async def requeue(task_id: TaskId, body: ReasonRequest, call: AgentOrOfficerCall) -> dict[str, Any]:
    """Put a retryable failed task (or a running one whose lease lapsed) back
    in the queue. Officers and any agent (SPEC §3)."""
    cmd = tasks.Requeue(body.reason, clock.format_time(clock.now()))
    return await _shown(call, await call.run(task_id, cmd))


@_post("/tasks/{task_id}/cancel", TaskOut)
async def cancel(task_id: TaskId, body: ReasonRequest, call: AgentOrOfficerCall) -> dict[str, Any]:
    """Cancel a task that is not finished (officers, and the submitting agent)."""
    return await _shown(call, await call.run(task_id, tasks.Cancel(body.reason)))


@router.get("/tasks/{task_id}", response_model=TaskOut, responses={503: PROBLEM_RESPONSE})
async def get_task(
    ctx: Ctx,
    caller: Caller,
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
    pos, state = await read_view(
        ctx, views.TASKS, min_position, lambda conn: views.get_task(conn, str(task_id))
    )
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
    return await privacy.of(ctx).reveal_state(caller, state)


@router.get("/tasks/{task_id}/events", response_model=list[EventOut])
async def task_events(ctx: Ctx, caller: Caller, task_id: TaskId) -> list[Any]:
    """Every event of the task, full envelopes (hashes included), in order;
    protected fields as the caller may see them (docs/privacy.md)."""
    state, events = await commands.load(ctx.pool, str(task_id))
    if not events:
        raise errors.NotFound(f"no task {task_id}")
    return await privacy.of(ctx).reveal_events(caller, events, state)


@router.get("/tasks/{task_id}/replay", response_model=Replay)
async def replay(
    ctx: Ctx,
    replayer: Replayer,
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
            moment = clock.parse_time(at)
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
    shown = privacy.of(ctx)
    return {
        "state": await shown.reveal_state(replayer, state) if state else None,
        "events": await shown.reveal_events(replayer, events, state),
    }


_RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
)
