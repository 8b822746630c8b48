"""``POST /tasks`` without the framework's per-request machinery.

Submissions are most of the traffic, and a profile of one under load showed
FastAPI's routing, dependency resolution and response validation at about a
third of the API process's time: more than the command itself. This ASGI
layer answers a submission that is plainly well formed (a JSON body the
route's own model accepts, a known agent's key, well-formed headers) by
calling the same pieces the route calls, in the same order: the principal
look-up and its cache, the canonical gate, ``TaskSubmit``,
``commands.execute`` with the same meta and idempotency binding, the
exception handlers of ``ledger/api/errors.py`` for what it raises, and
``TaskSubmitted`` for the answer.

Anything it does not take for certain (a missing or unknown key, another
role, a body or header the route would refuse, an unusual content type) is
handed to FastAPI untouched, with the body it read replayed, so every refusal
is the route's own. Nothing is written before that choice is made.
``tests/api/test_fast_submit.py`` holds both paths to the same answers.
``LEDGER_FAST_SUBMIT=false`` turns it off.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ledger import commands, tasks
from ledger.api.deps import (
    IDEMPOTENCY_KEY_RE,
    META_HEADERS,
    REPLAYED_HEADER,
    Context,
    _expected,
    _lookup,
    event_meta,
    idempotency_binding,
)
from ledger.api.task_models import TaskSubmit, TaskSubmitted
from ledger.canonical import CanonicalError, validate
from ledger.errors import LedgerError
from ledger.keys import key_digest
from ledger.privacy import service as privacy

Scope = dict[str, Any]
ROUTE = "/tasks"
_WANTED = {
    b"authorization",
    b"content-type",
    b"idempotency-key",
    b"if-match",
    *(h.lower().encode() for h in META_HEADERS),
}


class FastSubmit:
    """ASGI middleware: well-formed ``POST /tasks`` answered here, the rest passed on."""

    def __init__(self, app: Any, root: FastAPI) -> None:
        self.app = app
        self.root = root
        self.route: APIRoute | None = None
        self.served = 0  # submissions answered here (the tests read it)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != ROUTE
            or scope["method"] != "POST"
            or scope.get("query_string")
        ):
            await self.app(scope, receive, send)
            return
        ctx: Context | None = getattr(self.root.state, "ctx", None)
        if ctx is None or not ctx.settings.fast_submit:
            await self.app(scope, receive, send)
            return
        pieces: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left: FastAPI says so
                await self.app(scope, _replay(b"", receive, message), send)
                return
            pieces.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(pieces)
        replayed = _replay(body, receive)
        submission: tuple[Any, ...] | None = None
        try:
            submission = await self._taken(ctx, scope, body)
            if submission is not None:
                self.served += 1
                response = await self._submit(*submission)
        except Exception as exc:  # the route's handlers, looked up as Starlette does
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(Request(scope, replayed), exc)
        else:
            if submission is None:
                await self.app(scope, replayed, send)
                return
        await response(scope, replayed, send)

    async def _taken(self, ctx: Context, scope: Scope, body: bytes) -> tuple[Any, ...] | None:
        """What the route would accept from this request, or None to pass it on."""
        if not body:
            return None
        seen: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                if name in seen:  # a header given twice: the framework's reading rules
                    return None
                seen[name] = value.decode("latin-1")
        content_type = seen.get(b"content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return None
        scheme, _, token = seen.get(b"authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        key = seen.get(b"idempotency-key")
        if key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(key):
            return None
        try:
            value = orjson.loads(body)
            validate(value)
            submit = TaskSubmit.model_validate(value)
            expected = _expected(seen.get(b"if-match"))
        except (orjson.JSONDecodeError, CanonicalError, ValidationError, LedgerError):
            return None
        principal = await _lookup(ctx, key_digest(token))
        if principal is None or principal.role != "agent":
            return None
        state = scope.setdefault("state", {})
        try:  # the route's meta, headers read from what was seen
            meta = event_meta(
                principal,
                state["request_id"],
                lambda name: seen.get(name.lower().encode()),
                idempotency_key=key,
            )
        except LedgerError:  # a malformed correlation header: the route says so
            return None
        state["actor"] = principal.name
        scope["route"] = self._route()
        idempotency = None
        if key is not None:
            idempotency = (key, idempotency_binding(f"POST {ROUTE}", None, value, expected))
        return ctx, principal, submit, meta, expected, idempotency

    async def _submit(
        self,
        ctx: Context,
        principal: Any,
        submit: TaskSubmit,
        meta: dict[str, Any],
        expected: int | None,
        idempotency: tuple[str, Any] | None,
    ) -> Response:
        out = await commands.execute(
            ctx,
            None,
            tasks.Submit(submit.task_type, submit.payload, submit.priority),
            principal,
            meta=meta,
            expected_version=expected,
            idempotency=idempotency,
            seal=privacy.of(ctx).seal,
        )
        # the route returns this dict and FastAPI validates it into its response model
        answer = TaskSubmitted.model_validate(
            {
                "id": out.task_id,
                "status": out.state.status,
                "version": out.version,
                "position": out.position,
            }
        )
        response = Response(answer.model_dump_json().encode(), 201, media_type="application/json")
        raw = response.raw_headers
        if out.duplicate:
            raw.append((REPLAYED_HEADER.lower().encode(), b"true"))
        raw.append((b"etag", f'"{out.state.version}"'.encode()))
        raw.append((b"location", f"/tasks/{out.task_id}".encode()))
        return response

    def _handler(self, exc: Exception) -> Any:
        handlers = self.root.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:  # the 500s: left to the outermost layer, as on the route
                return None
            if cls in handlers:
                return handlers[cls]
        return None

    def _route(self) -> APIRoute | None:
        if self.route is None:
            for route in self.root.routes:
                if (
                    isinstance(route, APIRoute)
                    and route.path == ROUTE
                    and "POST" in (route.methods or ())
                ):
                    self.route = route
        return self.route


def _replay(body: bytes, receive: Any, first: dict[str, Any] | None = None) -> Any:
    """A receive that gives ``body`` (or ``first``) once, then what the client sends."""
    pending: list[dict[str, Any]] = [
        first or {"type": "http.request", "body": body, "more_body": False}
    ]

    async def again() -> dict[str, Any]:
        if pending:
            return pending.pop()
        message: dict[str, Any] = await receive()
        return message

    return again
