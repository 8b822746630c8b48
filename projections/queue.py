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

PER_ROUND = 4


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
    async with slots:
        while len(tried) < candidates:
            async with backend.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    q("projections", "queue_candidates"),
                    {
                        "types": task_types or None,
                        "tried": tried,
                        "limit": min(PER_ROUND, candidates - len(tried)),
                    },
                )
                rows = await cur.fetchall()
                if not rows:
                    return None
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
    raise errors.Unavailable(
        f"the {len(tried)} queued tasks this claim tried were all taken by other workers "
        "meanwhile; retry",
        retry_after=1,
    )
