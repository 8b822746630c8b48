"""Response models: what /openapi.json promises, and what FastAPI checks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class EventOut(BaseModel):
    position: int = Field(ge=1)
    stream: str
    version: int = Field(ge=1)
    type: str
    data: dict[str, Any]
    meta: dict[str, Any]
    recorded_at: str
    prev_hash: str
    hash: str


class EventPage(BaseModel):
    items: list[EventOut]
    next_after: int | None = Field(
        description=(
            "pass as ?after= for the next page: the last position returned, or the "
            "given after when no event follows it yet"
        )
    )


class Head(BaseModel):
    position: int
    hash: str


class VerifyResult(BaseModel):
    ok: bool
    verified_from: int | None
    verified_to: int | None
    head_hash: str | None
    first_bad_position: int | None
    reason: str | None
    checked: int = Field(
        0, description="events hashed by this call (the rest were verified before)"
    )
    rechecked: int = Field(
        0,
        description="events verified before that this call re-hashed: each incremental "
        "call re-checks the next slice of the verified range, in turn",
    )


class WitnessHealth(BaseModel):
    witness: str = Field(description="its verifier key's name")
    url: str
    reachable: bool
    cosigned_size: int | None = Field(description="the size it last cosigned")
    error: str | None
    checked_at: str


class Health(BaseModel):
    status: str = Field(description="ok, unavailable (the database) or halted (the tree)")
    database: str
    head_position: int
    appended_since_start: int
    witnesses: list[WitnessHealth] | None = Field(
        default=None, description="each witness configured (LEDGER_WITNESSES), as last found"
    )
    tree: str | None = Field(
        None, description="ok, or halted: events under the signed tree were rewritten"
    )
    tree_size: int | None = None
    reason: str | None = Field(None, description="why the tree builder halted")


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    role: str = Field(pattern=r"^(agent|officer|auditor|admin)$")
    replace: bool = Field(
        default=False,
        description="the principal exists: issue a new key (its old key stops working)",
    )


class KeyCreated(BaseModel):
    name: str
    role: str
    key: str = Field(description="shown once; only its SHA-256 is stored")
    position: int


class KeyRevoke(BaseModel):
    reason: str | None = Field(default=None, max_length=1000)


class KeyRevoked(BaseModel):
    name: str
    position: int


class PrincipalOut(BaseModel):
    name: str
    role: str
    created_position: int
    revoked_position: int | None


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


# An error answer as OpenAPI describes it (responses={status: PROBLEM_RESPONSE}).
PROBLEM_RESPONSE: dict[str, Any] = {"model": Problem, "content": {"application/problem+json": {}}}
