"""The regulator's report: per task (officers and auditors) and per time range
(auditors), as HTML and PDF, with the task's audit bundle from the same page."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from ledger import errors, store
from ledger.console import evidence, pdf, sessions
from ledger.console.evidence import Report
from ledger.console.pages import ConsoleRoute, chain_status, render
from ledger.console.queries import tasks_in_range
from ledger.console.taskpages import parse_moment
from ledger.proofs import bundle

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
RANGE_TASKS = 100  # most tasks one range report holds
Moment = Annotated[str | None, Query(max_length=40)]


async def _task_report(request: Request, task_id: uuid.UUID) -> tuple[sessions.Session, Report]:
    session = await sessions.current(request)
    session.require("report")
    ctx = request.app.state.ctx
    tr = await evidence.task_report(ctx, str(task_id), session.principal)
    async with ctx.pool.connection() as conn:
        chain = await chain_status(conn)
    report = Report(
        title=f"Regulator's report: task {task_id}",
        generated_at=evidence.stamp(),
        generated_by=f"{session.principal.name} ({session.principal.role})",
        chain=chain,
        tasks=[tr],
    )
    return session, report


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}


@router.get("/tasks/{task_id}/report")
async def task_report(request: Request, task_id: uuid.UUID) -> Response:
    session, report = await _task_report(request, task_id)
    return await render(request, "report.html", session, chain=report.chain, report=report)


@router.get("/tasks/{task_id}/report.pdf")
async def task_report_pdf(request: Request, task_id: uuid.UUID) -> Response:
    _session, report = await _task_report(request, task_id)
    return Response(
        pdf.render(report),
        media_type="application/pdf",
        headers=_attachment(f"task-{task_id}.report.pdf"),
    )


@router.get("/tasks/{task_id}/bundle.json")
async def task_bundle(request: Request, task_id: uuid.UUID) -> Response:
    """The task's audit bundle: the file ``ledger verify`` checks offline."""
    session = await sessions.current(request)
    session.require("report")
    ctx = request.app.state.ctx
    async with ctx.pool.connection() as conn:
        built = await bundle.build(
            conn, str(task_id), wait=evidence.BUNDLE_WAIT, nodes=evidence.node_memo(ctx)
        )
    return Response(
        orjson.dumps(built),
        media_type="application/json",
        headers=_attachment(f"task-{task_id}.bundle.json"),
    )


async def _range_report(
    request: Request, since: str | None, until: str | None
) -> tuple[sessions.Session, Report | None]:
    session = await sessions.current(request)
    session.require("range_report")
    if not since or not until:
        return session, None
    t0, t1 = parse_moment("since", since), parse_moment("until", until)
    ctx = request.app.state.ctx
    async with ctx.pool.connection() as conn:
        ids, lo, hi = await tasks_in_range(conn, t0, t1, RANGE_TASKS + 1)
        chain = await chain_status(conn)
    reports = [await evidence.task_report(ctx, tid, session.principal) for tid in ids[:RANGE_TASKS]]
    return session, Report(
        title=f"Regulator's report: {since} to {until} (UTC)",
        generated_at=evidence.stamp(),
        generated_by=f"{session.principal.name} ({session.principal.role})",
        chain=chain,
        tasks=reports,
        range_verification=await evidence.range_verification(ctx, lo, hi),
        positions=(lo, hi),
        truncated=len(ids) > RANGE_TASKS,
    )


@router.get("/report")
async def range_report(request: Request, since: Moment = None, until: Moment = None) -> Response:
    session, report = await _range_report(request, since, until)
    if report is None:
        return await render(request, "range.html", session)
    pdf_url = "/console/report.pdf?" + str(request.url.query)
    return await render(
        request, "report.html", session, chain=report.chain, report=report, pdf_url=pdf_url
    )


@router.get("/report.pdf")
async def range_report_pdf(
    request: Request, since: Moment = None, until: Moment = None
) -> Response:
    _session, report = await _range_report(request, since, until)
    if report is None:
        raise errors.InvalidInput("give since and until")
    return Response(
        pdf.render(report), media_type="application/pdf", headers=_attachment("ledger-report.pdf")
    )


@router.get("/export")
async def export(
    request: Request,
    from_: Annotated[int, Query(alias="from", ge=1)] = 1,
    to: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """GET /audit/export for a signed-in auditor: the NDJSON bundle of a range."""
    session = await sessions.current(request)
    session.require("range_report")
    ctx = request.app.state.ctx
    async with ctx.pool.connection() as conn:
        head, _hash = await store.head_async(conn)
    last = min(to, head) if to is not None else head
    return StreamingResponse(
        store.export_pages(ctx.pool, from_, last),
        media_type="application/x-ndjson",
        headers=_attachment(f"ledger-{from_}-{last}.ndjson"),
    )
