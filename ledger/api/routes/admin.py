"""Principals and keys (admin). Each change is an event on principal-<name>."""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Request
from psycopg.rows import class_row

from ledger import keys
from ledger.api.deps import CheckedBody, Ctx, meta_for, require
from ledger.api.models import (
    PROBLEM_RESPONSE,
    KeyCreate,
    KeyCreated,
    KeyRevoke,
    KeyRevoked,
    PrincipalOut,
)
from ledger.db import q
from ledger.events import Principal

router = APIRouter(tags=["admin"])
Admin = Annotated[Principal, Depends(require("admin"))]


async def _state(conn: psycopg.AsyncConnection[Any], name: str) -> keys.PrincipalState | None:
    async with conn.cursor(row_factory=class_row(keys.PrincipalState)) as cur:
        await cur.execute(q("events", "principal_state"), {"name": name})
        return await cur.fetchone()


@router.post(
    "/admin/keys",
    response_model=KeyCreated,
    status_code=201,
    responses={409: {**PROBLEM_RESPONSE, "description": "the principal has an active key"}},
)
async def create_key(
    request: Request, ctx: Ctx, admin: Admin, body: KeyCreate, _raw: CheckedBody
) -> dict[str, Any]:
    async with ctx.pool.connection() as conn:
        current = await _state(conn, body.name)
    key, cmd = keys.plan_create(
        body.name, body.role, meta_for(request, admin), current, replace=body.replace
    )
    recorded = await ctx.appender.append(cmd)
    ctx.auth_cache.clear()
    return {"name": body.name, "role": body.role, "key": key, "position": recorded[0]["position"]}


@router.post(
    "/admin/keys/{name}/revoke",
    response_model=KeyRevoked,
    responses={
        404: {**PROBLEM_RESPONSE, "description": "no principal of that name"},
        409: {**PROBLEM_RESPONSE, "description": "its key was revoked already"},
    },
)
async def revoke_key(
    request: Request,
    ctx: Ctx,
    admin: Admin,
    name: str,
    _raw: CheckedBody,
    body: KeyRevoke | None = None,
) -> dict[str, Any]:
    keys.check_name(name)
    async with ctx.pool.connection() as conn:
        current = await _state(conn, name)
    append = keys.plan_revoke(
        name, current, meta_for(request, admin), body.reason if body else None
    )
    recorded = await ctx.appender.append(append)
    ctx.auth_cache.clear()
    return {"name": name, "position": recorded[0]["position"]}


@router.get("/admin/keys", response_model=list[PrincipalOut])
async def list_keys(ctx: Ctx, _: Admin) -> list[dict[str, Any]]:
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(q("events", "principals_list"))
        rows = await cur.fetchall()
    return [
        {"name": n, "role": r, "created_position": c, "revoked_position": v} for n, r, c, v in rows
    ]
