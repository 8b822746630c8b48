"""Console sessions: an API key signs a browser in once; the browser then holds
an HttpOnly, SameSite=Strict cookie naming a server-side session (only its
SHA-256 is stored, in ``console_sessions``), and every form carries the
session's CSRF token.

Sign-in itself is protected by a double-submit token: the sign-in page sets a
short-lived cookie and puts the same value in the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.responses import Response

from ledger import errors
from ledger.db import q
from ledger.events import Principal
from ledger.keys import key_digest

COOKIE = "ledger_console"
SIGN_IN_COOKIE = "ledger_console_sign_in"
PATH = "/console"
MAX_FORM_BYTES = 64 * 1024

# What each role may do in the console: SPEC §4, page by page.
ALL_ROLES = frozenset({"agent", "officer", "auditor", "admin"})
ABILITIES: dict[str, frozenset[str]] = {
    "search": ALL_ROLES,  # GET /tasks: any
    "timeline": ALL_ROLES,  # GET /tasks/{id}/events: any
    "as_of": frozenset({"officer", "auditor"}),  # GET /tasks/{id}/replay
    "decide": frozenset({"officer"}),  # POST /tasks/{id}/approve, /reject
    "report": frozenset({"officer", "auditor"}),  # every interim state: replay
    "range_report": frozenset({"auditor"}),  # GET /events, /audit/export, /audit/verify
    "verify": frozenset({"auditor"}),  # GET /audit/verify
}


class SignInRequired(errors.Unauthenticated):
    """No live session: the console sends the browser to its sign-in page."""


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str
    expires_at: datetime
    token_sha256: bytes

    def can(self, ability: str) -> bool:
        return self.principal.role in ABILITIES[ability]

    def require(self, ability: str) -> None:
        if not self.can(ability):
            allowed = ", ".join(sorted(ABILITIES[ability]))
            raise errors.Forbidden(
                f"role {self.principal.role!r} may not do this; it needs one of: {allowed}"
            )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def open_session(ctx: Any, api_key: str) -> tuple[str, Session] | None:
    """A new session for the principal holding ``api_key``, or None when the
    key is unknown or revoked. Returns the cookie's token and the session."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    seconds = float(ctx.settings.console_session_seconds)
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(
            q("console", "session_open"),
            {
                "token": _digest(token),
                "csrf": csrf,
                "seconds": seconds,
                "key_sha256": key_digest(api_key.strip()),
            },
        )
        row = await cur.fetchone()
    if row is None:
        return None
    name, role, csrf, expires = row
    return token, Session(Principal(name, role), csrf, expires, _digest(token))


async def current(request: Request) -> Session:
    """The request's live session; SignInRequired when there is none."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired("sign in with your API key")
    digest = _digest(token)
    ctx = request.app.state.ctx
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(q("console", "session_get"), {"token": digest})
        row = await cur.fetchone()
    if row is None:
        raise SignInRequired("your session has ended (expired or signed out); sign in again")
    name, role, csrf, expires = row
    request.scope.setdefault("state", {})["actor"] = name
    return Session(Principal(name, role), csrf, expires, digest)


async def close_session(ctx: Any, session: Session) -> None:
    async with ctx.pool.connection() as conn:
        await conn.execute(q("console", "session_close"), {"token": session.token_sha256})


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https"
        or bool(request.app.state.ctx.settings.console_secure_cookies),
    )


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (every console form is one)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise errors.Forbidden("console actions are form posts from the console's own pages")
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise errors.InvalidInput(f"the form is larger than {MAX_FORM_BYTES} bytes")
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def same_origin(request: Request) -> None:
    """A browser names the page a form was posted from: it must be this site."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin.split("://", 1)[-1] != host:
        raise errors.Forbidden("this form was posted from another site; the console refused it")


def check_csrf(expected: str | None, form: dict[str, str]) -> None:
    given = form.get("csrf", "")
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise errors.Forbidden(
            "this form's security token does not match your session; reload the page and try again"
        )
