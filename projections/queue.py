"""The work queue: ``POST /tasks/claim`` on the task view.

Candidates are the view's queued tasks of the types asked, highest priority
first, then the oldest, taken ``FOR UPDATE SKIP LOCKED`` so concurrent claims
spread over different tasks instead of queueing behind one row. The claim
itself is a TaskClaimed event appended through ``ledger.commands.execute``
with the version the view showed as the expected version: when the view was
stale (the task was claimed, cancelled, anything, since the view row was
written) the append is refused and the next candidate is tried. So a lagging
view costs a retry, never a task handed to two workers.

Each claim holds one pooled connection (the row locks) while the command
layer borrows a second; ``claim_slots`` (half the pool) bounds the claims in
flight so they can never exhaust the pool waiting on each other.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from ledger import commands, errors, tasks
from ledger.db import q

log = structlog.get_logger("projections.queue")

# One candidate locked at a time: a claim never holds rows it is not trying,
# so concurrent claims each find one to take.
PER_ROUND = 1
# How long a claim waits, in all, for rows other claims hold to be released
# before it answers 503 (it never answers 204 while the queue is only busy).
BUSY_WAIT_SECONDS = 2.0


async def claim_next(
    backend: commands.Backend,
    principal: tasks.Actor,
    task_types: list[str] | None,
    lease_seconds: float,
    *,
    meta: dict[str, Any],
    idempotency: tuple[str, Any] | None,
    slots: asyncio.Semaphore,
    candidates: int = 20,
) -> commands.Outcome | None:
    """Claim the next queued task; None when the view shows none queued.

    Raises ``errors.Unavailable`` (503, retry) when ``candidates`` queued
    tasks were all taken by others while this claim tried them."""
    if idempotency is not None:
        prior = await commands.prior_outcome(backend.pool, principal.name, idempotency)
        if prior is not None:
            return prior
    tried: list[str] = []
    busy_until: float | None = None
    loop = asyncio.get_running_loop()
    async with slots:
        while len(tried) < candidates:
            params = {"types": task_types or None, "tried": tried}
            async with backend.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    q("projections", "queue_candidates"),
                    {**params, "limit": min(PER_ROUND, candidates - len(tried))},
                )
                rows = await cur.fetchall()
                if not rows:
                    cur = await conn.execute(q("projections", "queue_any_left"), params)
                    left = await cur.fetchone()
                    if not (left and left[0]):
                        return None  # nothing of these types is queued: 204
                for task_id, version in rows:
                    tried.append(task_id)
                    try:
                        return await commands.execute(
                            backend,
                            task_id,
                            commands.claim(lease_seconds),
                            principal,
                            meta=meta,
                            expected_version=int(version),
                            idempotency=idempotency,
                            attempts=1,
                        )
                    except (errors.PreconditionFailed, errors.IllegalTransition) as exc:
                        log.info("queue_candidate_taken", task_id=task_id, reason=exc.detail)
            if not rows:
                # Queued tasks remain, but other claims in flight hold them:
                # the queue is busy, not empty. Wait (bounded) for their rows.
                now = loop.time()
                busy_until = busy_until or now + BUSY_WAIT_SECONDS
                if now >= busy_until:
                    break
                await asyncio.sleep(0.005)
    raise errors.Unavailable(
        f"queued tasks remain, but the {len(tried)} this claim tried were taken by other "
        "workers meanwhile and the rest were held by claims in flight; retry",
        retry_after=1,
    )
