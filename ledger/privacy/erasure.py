"""Erasure with four eyes, and legal holds (docs/privacy.md §5–§6).

``ForgetSubject`` is proposed by an officer (``ForgetSubjectProposed`` on a
stream ``erasure-<id>``) and approved by an admin who is not the proposer:
``SubjectForgotten`` is appended, and the trigger it fires destroys every
data key of the subject in the same transaction. No event is changed: the
ciphertext stays where it was hashed, and every proof still holds.

A legal hold (``LegalHoldPlaced`` on ``hold-<id>``, by an officer, with a
reason) keeps a task, a subject or a task type from expiring, and a held
subject from being forgotten, until ``LegalHoldReleased``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from ledger import clock, errors, store
from ledger.db import q
from ledger.events import Envelope, NewEvent, Principal, StreamAppend
from ledger.privacy.fields import SUBJECT_RE

ERASURE_PREFIX = "erasure-"
HOLD_PREFIX = "hold-"
PROPOSED, FORGOTTEN, REJECTED = "proposed", "forgotten", "rejected"
SCOPES = ("task", "subject", "task_type")
_TASK_TYPE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def _bad(field: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(
        f"{field}: {message}", errors=[{"field": field, "rule": "format", "message": message}]
    )


def check_subject(subject: str) -> str:
    if not SUBJECT_RE.match(subject):
        raise _bad("subject", "a subject is '<kind>:<id>', e.g. client:C-1042")
    return subject


def check_target(scope: str, target: str) -> str:
    if scope == "task":
        try:
            return str(uuid.UUID(target))
        except ValueError:
            raise _bad("target", "a task's id (a UUID)") from None
    if scope == "subject":
        return check_subject(target)
    if scope == "task_type":
        if not _TASK_TYPE_RE.match(target):
            raise _bad("target", "a task type")
        return target
    raise _bad("scope", f"one of {', '.join(SCOPES)}")


def fold_erasure(events: list[Envelope]) -> dict[str, Any] | None:
    """An erasure request's state from its stream (None when there is none)."""
    state: dict[str, Any] | None = None
    for e in events:
        d, who = e["data"], e["meta"].get("actor")
        if e["type"] == "ForgetSubjectProposed":
            state = {
                "id": e["stream"][len(ERASURE_PREFIX) :],
                "subject": d["subject"],
                "reason": d["reason"],
                "status": PROPOSED,
                "proposed_by": who,
                "proposed_at": e["recorded_at"],
                "decided_by": None,
                "decided_at": None,
                "keys": [],
            }
        elif state is not None and e["type"] in ("SubjectForgotten", "ForgetSubjectRejected"):
            state["status"] = FORGOTTEN if e["type"] == "SubjectForgotten" else REJECTED
            state["decided_by"], state["decided_at"] = who, e["recorded_at"]
            state["keys"] = d.get("keys", [])
        if state is not None:
            state["version"], state["position"] = e["version"], e["position"]
    return state


async def _erasure(ctx: Any, erasure_id: str) -> dict[str, Any]:
    async with ctx.pool.connection() as conn:
        events = await store.read_stream(conn, ERASURE_PREFIX + erasure_id)
    state = fold_erasure(events)
    if state is None:
        raise errors.NotFound(f"no erasure request {erasure_id}")
    return state


async def _forgotten_at(ctx: Any, subject: str) -> int | None:
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(q("privacy", "forgotten"), {"subject": subject})
        row = await cur.fetchone()
    return int(row[0]) if row else None


async def propose(
    ctx: Any, officer: Principal, subject: str, reason: str, meta: dict[str, Any]
) -> dict[str, Any]:
    """An officer asks for a subject to be forgotten."""
    check_subject(subject)
    if (at := await _forgotten_at(ctx, subject)) is not None:
        raise errors.Conflict(f"subject {subject} was forgotten already (position {at})")
    erasure_id = str(clock.uuid7())
    data = {"subject": subject, "reason": reason}
    await ctx.appender.append(
        StreamAppend(
            ERASURE_PREFIX + erasure_id,
            [NewEvent("ForgetSubjectProposed", data)],
            meta,
            expected_version=0,
        )
    )
    return await _erasure(ctx, erasure_id)


async def decide(
    ctx: Any,
    admin: Principal,
    erasure_id: str,
    approve: bool,
    comment: str,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """An admin, not the proposer, approves (the subject's keys are destroyed
    with the SubjectForgotten event) or rejects a proposed erasure."""
    state = await _erasure(ctx, erasure_id)
    if state["status"] != PROPOSED:
        raise errors.IllegalTransition(
            f"erasure {erasure_id} is {state['status']}: it cannot be decided again",
            erasure_status=state["status"],
        )
    if admin.name == state["proposed_by"]:
        raise errors.Forbidden(
            f"four eyes: {admin.name} proposed this erasure and cannot also decide it",
            actor=admin.name,
        )
    subject = state["subject"]
    base = {"subject": subject, "requested_by": state["proposed_by"], "comment": comment}
    if not approve:
        event = NewEvent("ForgetSubjectRejected", base)
    else:
        if held := await _holds_on(ctx, subject):
            raise _held(subject, held)
        async with ctx.pool.connection() as conn:
            cur = await conn.execute(q("privacy", "live_keys_of_subject"), {"subject": subject})
            keys = await cur.fetchall()
        event = NewEvent(
            "SubjectForgotten",
            {
                **base,
                "reason": state["reason"],
                "keys": [k for k, _s in keys],
                "streams": sorted({s for _k, s in keys}),
            },
        )
    try:
        await ctx.appender.append(
            StreamAppend(
                ERASURE_PREFIX + erasure_id, [event], meta, expected_version=state["version"]
            )
        )
    except errors.InvalidInput:
        # the database refuses to forget a held subject: a hold placed meanwhile
        held = await _holds_on(ctx, subject) if approve else []
        if held:
            raise _held(subject, held) from None
        raise
    return await _erasure(ctx, erasure_id)


async def _holds_on(ctx: Any, subject: str) -> list[str]:
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(
            q("privacy", "holds_on"), {"scope": "subject", "targets": [subject]}
        )
        return [r[0] for r in await cur.fetchall()]


def _held(subject: str, held: list[str]) -> errors.Conflict:
    return errors.Conflict(
        f"subject {subject} is under legal hold ({', '.join(held)}): "
        "it cannot be forgotten until the hold is released",
        holds=held,
    )


async def get(ctx: Any, erasure_id: str) -> dict[str, Any]:
    return await _erasure(ctx, erasure_id)


# -- legal holds ---------------------------------------------------------------------


async def place_hold(
    ctx: Any, scope: str, target: str, reason: str, meta: dict[str, Any]
) -> dict[str, Any]:
    target = check_target(scope, target)
    hold_id = str(clock.uuid7())
    data = {"scope": scope, "target": target, "reason": reason}
    (rec,) = await ctx.appender.append(
        StreamAppend(
            HOLD_PREFIX + hold_id, [NewEvent("LegalHoldPlaced", data)], meta, expected_version=0
        )
    )
    return {"id": hold_id, **data, "placed_by": meta["actor"], "position": rec["position"]}


async def release_hold(ctx: Any, hold_id: str, reason: str, meta: dict[str, Any]) -> dict[str, Any]:
    async with ctx.pool.connection() as conn:
        events = await store.read_stream(conn, HOLD_PREFIX + hold_id)
    if not events:
        raise errors.NotFound(f"no legal hold {hold_id}")
    if events[-1]["type"] != "LegalHoldPlaced":
        raise errors.IllegalTransition(f"legal hold {hold_id} was released already")
    (rec,) = await ctx.appender.append(
        StreamAppend(
            HOLD_PREFIX + hold_id,
            [NewEvent("LegalHoldReleased", {"reason": reason})],
            meta,
            expected_version=events[-1]["version"],
        )
    )
    return {
        "id": hold_id,
        **events[0]["data"],
        "released_by": meta["actor"],
        "position": rec["position"],
    }


async def active_holds(ctx: Any) -> list[dict[str, Any]]:
    async with ctx.pool.connection() as conn:
        cur = await conn.execute(q("privacy", "active_holds"))
        rows = await cur.fetchall()
    return [
        {"id": s[len(HOLD_PREFIX) :], "scope": sc, "target": t, "position": p}
        for s, sc, t, p in rows
    ]
