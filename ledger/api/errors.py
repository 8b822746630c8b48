"""One table from errors to HTTP: every LedgerError becomes an RFC 9457
problem document with its status; request validation errors become 422s
that name the field and the rule."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout, TooManyRequests
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger import errors

PROBLEM = "application/problem+json"
TYPE_BASE = "https://ledger.example/problems/"
log = structlog.get_logger("ledger.api")
# Seconds a 503 asks the client to wait when its cause names none.
RETRY_AFTER = 1


def problem(
    status: int,
    title: str,
    detail: str,
    slug: str,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ledger"'
    if status == 503:  # every 503 says when to come back (RFC 9110 §10.2.3)
        extra.setdefault("retry_after", RETRY_AFTER)
    if extra.get("retry_after") is not None:
        headers["Retry-After"] = str(extra["retry_after"])
    return ProblemResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


class ProblemResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: whatever a client sent that
    ends up in a problem's text (a lone surrogate in a key, say) can always be
    sent back."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or ".".join(str(p) for p in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.LedgerError)
    async def ledger_error(request: Request, exc: errors.LedgerError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("request_failed", error=exc.detail, kind=exc.type_slug)
        extra = dict(exc.extra)
        if not getattr(exc, "transient", True):
            extra["retry_after"] = None  # waiting will not mend it: no Retry-After
        return problem(exc.status, exc.title, exc.detail, exc.type_slug, request.url.path, **extra)

    @app.exception_handler(psycopg.errors.LockNotAvailable)
    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def database_busy(request: Request, exc: psycopg.Error) -> JSONResponse:
        # SQLSTATE 55P03 / 57014: the session's lock_timeout or statement_timeout
        # ran out (a rebuild swapping a view in, a stuck writer): nothing was
        # written by this request; a retry shortly will most likely pass.
        log.warning("request_database_busy", path=request.url.path, sqlstate=exc.sqlstate)
        return problem(
            503,
            "Database busy",
            "the database did not grant a lock or finish a statement in time; "
            "nothing was written; retry shortly",
            "database-busy",
            request.url.path,
            retry_after=1,
        )

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(psycopg.InterfaceError)
    async def database_unavailable(request: Request, exc: psycopg.Error) -> JSONResponse:
        # PostgreSQL stopped, restarting or unreachable (AdminShutdown, a broken
        # or refused connection, no pooled connection within the pool's timeout):
        # the request is answered now, and the service heals when it returns.
        title, slug, detail = _outage(exc)
        log.warning(
            "request_database_unavailable",
            path=request.url.path,
            error=type(exc).__name__,
            sqlstate=getattr(exc, "sqlstate", None),
        )
        _check_pool(request)
        return problem(503, title, detail, slug, request.url.path, retry_after=RETRY_AFTER)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [
            {"field": _loc(tuple(e.get("loc", ()))), "rule": e.get("type"), "message": e.get("msg")}
            for e in exc.errors()
        ]
        first = errs[0] if errs else {"field": "?", "message": "invalid"}
        return problem(
            422,
            "Invalid input",
            f"{first['field']}: {first['message']}",
            "invalid-input",
            request.url.path,
            errors=errs,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
            # FastAPI's body parser gave up on absurd nesting before our gate saw it.
            return problem(
                422,
                "Invalid input",
                "body: nesting deeper than 32 levels is refused",
                "invalid-input",
                request.url.path,
                errors=[{"field": "body", "rule": "max_depth", "message": "nesting too deep"}],
            )
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's body parser could not read the body at all (not UTF-8,
            # say): bad input like any other body that is not JSON, a 422.
            why = f"{type(exc.__cause__).__name__}: {exc.__cause__}"[:300]
            return problem(
                422,
                "Invalid input",
                f"body is not valid JSON ({why})",
                "invalid-input",
                request.url.path,
                errors=[{"field": "body", "rule": "json", "message": why}],
            )
        if exc.status_code == 413:  # the body limit, hit while the body was read
            return too_large(str(exc.detail), request.url.path)
        titles = {
            404: ("Not found", "not-found"),
            405: ("Method not allowed", "method-not-allowed"),
        }
        title, slug = titles.get(exc.status_code, ("HTTP error", f"http-{exc.status_code}"))
        return problem(
            exc.status_code,
            title,
            str(exc.detail),
            slug,
            request.url.path,
            headers=dict(exc.headers or {}),  # 405 names the methods allowed (Allow)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request_crashed", path=request.url.path)
        return problem(
            500,
            "Internal error",
            "an unexpected error occurred; it has been logged",
            "internal",
            request.url.path,
        )


def too_large(detail: str, instance: str) -> JSONResponse:
    """A body over the limit: SPEC §1 lists it among the content the ledger
    refuses with 422 (nothing written); the problem type says which rule."""
    return problem(
        422,
        "Request body too large",
        detail,
        "payload-too-large",
        instance,
        errors=[{"field": "body", "rule": "max_bytes", "message": detail}],
    )


def _outage(exc: psycopg.Error) -> tuple[str, str, str]:
    if isinstance(exc, TooManyRequests):
        return (
            "Service overloaded",
            "overloaded",
            "too many requests are waiting for a database connection; retry shortly",
        )
    if isinstance(exc, PoolTimeout):
        return (
            "Database unavailable",
            "database-unavailable",
            "no database connection could be had in time (the database is unreachable "
            "or busy); retry shortly",
        )
    return (
        "Database unavailable",
        "database-unavailable",
        "the database connection failed; a read can be retried, and a command "
        "retried with the same Idempotency-Key is recorded at most once",
    )


def _check_pool(request: Request) -> None:
    """After a connection failed: have the pool test its idle connections (at
    most one check at a time), so connections the outage broke are replaced
    instead of each failing one more request when the database is back."""
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None:
        return
    running = ctx.extras.get("pool_check")
    if running is not None and not running.done():
        return
    ctx.extras["pool_check"] = asyncio.get_running_loop().create_task(_quiet_check(ctx.pool))


async def _quiet_check(pool: Any) -> None:
    with contextlib.suppress(Exception):
        await pool.check()
