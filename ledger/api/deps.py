"""What routes depend on: the app's context, the caller's principal, role
checks, and for commands one dependency (:func:`command`) that bundles them
with the checked body, ``If-Match`` and ``Idempotency-Key``."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from psycopg_pool import AsyncConnectionPool

from ledger import commands, errors, tasks
from ledger.appender import Appender
from ledger.canonical import CanonicalError, validate
from ledger.db import q
from ledger.events import Principal
from ledger.keys import key_digest
from ledger.privacy import service as privacy
from ledger.settings import Settings

REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(slots=True)
class Context:
    settings: Settings
    url: str
    pool: AsyncConnectionPool
    appender: Appender
    auth_cache: dict[bytes, tuple[float, Principal | None]] = field(default_factory=dict)
    # look-ups of a key in flight: the requests that miss the cache together share one
    auth_pending: dict[bytes, asyncio.Future[Principal | None]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


async def get_ctx(request: Request) -> Context:
    # async on purpose: FastAPI runs a plain def dependency in a worker thread,
    # one thread hop per request for a getattr
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(get_ctx)]


async def _lookup(ctx: Context, digest: bytes) -> Principal | None:
    now = time.monotonic()
    hit = ctx.auth_cache.get(digest)
    if hit is not None and hit[0] > now:
        return hit[1]
    # When an entry lapses under load, every connection using that key misses
    # at once (64 look-ups a second for one agent at 64 connections, each a pool
    # connection and a query): the first reads, the others await its answer.
    pending = ctx.auth_pending.get(digest)
    if pending is None:
        # a task of its own: a client that goes away cancels its wait, not the read
        pending = asyncio.ensure_future(_read_principal(ctx, digest, now))
        ctx.auth_pending[digest] = pending
        pending.add_done_callback(lambda _: ctx.auth_pending.pop(digest, None))
    return await asyncio.shield(pending)


async def _read_principal(ctx: Context, digest: bytes, now: float) -> Principal | None:
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(q("events", "principal_by_key"), {"key_sha256": digest})
        row = await cur.fetchone()
    principal = Principal(*row) if row else None
    if len(ctx.auth_cache) > 10_000:
        ctx.auth_cache.clear()
    ctx.auth_cache[digest] = (now + ctx.settings.auth_cache_seconds, principal)
    return principal


async def principal_of(request: Request, ctx: Context, roles: tuple[str, ...] = ()) -> Principal:
    """The caller, from ``Authorization: Bearer <key>`` (never from the body);
    refused (401) without a live key, (403) outside ``roles`` when given."""
    header = request.headers.get("authorization")
    if not header:
        raise errors.Unauthenticated(
            "send 'Authorization: Bearer <api key>'; an admin makes keys with "
            "'ledger keys create --name NAME --role ROLE'"
        )
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.Unauthenticated("the Authorization header must be 'Bearer <api key>'")
    principal = await _lookup(ctx, key_digest(token))
    if principal is None:
        raise errors.Unauthenticated("this API key is unknown or revoked")
    request.scope.setdefault("state", {})["actor"] = principal.name
    if roles and principal.role not in roles:
        raise errors.Forbidden(
            f"role {principal.role!r} may not do this; it needs one of: {', '.join(roles)}",
            actor=principal.name,
            role=principal.role,
            allowed_roles=list(roles),
        )
    return principal


async def authenticate(request: Request, ctx: Ctx) -> Principal:
    return await principal_of(request, ctx)


Caller = Annotated[Principal, Depends(authenticate)]


def require(*roles: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency admitting only principals of ``roles``."""

    async def dep(request: Request) -> Principal:
        return await principal_of(request, request.app.state.ctx, roles)

    return dep


# Optional meta (SPEC §1) a client may set by header: tie the events of one
# business process together (correlation) and to what caused them (causation).
META_HEADERS = {"X-Correlation-Id": "correlation_id", "X-Causation-Id": "causation_id"}
_META_VALUE = re.compile(r"^[\x21-\x7e]{1,128}$")  # fullmatch: "$" alone admits a final "\n"


def meta_for(request: Request, principal: Principal, **extra: Any) -> dict[str, Any]:
    """Event meta: who (from the key, never the body) and which request."""
    return event_meta(principal, request.state.request_id, request.headers.get, **extra)


def event_meta(
    principal: Principal, request_id: str, header: Callable[[str], str | None], **extra: Any
) -> dict[str, Any]:
    """:func:`meta_for` from its parts: ``header(name)`` reads a request header
    (the route's ``request.headers.get``, or the fast submit path's own reading)."""
    meta: dict[str, Any] = {
        "actor": principal.name,
        "role": principal.role,
        "request_id": request_id,
    }
    for name, meta_key in META_HEADERS.items():
        value = header(name)
        if value is None:
            continue
        if not _META_VALUE.fullmatch(value):
            raise errors.InvalidInput(
                f"{name} must be 1-128 printable ASCII characters without spaces",
                errors=[{"field": name, "rule": "pattern", "message": _META_VALUE.pattern}],
            )
        meta[meta_key] = value
    for k, v in extra.items():
        if v is not None:
            meta[k] = v
    return meta


async def checked_body(request: Request) -> Any:
    """The request body, refused (422) if RFC 8785 could not hash it faithfully.

    FastAPI's own parser admits NaN, Infinity, 1e400 and lone surrogates;
    this gate runs on what it parsed (``request.json()`` keeps it: the body is
    parsed once) before any route writes anything.
    """
    raw = await request.body()
    if not raw:
        return None
    try:
        # NaN and Infinity parse to floats here so that validate names where they are
        value = await request.json()
        validate(value)
    except CanonicalError as exc:
        raise errors.InvalidInput(
            f"{exc.path or 'body'}: {exc.message}",
            errors=[{"field": exc.path or "body", "rule": exc.rule, "message": exc.message}],
        ) from None
    except (ValueError, RecursionError) as exc:
        raise errors.InvalidInput(
            f"body is not valid JSON: {exc}",
            errors=[{"field": "body", "rule": "json", "message": str(exc)}],
        ) from None
    return value


CheckedBody = Annotated[Any, Depends(checked_body)]
_CHECKED_BODY = Depends(checked_body)  # the same, as a parameter's default

# -- commands ----------------------------------------------------------------------

_IF_MATCH_RE = re.compile(r'^(?:W/)?"?(\d{1,15})"?$')
IDEMPOTENCY_KEY_MAX = 200
_IDEMPOTENCY_KEY_CHARS = r"[\x21-\x7e]"
# The header's rule as FastAPI checks it below, as one pattern (fullmatch:
# "$" alone admits a final "\n"), for what reads the header without FastAPI
IDEMPOTENCY_KEY_RE = re.compile(f"^{_IDEMPOTENCY_KEY_CHARS}{{1,{IDEMPOTENCY_KEY_MAX}}}$")
# The two headers a command takes, as FastAPI validates and documents them
# (a bad Idempotency-Key is a 422 listed with the body's own errors).
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
        max_length=IDEMPOTENCY_KEY_MAX,
        pattern=f"^{_IDEMPOTENCY_KEY_CHARS}+$",
        description="retry-safe: same key and body answer as the first time, writing nothing",
    ),
]


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


def idempotency_binding(
    route: str, task_id: str | None, body: Any, expected_version: int | None
) -> dict[str, Any]:
    """The request an Idempotency-Key is bound to (``commands.execute``)."""
    bound: dict[str, Any] = {"route": route, "task_id": task_id, "body": body}
    if expected_version is not None:
        bound["if_match"] = expected_version
    return bound


@dataclass(slots=True)
class Call:
    """A command request: who sends it, its checked body and headers."""

    request: Request
    response: Response
    ctx: Context
    principal: Principal
    body: Any
    if_match: str | None
    idempotency_key: str | None

    @property
    def expected_version(self) -> int | None:
        """``If-Match`` as a version; read when the command runs, after FastAPI
        checked the body, so a bad body is reported before a bad If-Match."""
        return _expected(self.if_match)

    def meta(self) -> dict[str, Any]:
        return meta_for(self.request, self.principal, idempotency_key=self.idempotency_key)

    def idempotency(self, task_id: str | None) -> tuple[str, Any] | None:
        """What the Idempotency-Key is bound to: the route, the task and the body."""
        if self.idempotency_key is None:
            return None
        route = self.request.scope.get("route")
        path = getattr(route, "path", self.request.url.path)
        bound = idempotency_binding(
            f"{self.request.method} {path}", task_id, self.body, self.expected_version
        )
        return self.idempotency_key, bound

    def answered(self, out: commands.Outcome) -> commands.Outcome:
        if out.duplicate:
            self.response.headers[REPLAYED_HEADER] = "true"
        self.response.headers["ETag"] = f'"{out.state.version}"'
        return out

    async def run(self, task_id: uuid.UUID | None, command: tasks.TaskCommand) -> commands.Outcome:
        tid = str(task_id) if task_id is not None else None
        out = await commands.execute(
            self.ctx,
            tid,
            command,
            self.principal,
            meta=self.meta(),
            expected_version=self.expected_version,
            idempotency=self.idempotency(tid),
            seal=privacy.of(self.ctx).seal,
        )
        return self.answered(out)

    def lease_seconds(self, asked: int | None) -> int:
        settings = self.ctx.settings
        seconds = asked or settings.default_lease_seconds
        if seconds > settings.max_lease_seconds:
            raise errors.InvalidInput(
                f"lease_seconds: at most {settings.max_lease_seconds}",
                errors=[{"field": "lease_seconds", "rule": "le", "message": "lease too long"}],
            )
        return seconds


def command(*roles: str, with_if_match: bool = True) -> Callable[..., Coroutine[Any, Any, Call]]:
    """The dependency of a command route open to ``roles``: the caller (401/403
    first), the canonical gate on the body, and the two headers.
    ``with_if_match=False``: a command on no particular task (the queue claim),
    which takes no ``If-Match`` and leaves the header alone."""
    who = Depends(require(*roles))

    # defaults, not Annotated (``who`` is local here), in the order they run
    async def call(
        request: Request,
        response: Response,
        principal: Principal = who,
        body: Any = _CHECKED_BODY,
        idempotency_key: IdempotencyKey = None,
    ) -> Call:
        ctx: Context = request.app.state.ctx
        return Call(request, response, ctx, principal, body, None, idempotency_key)

    the_call = Depends(call)

    async def with_if_match_header(c: Call = the_call, if_match: IfMatch = None) -> Call:
        c.if_match = if_match
        return c

    return with_if_match_header if with_if_match else call


AgentCall = Annotated[Call, Depends(command("agent"))]
QueueCall = Annotated[Call, Depends(command("agent", with_if_match=False))]
OfficerCall = Annotated[Call, Depends(command("officer"))]
AgentOrOfficerCall = Annotated[Call, Depends(command("agent", "officer"))]
