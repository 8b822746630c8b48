"""Signing in and out, the console's static files, and the auditor's
"verify what is new" action."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import FileResponse, RedirectResponse, Response

from ledger import errors
from ledger.audit.stored import verify_stored
from ledger.console import sessions
from ledger.console.pages import HERE, ConsoleRoute, render

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
STATIC = HERE / "static"
STATIC_FILES = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}
SIGN_IN_SECONDS = 600  # the sign-in form's token lives this long


def _safe_next(target: str | None) -> str:
    """Only a path of the console itself: never another site."""
    if target and target.startswith("/console/") and not target.startswith("//"):
        return target
    return "/console/tasks"


@router.get("")
async def index() -> Response:
    return RedirectResponse("/console/tasks", status_code=303)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    path: Path | None = STATIC_FILES.get(name)
    if path is None:
        raise errors.NotFound(f"no console file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "max-age=3600"})


async def _sign_in_page(
    request: Request, next_: str, message: str | None = None, status_code: int = 200
) -> Response:
    token = secrets.token_urlsafe(32)
    page = await render(
        request,
        "sign_in.html",
        None,
        status_code=status_code,
        csrf=token,
        next=_safe_next(next_),
        message=message,
    )
    sessions.set_cookie(request, page, sessions.SIGN_IN_COOKIE, token, SIGN_IN_SECONDS)
    return page


@router.get("/sign-in")
async def sign_in_form(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> Response:
    return await _sign_in_page(request, next or "")


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    sessions.same_origin(request)
    form = await sessions.read_form(request)
    # double submit: the form's token must be the one this browser's cookie holds
    sessions.check_csrf(request.cookies.get(sessions.SIGN_IN_COOKIE), form)
    key = form.get("api_key", "")
    opened = await sessions.open_session(request.app.state.ctx, key) if key.strip() else None
    if opened is None:
        return await _sign_in_page(
            request,
            form.get("next", ""),
            "That API key is unknown or revoked.",
            status_code=401,
        )
    token, _session = opened
    answer = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    seconds = int(request.app.state.ctx.settings.console_session_seconds)
    sessions.set_cookie(request, answer, sessions.COOKIE, token, max(seconds, 1))
    answer.delete_cookie(sessions.SIGN_IN_COOKIE, path=sessions.PATH)
    return answer


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    session = await sessions.current(request)
    sessions.same_origin(request)
    sessions.check_csrf(session.csrf, await sessions.read_form(request))
    await sessions.close_session(request.app.state.ctx, session)
    answer = RedirectResponse("/console/sign-in", status_code=303)
    answer.delete_cookie(sessions.COOKIE, path=sessions.PATH)
    return answer


@router.post("/verify")
async def verify_new(request: Request) -> Response:
    """Checks the events appended since the last verification (GET /audit/verify's
    incremental check) and returns to the page it was asked from."""
    session = await sessions.current(request)
    session.require("verify")
    sessions.same_origin(request)
    form = await sessions.read_form(request)
    sessions.check_csrf(session.csrf, form)
    ctx = request.app.state.ctx
    lock: asyncio.Lock = ctx.extras.setdefault("verify_lock", asyncio.Lock())
    async with lock:
        result, _checked = await asyncio.to_thread(
            verify_stored, ctx.url, ctx.settings.db_role, None, None
        )
    if not result.ok:
        raise errors.Conflict(
            f"verification FAILED at position {result.first_bad_position}: {result.reason}"
        )
    return RedirectResponse(_safe_next(form.get("next")), status_code=303)
