"""Pure ASGI middleware: request ids, the body size limit, one log line per request."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.api.errors import too_large

log = structlog.get_logger("ledger.http")
_RID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Scope = dict[str, Any]


class RequestMiddleware:
    """Binds a request id, enforces the body limit (422), logs the request."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        qs: bytes = scope.get("query_string", b"")
        if qs and (b"=&" in qs or qs.endswith(b"=")):
            scope = {**scope, "query_string": _without_blanks(qs)}
        rid = None
        length = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                rid = v.decode("latin-1")
            elif k == b"content-length":
                try:
                    length = int(v)
                except ValueError:
                    length = None
        if not rid or not _RID_RE.match(rid):
            rid = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status_holder = [500]
        rid_header = (b"x-request-id", rid.encode())

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        limit = self.max_body
        if length is not None and length > limit:
            await self._too_large(scope, send_wrapper, limit)
        else:
            seen = 0

            async def receive_limited() -> dict[str, Any]:
                nonlocal seen
                message: dict[str, Any] = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise _TooLarge(limit)
                return message

            try:
                await self.app(scope, receive_limited, send_wrapper)
            except _TooLarge:
                await self._too_large(scope, send_wrapper, limit)
        route = scope.get("route")
        log.info(
            "request_handled",
            request_id=rid,
            method=scope["method"],
            route=getattr(route, "path", scope["path"]),
            status=status_holder[0],
            actor=state.get("actor"),
            latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        )

    async def _too_large(self, scope: Scope, send: Any, limit: int) -> None:
        await too_large(_limit_detail(limit), scope["path"])(scope, _no_body, send)


def _without_blanks(qs: bytes) -> bytes:
    """``?status=&limit=10`` is ``?limit=10``: a parameter given empty is one
    not given (SPEC §4 writes its lists as ``?status=&agent_name=...``, and
    clients fill such templates), instead of a 422 for an empty filter."""
    return b"&".join(p for p in qs.split(b"&") if p and p.find(b"=") != len(p) - 1)


def _limit_detail(limit: int) -> str:
    return (
        f"request bodies are limited to {limit} bytes; split the content or store it "
        "elsewhere and reference it"
    )


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _TooLarge(StarletteHTTPException):
    """Raised from receive(); an HTTPException so FastAPI's body reader passes it on."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _limit_detail(limit))  # answered as a 422 problem
