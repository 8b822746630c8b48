"""What routes depend on: the app's context, the caller's principal, role
checks and the canonical-content gate for request bodies."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from ledger import errors
from ledger.appender import Appender
from ledger.canonical import CanonicalError, validate
from ledger.db import q
from ledger.keys import key_digest
from ledger.settings import Settings


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str


@dataclass(slots=True)
class Context:
    settings: Settings
    url: str
    pool: AsyncConnectionPool
    appender: Appender
    auth_cache: dict[bytes, tuple[float, Principal | None]] = field(default_factory=dict)
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
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(q("events", "principal_by_key"), {"key_sha256": digest})
        row = await cur.fetchone()
    principal = Principal(row[0], row[1]) if row else None
    if len(ctx.auth_cache) > 10_000:
        ctx.auth_cache.clear()
    ctx.auth_cache[digest] = (now + ctx.settings.auth_cache_seconds, principal)
    return principal


async def authenticate(request: Request, ctx: Ctx) -> Principal:
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
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def require(*roles: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency admitting only principals of ``roles``."""

    async def dep(principal: Caller) -> Principal:
        if principal.role not in roles:
            raise errors.Forbidden(
                f"role {principal.role!r} may not do this; it needs one of: {', '.join(roles)}",
                actor=principal.name,
                role=principal.role,
                allowed_roles=list(roles),
            )
        return principal

    return dep


# Optional meta (SPEC §1) a client may set by header: tie the events of one
# business process together (correlation) and to what caused them (causation).
META_HEADERS = {"X-Correlation-Id": "correlation_id", "X-Causation-Id": "causation_id"}
_META_VALUE = re.compile(r"^[\x21-\x7e]{1,128}$")


def meta_for(request: Request, principal: Principal, **extra: Any) -> dict[str, Any]:
    """Event meta: who (from the key, never the body) and which request."""
    meta: dict[str, Any] = {
        "actor": principal.name,
        "role": principal.role,
        "request_id": request.state.request_id,
    }
    for header, meta_key in META_HEADERS.items():
        value = request.headers.get(header)
        if value is None:
            continue
        if not _META_VALUE.match(value):
            raise errors.InvalidInput(
                f"{header} must be 1-128 printable ASCII characters without spaces",
                errors=[{"field": header, "rule": "pattern", "message": _META_VALUE.pattern}],
            )
        meta[meta_key] = value
    for k, v in extra.items():
        if v is not None:
            meta[k] = v
    return meta


async def checked_body(request: Request) -> Any:
    """The request body, refused (422) if RFC 8785 could not hash it faithfully.

    FastAPI's own parser admits NaN, Infinity, 1e400 and lone surrogates;
    this gate runs on the raw bytes before any route writes anything.
    """
    raw = await request.body()
    if not raw:
        return None
    try:
        # NaN and Infinity parse to floats here so that validate names where they are
        value = json.loads(raw)
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
