"""Erasure (four eyes), legal holds, the retention plan and the declared
policies (docs/privacy.md). Each change is an event; reads fold or query."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ledger import clock, db, errors
from ledger.api.deps import CheckedBody, Ctx, meta_for, require
from ledger.api.models import PROBLEM_RESPONSE
from ledger.events import Principal
from ledger.privacy import erasure, retention
from ledger.privacy.fields import READERS, REGISTRY

router = APIRouter(tags=["privacy"], responses={s: PROBLEM_RESPONSE for s in (404, 409)})
Officer = Annotated[Principal, Depends(require("officer"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Overseer = Annotated[Principal, Depends(require("officer", "admin", "auditor"))]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _text(description: str) -> Any:
    return Field(min_length=1, max_length=4000, description=description)


class ForgetRequest(_Body):
    subject: str = Field(
        min_length=3, max_length=233, description="'<kind>:<id>', e.g. client:C-1042"
    )
    reason: str = _text("why (e.g. the GDPR art. 17 request's reference)")


class Decision(_Body):
    comment: str = _text("the approver's note")


class HoldRequest(_Body):
    scope: Literal["task", "subject", "task_type"]
    target: str = Field(min_length=1, max_length=233, description="task id, subject or type")
    reason: str = _text("why the hold (e.g. the litigation's reference)")


class ReleaseRequest(_Body):
    reason: str = _text("why the hold ends")


class ErasureOut(BaseModel):
    id: str
    subject: str
    reason: str
    status: Literal["proposed", "forgotten", "rejected"]
    proposed_by: str
    proposed_at: str
    decided_by: str | None
    decided_at: str | None
    keys: list[str] = Field(description="the data keys destroyed (once forgotten)")
    version: int
    position: int


class HoldOut(BaseModel):
    id: str
    scope: str
    target: str
    position: int
    reason: str | None = None
    placed_by: str | None = None
    released_by: str | None = None


@router.post("/privacy/erasures", response_model=ErasureOut, status_code=201)
async def propose_erasure(
    request: Request, ctx: Ctx, officer: Officer, body: ForgetRequest, _raw: CheckedBody
) -> dict[str, Any]:
    """ForgetSubject, step one: an officer proposes; an admin decides."""
    return await erasure.propose(
        ctx, officer, body.subject, body.reason, meta_for(request, officer)
    )


@router.post("/privacy/erasures/{erasure_id}/approve", response_model=ErasureOut)
async def approve_erasure(
    request: Request, ctx: Ctx, admin: Admin, erasure_id: str, body: Decision, _raw: CheckedBody
) -> dict[str, Any]:
    """Step two: an admin other than the proposer approves; the subject's
    data keys are destroyed as SubjectForgotten is appended."""
    return await erasure.decide(
        ctx, admin, _id(erasure_id), True, body.comment, meta_for(request, admin)
    )


@router.post("/privacy/erasures/{erasure_id}/reject", response_model=ErasureOut)
async def reject_erasure(
    request: Request, ctx: Ctx, admin: Admin, erasure_id: str, body: Decision, _raw: CheckedBody
) -> dict[str, Any]:
    return await erasure.decide(
        ctx, admin, _id(erasure_id), False, body.comment, meta_for(request, admin)
    )


@router.get("/privacy/erasures/{erasure_id}", response_model=ErasureOut)
async def get_erasure(ctx: Ctx, _: Overseer, erasure_id: str) -> dict[str, Any]:
    return await erasure.get(ctx, _id(erasure_id))


@router.post("/privacy/holds", response_model=HoldOut, status_code=201)
async def place_hold(
    request: Request, ctx: Ctx, officer: Officer, body: HoldRequest, _raw: CheckedBody
) -> dict[str, Any]:
    """A legal hold: no expiry for the task, subject or task type (and no
    erasure of a held subject) until it is released."""
    return await erasure.place_hold(
        ctx, body.scope, body.target, body.reason, meta_for(request, officer)
    )


@router.post("/privacy/holds/{hold_id}/release", response_model=HoldOut)
async def release_hold(
    request: Request,
    ctx: Ctx,
    officer: Officer,
    hold_id: str,
    body: ReleaseRequest,
    _raw: CheckedBody,
) -> dict[str, Any]:
    return await erasure.release_hold(ctx, _id(hold_id), body.reason, meta_for(request, officer))


@router.get("/privacy/holds", response_model=list[HoldOut])
async def list_holds(ctx: Ctx, _: Overseer) -> list[dict[str, Any]]:
    """The legal holds in force."""
    return await erasure.active_holds(ctx)


@router.get("/privacy/retention/plan")
async def retention_plan(
    ctx: Ctx,
    _: Overseer,
    as_of: Annotated[str | None, Query(description="RFC 3339; default now")] = None,
) -> dict[str, Any]:
    """What the retention rules let expire at ``as_of`` (``ledger retention
    apply`` expires it)."""
    try:
        moment = clock.parse_time(as_of) if as_of else clock.now()
    except ValueError:
        raise errors.InvalidInput(
            "as_of: an RFC 3339 time is expected",
            errors=[{"field": "as_of", "rule": "rfc3339", "message": "not an RFC 3339 time"}],
        ) from None

    def run() -> list[dict[str, Any]]:
        conninfo = db.service_conninfo(ctx.url, ctx.settings.db_role)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return [e.as_dict() for e in retention.plan(conn, moment)]

    return {"as_of": clock.format_time(moment), "expiries": await asyncio.to_thread(run)}


@router.get("/privacy/policies")
async def policies(_: Overseer) -> dict[str, Any]:
    """The task types with protected fields: subjects, fields, retention."""
    return {
        "readers": {k: sorted(v) for k, v in READERS.items()},
        "task_types": {
            name: {
                "subjects": {k: {"prefix": p, "field": f} for k, (p, f) in pol.subjects.items()},
                "fields": [{"field": f.pointer, "class": f.kind} for f in pol.fields],
                "retention_days": pol.retention_days,
                "rule": pol.rule,
            }
            for name, pol in REGISTRY.policies.items()
        },
    }


def _id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise errors.NotFound(f"no such request {value!r}") from None
