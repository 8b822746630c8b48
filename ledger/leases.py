"""Lease expiry: a crashed worker never strands a task (SPEC §3, TaskRequeued).

Every ``lease_sweep_seconds`` the service reads the running tasks whose lease
lapsed from ``task_leases`` (an indexed table a trigger keeps in step with the
task events, so a tick costs an index probe, not a pass over the ledger) and
requeues each with ``TaskRequeued {reason: "lease_expired"}`` as its own
principal. Each requeue is decided on the folded stream and appended with
the version it was decided on: a renewal that lands first makes it fail and
the decider then refuses it, so several API processes sweeping at once are
harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog

from ledger import clock, commands, errors, tasks
from ledger.db import q
from ledger.events import SERVICE, system_meta

log = structlog.get_logger("ledger.leases")

REASON = "lease_expired"
BATCH = 100


async def sweep(backend: commands.Backend, at: datetime | None = None) -> list[str]:
    """Requeue every task whose lease lapsed by ``at`` (default now); returns their ids."""
    at = at or clock.now()
    async with backend.pool.connection() as conn:
        cur = await conn.execute(q("tasks", "lapsed_leases"), {"now": at, "limit": BATCH})
        rows = await cur.fetchall()
    requeued: list[str] = []
    for stream, _version in rows:
        task_id = tasks.task_id_of(stream)
        try:
            out = await commands.execute(
                backend,
                task_id,
                tasks.Requeue(REASON, clock.format_time(at)),
                SERVICE,
                meta=system_meta("lease-sweep"),
                attempts=2,
            )
        except (errors.Conflict, errors.NotFound, errors.Forbidden) as exc:
            # renewed, finished or requeued by another process meanwhile
            log.info("lease_requeue_skipped", task_id=task_id, reason=exc.detail)
            continue
        requeued.append(task_id)
        log.info(
            "lease_expired_task_requeued",
            task_id=task_id,
            worker=out.state.last_worker,
            position=out.position,
        )
    return requeued


async def start_sweeper(ctx: Any) -> Callable[[], Awaitable[None]]:
    """A SERVICES entry: sweeps every ``settings.lease_sweep_seconds`` (0: off)."""
    interval = float(ctx.settings.lease_sweep_seconds)

    async def noop() -> None:
        return None

    if interval <= 0:
        return noop

    async def loop() -> None:
        while True:
            try:
                await sweep(ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep sweeping; the next tick retries
                log.warning("lease_sweep_failed", error=str(exc))
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name="lease-sweeper")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop
