"""The API side of the projections: how far each view is, and waiting for it.

:class:`Watcher` (a SERVICES entry) LISTENs on ``ledger_projections``, where
the runner announces ``<name>:<position>`` with every batch it commits, so a
request waiting for ``min_position`` wakes as soon as the view has it (and
re-reads the checkpoint every ``POLL`` seconds in case a notification was
missed).

What the watcher heard is a hint for when to look, never the answer: the
runner commits its batches without waiting for the WAL flush, so a crash of
the server can take its last batches back, checkpoint and rows together,
after their NOTIFY reached the watcher. :func:`read_view` therefore reads the
checkpoint on the connection it then reads the view with, and answers only
when that checkpoint has the position asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from ledger import db, errors, store, views

log = structlog.get_logger("ledger.watch")

POLL = 0.25
T = TypeVar("T")


class ProjectionBehind(errors.Unavailable):
    """The view had not folded the position asked for when the wait ran out."""

    title, type_slug = "View not caught up", "projection-behind"


class Watcher:
    def __init__(self, pool: AsyncConnectionPool, url: str, role: str | None) -> None:
        self.pool = pool
        self.conninfo = db.service_conninfo(url, role, application_name="ledger-api-watch")
        self.positions: dict[str, int] = {}
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    async def position(self, name: str) -> int:
        """The projection's checkpoint, read now (0 before its first batch)."""
        async with self.pool.connection() as conn:
            pos = await views.position(conn, name)
        self._seen(name, pos)
        return pos

    def _seen(self, name: str, pos: int) -> None:
        if pos > self.positions.get(name, -1):
            self.positions[name] = pos

    def correct(self, name: str, pos: int) -> None:
        """The view was found at ``pos``, below what was heard: a crash took its
        last batches back. Believe the checkpoint from now on."""
        if pos < self.positions.get(name, -1):
            log.warning(
                "projection_behind_what_was_announced",
                projection=name,
                announced=self.positions[name],
                position=pos,
            )
            self.positions[name] = pos

    async def wait_for(self, name: str, target: int, timeout: float) -> int:
        """Wait until projection ``name`` has folded ``target``, at most ``timeout``
        seconds; returns the position it is at (below ``target`` if it ran out)."""
        pos = self.positions.get(name, -1)
        if pos < target:
            pos = await self.position(name)
        deadline = time.monotonic() + timeout
        while pos < target:
            left = deadline - time.monotonic()
            if left <= 0:
                return pos
            notified = False
            async with self.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), min(left, POLL))
                    notified = True
            pos = max(pos, self.positions.get(name, 0))
            if not notified and pos < target:
                pos = await self.position(name)  # a notification may have been missed
        return pos

    async def run(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {views.CHANNEL}")
                    # Positions seen before this connection may be gone (a
                    # server crash loses the views' unsynced last batches with
                    # their checkpoints): read them afresh from here on.
                    self.positions.clear()
                    async for n in conn.notifies():
                        name, _, pos = n.payload.rpartition(":")
                        if pos.isdigit():
                            self._seen(name, int(pos))
                            async with self.changed:
                                self.changed.notify_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("projection_watch_lost", error=str(exc))
                await asyncio.sleep(1.0)


async def read_view(
    ctx: Any,
    name: str,
    min_position: int | None,
    read: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
) -> tuple[int, T]:
    """``read(conn)`` of view ``name`` once it has folded ``min_position``
    (waiting at most ``max_wait_seconds``, else ProjectionBehind, 503); returns
    the view's position and what ``read`` returned.

    With ``min_position`` the checkpoint is read on the connection ``read``
    then uses, just before it: ``read`` sees that checkpoint's batches or
    later ones (a crash in between breaks the connection, so the read fails
    rather than seeing less). A checkpoint below what the watcher heard makes
    the watcher believe the checkpoint and the wait go on."""
    if min_position is None:
        pos = await ensure(ctx, name, None)
        async with ctx.pool.connection() as conn:
            return pos, await read(conn)
    watcher: Watcher = ctx.extras["projection_watcher"]
    deadline = time.monotonic() + float(ctx.settings.max_wait_seconds)
    while True:
        await ensure(ctx, name, min_position, max(0.0, deadline - time.monotonic()))
        async with ctx.pool.connection() as conn:
            folded = await views.position(conn, name)
            if folded >= min_position:
                return folded, await read(conn)
        watcher.correct(name, folded)
        if time.monotonic() >= deadline:
            raise _behind(name, folded, min_position, float(ctx.settings.max_wait_seconds))


def _behind(name: str, pos: int, min_position: int, wait: float) -> ProjectionBehind:
    return ProjectionBehind(
        f"the {name} view has folded the ledger up to position {pos}, not yet "
        f"{min_position}, after waiting {wait:g} s; retry shortly (GET /projections "
        "shows its lag)",
        projection=name,
        position=pos,
        min_position=min_position,
        retry_after=1,
    )


async def ensure(ctx: Any, name: str, min_position: int | None, wait: float | None = None) -> int:
    """Wait (at most ``wait``, default ``max_wait_seconds``) until the watcher
    has seen ``name`` fold ``min_position``.

    Returns the position the watcher believes the view is at; raises
    ProjectionBehind (503) when the wait ran out, saying where the view is.
    The belief may be ahead of the view after a crash of the server: to read
    the view as of ``min_position``, use :func:`read_view`."""
    watcher: Watcher = ctx.extras["projection_watcher"]
    if min_position is None:
        # a lower bound is enough here: the last position announced, else read it
        known = watcher.positions.get(name)
        return known if known is not None else await watcher.position(name)
    full = float(ctx.settings.max_wait_seconds)
    wait = full if wait is None else wait
    pos = watcher.positions.get(name, -1)
    if pos < min_position:
        async with ctx.pool.connection() as conn:
            head, _ = await store.head_async(conn)
        if min_position > head:
            # no command has answered with a position the ledger has not reached:
            # waiting could not help, so say so now
            raise errors.InvalidInput(
                f"min_position {min_position} is beyond the ledger's head ({head}); pass the "
                "position a command answered with",
                errors=[{"field": "min_position", "rule": "max", "message": f"at most {head}"}],
            )
    pos = await watcher.wait_for(name, min_position, wait)
    if pos < min_position:
        raise _behind(name, pos, min_position, full)
    return pos


async def start_watcher(ctx: Any) -> Callable[[], Awaitable[None]]:
    """SERVICES entry: the watcher."""
    watcher = Watcher(ctx.pool, ctx.url, ctx.settings.db_role)
    watcher.task = asyncio.create_task(watcher.run(), name="projection-watch")
    ctx.extras["projection_watcher"] = watcher
    ctx.extras["claim_slots"] = asyncio.Semaphore(max(1, int(ctx.settings.pool_max) // 2))

    async def stop() -> None:
        if watcher.task is not None:
            watcher.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher.task

    return stop
