"""Rendering: the Jinja2 environment, the chain status every page shows, and
the route class that turns the console's errors into pages (a browser with no
session is sent to sign in; other refusals are an HTML page with the status)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ledger import errors
from ledger.clock import format_time
from ledger.console import present
from ledger.console.sessions import Session, SignInRequired, current
from ledger.db import q

HERE = Path(__file__).resolve().parent
ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    auto_reload=False,  # the templates ship with the package
    lstrip_blocks=True,
)
ENV.globals["node"] = present.node
ENV.globals["step_labels"] = present.STEP_LABELS
ENV.globals["tool_call"] = present.tool_call
# A whole state in a report: indented JSON, as the API answers it (one escape
# instead of a table of values: a report holds one per event).
ENV.globals["state_json"] = lambda state: orjson.dumps(state, option=orjson.OPT_INDENT_2).decode()


def when(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return format_time(value)
    return str(value)


ENV.filters["when"] = when
ENV.filters["short"] = lambda h, n=12: (str(h)[:n] + "…") if h else ""


async def start_warming(ctx: Any) -> Callable[[], Coroutine[Any, Any, None]]:
    """A service of the app: compile every template once started (~0.2 s),
    in a thread, so that no one's first page pays for it."""
    import asyncio

    def compile_all() -> None:
        for name in ENV.list_templates():
            ENV.get_template(name)

    task = asyncio.create_task(asyncio.to_thread(compile_all))

    async def stop() -> None:
        await task

    return stop


@dataclass(frozen=True, slots=True)
class ChainStatus:
    head: int
    head_hash: str
    verified: int
    verified_at: datetime | None
    checkpoint_size: int | None
    checkpoint_at: datetime | None

    def covers(self, position: int) -> bool:
        return self.checkpoint_size is not None and position <= self.checkpoint_size


async def chain_status(conn: Any) -> ChainStatus:
    cur = await conn.execute(q("console", "chain_status"))
    head, head_hash, verified, verified_at, size, signed_at = await cur.fetchone()
    return ChainStatus(
        int(head),
        bytes(head_hash).hex(),
        int(verified),
        verified_at,
        int(size) if size is not None else None,
        signed_at,
    )


async def render(
    request: Request,
    name: str,
    session: Session | None,
    *,
    status_code: int = 200,
    chain: ChainStatus | None = None,
    **values: Any,
) -> HTMLResponse:
    """The page ``name`` with who is signed in and the chain status."""
    if chain is None and session is not None:
        async with request.app.state.ctx.pool.connection() as conn:
            chain = await chain_status(conn)
    html = ENV.get_template(name).render(
        session=session,
        chain=chain,
        path=request.url.path,
        query=str(request.url.query),
        **values,
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


# No script from elsewhere, no framing, no sniffing; pages are not cached
# (they show a signed-in principal's view of the ledger).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class ConsoleRoute(APIRoute):
    """Console routes answer in HTML, errors included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except SignInRequired as exc:
                if request.method == "GET":
                    target = request.url.path + (
                        f"?{request.url.query}" if request.url.query else ""
                    )
                    return RedirectResponse(
                        f"/console/sign-in?next={quote(target, safe='')}", status_code=303
                    )
                return await render(
                    request,
                    "error.html",
                    None,
                    status_code=401,
                    title="Sign in needed",
                    detail=exc.detail,
                )
            except errors.LedgerError as exc:
                return await _error_page(request, exc.status, exc.title, exc.detail)
            except RequestValidationError as exc:
                detail = "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}"
                    for e in exc.errors()
                )
                return await _error_page(request, 422, "Invalid request", detail)

        return handler


async def _error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    session = None
    with contextlib.suppress(errors.LedgerError):
        session = await current(request)
    return await render(
        request, "error.html", session, status_code=status, title=title, detail=detail
    )
