"""Task pages: the search, a task's timeline with its decision trace and the
as-of control, and the officer's approve / reject (the same command path as
``POST /tasks/{id}/approve`` and ``/reject``)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from ledger import clock, commands, errors, keys, tasks, views
from ledger.api.deps import meta_for
from ledger.console import present, queries, sessions
from ledger.console.pages import ChainStatus, ConsoleRoute, chain_status, render
from ledger.console.shown import shown_states, shown_task

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
PAGE = 50
TIMELINE_WINDOW = 200  # events drawn at once on a task's page
MAX_COMMENT = 4000
Text = Annotated[str | None, Query(max_length=200)]


def parse_moment(field: str, text: str | None) -> datetime | None:
    """A moment from a form: RFC 3339, or a ``datetime-local`` value taken as UTC."""
    if not text:
        return None
    try:
        t = clock.parse_time(text if text[-1:] in "Zz" or "+" in text[10:] else text + "Z")
    except ValueError:
        raise errors.InvalidInput(f"{field}: not a date and time, e.g. 2026-11-25T09:00") from None
    return t.astimezone(UTC)


@router.get("/tasks")
async def search(
    request: Request,
    status: Text = None,
    agent: Text = None,
    task_type: Text = None,
    since: Text = None,
    until: Text = None,
    text: Text = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    session = await sessions.current(request)
    session.require("search")
    if status is not None and status not in tasks.STATUSES:
        raise errors.InvalidInput(f"status: one of {', '.join(tasks.STATUSES)}")
    if agent is not None and not keys.NAME_RE.match(agent):
        raise errors.InvalidInput("agent: a principal name (a-z, 0-9, '_', '.', '-')")
    f = queries.Filters(
        status=status,
        agent_name=agent,
        task_type=task_type,
        text=text,
        since=parse_moment("since", since),
        until=parse_moment("until", until),
    )
    ctx = request.app.state.ctx
    async with ctx.pool.connection() as conn:
        rows = await queries.search(conn, f, before=before, limit=PAGE + 1)
        counts = await queries.status_counts(conn, agent, None if agent else task_type)
        counts_position = await views.position(conn, views.TASK_COUNTS)
        chain = await chain_status(conn)
    next_url = None
    if len(rows) > PAGE:
        rows = rows[:PAGE]
        given = {k: v for k, v in request.query_params.items() if k != "before" and v}
        next_url = "/console/tasks?" + urlencode({**given, "before": rows[-1][1]})
    return await render(
        request,
        "tasks.html",
        session,
        chain=chain,
        statuses=tasks.STATUSES,
        f={
            "status": status,
            "agent": agent,
            "task_type": task_type,
            "since": since,
            "until": until,
            "text": text,
            "before": before,
        },
        first_url="/console/tasks?"
        + urlencode({k: v for k, v in request.query_params.items() if k != "before" and v}),
        rows=await shown_states(ctx, session.principal, [state for state, _pos in rows]),
        counts=counts,
        counts_position=counts_position,
        next_url=next_url,
    )


async def load_task(request: Request, task_id: uuid.UUID) -> tuple[list[Any], ChainStatus]:
    """The task's events and the chain status, read together."""
    ctx = request.app.state.ctx
    _state, events = await commands.load(ctx.pool, str(task_id))
    if not events:
        raise errors.NotFound(f"no task {task_id}")
    async with ctx.pool.connection() as conn:
        chain = await chain_status(conn)
    return events, chain


_DONE = {"approve": "Approved", "reject": "Rejected"}


@router.get("/tasks/{task_id}")
async def task_page(
    request: Request,
    task_id: uuid.UUID,
    at: Annotated[int | None, Query(ge=1)] = None,
    events_from: Annotated[int | None, Query(alias="from", ge=1)] = None,
    decided: Annotated[str | None, Query(max_length=20)] = None,
    position: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    session = await sessions.current(request)
    session.require("timeline")
    events, chain = await load_task(request, task_id)
    events, views = await shown_task(request.app.state.ctx, session.principal, events)
    steps = present.timeline(events, chain.checkpoint_size, views)
    shown_at = min(at or len(steps), len(steps))
    # a long task's timeline is drawn a window at a time (the fold covers all)
    start = min(events_from or 1, len(steps))
    window = steps[start - 1 : start - 1 + TIMELINE_WINDOW]
    message = None
    if decided in _DONE and position:
        message = f"{_DONE[decided]}: recorded at position {position}."
    return await render(
        request,
        "task.html",
        session,
        chain=chain,
        task=steps[-1].state,
        steps=steps,
        window=window,
        window_start=start,
        window_size=TIMELINE_WINDOW,
        at=shown_at,
        shown=steps[shown_at - 1],
        first_position=events[0]["position"],
        last_position=events[-1]["position"],
        covered=chain.covers(events[-1]["position"]),
        message=message,
    )


@router.post("/tasks/{task_id}/decision")
async def decide(request: Request, task_id: uuid.UUID) -> Response:
    """Approve or reject, with the officer's comment, as POST /tasks/{id}/approve
    or /reject does: the same command, decider and append; conditional on the
    version the officer was shown (a task that moved on is refused, 412)."""
    session = await sessions.current(request)
    session.require("decide")
    sessions.same_origin(request)
    form = await sessions.read_form(request)
    sessions.check_csrf(session.csrf, form)
    decision = form.get("decision")
    comment = form.get("comment", "").strip()
    if decision not in _DONE:
        raise errors.InvalidInput("decision: approve or reject")
    if not comment:
        raise errors.InvalidInput("comment: a decision needs a comment; it goes on the record")
    if len(comment) > MAX_COMMENT:
        raise errors.InvalidInput(f"comment: at most {MAX_COMMENT} characters")
    version = form.get("version", "")
    command = tasks.Approve(comment) if decision == "approve" else tasks.Reject(comment)
    out = await commands.execute(
        request.app.state.ctx,
        str(task_id),
        command,
        session.principal,
        meta=meta_for(request, session.principal),
        expected_version=int(version) if version.isdigit() else None,
    )
    query = urlencode({"decided": decision, "position": out.position})
    return RedirectResponse(f"/console/tasks/{task_id}?{query}", status_code=303)
