"""The read side of the projections: what the API reads from the views the
``projections`` package writes, and the names both sides agree on.

The views are derived data kept by the projection runner (its own program,
``python -m projections``); this module only reads their tables and
checkpoints, so ``ledger`` never imports ``projections``: the dependency
runs one way, ``projections`` -> ``ledger``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import class_row

from ledger.clock import format_time
from ledger.db import q
from ledger.tasks import TaskState, load_state

TASKS = "tasks"  # the task view: every task's current state
TASK_COUNTS = "task_counts"  # tasks by status, per agent and per task type
NAMES = (TASK_COUNTS, TASKS)
LOCK_CLASS = 0x1ED6E7  # advisory lock (class, crc32 of the name): one leader per projection
REBUILD_CLASS = 0x1ED6E8  # one rebuild per projection at a time
CHANNEL = "ledger_projections"  # the runner NOTIFYs '<name>:<position>' after each batch


def lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A ``projection_checkpoints`` row with the head and lag (the ``status`` query)."""

    name: str
    position: int
    hash: bytes
    applied: int
    updated_at: datetime | None
    holder: str | None
    rebuilt_at: datetime | None
    head: int
    lag_seconds: float | None

    def status(self, held: set[int]) -> dict[str, Any]:
        """How ``GET /projections`` and ``ledger projections list`` show it."""
        return {
            "name": self.name,
            "position": self.position,
            "hash": bytes(self.hash).hex(),
            "applied": self.applied,
            "lag_events": max(0, self.head - self.position),
            "lag_seconds": round(self.lag_seconds, 3) if self.lag_seconds is not None else 0.0,
            "leading": lock_key(self.name) in held,
            "holder": self.holder,
            "updated_at": format_time(self.updated_at) if self.updated_at else None,
            "rebuilt_at": format_time(self.rebuilt_at) if self.rebuilt_at else None,
        }


def checkpoints(conn: psycopg.Connection[Any]) -> tuple[list[Checkpoint], set[int]]:
    """Every projection's checkpoint, and the lock keys runners hold now."""
    with conn.cursor(row_factory=class_row(Checkpoint)) as cur:
        rows = cur.execute(q("projections", "status")).fetchall()
    held = {int(k) for (k,) in conn.execute(q("projections", "held_locks"), {"class": LOCK_CLASS})}
    return rows, held


async def checkpoints_async(
    conn: psycopg.AsyncConnection[Any],
) -> tuple[list[Checkpoint], set[int]]:
    async with conn.cursor(row_factory=class_row(Checkpoint)) as cur:
        await cur.execute(q("projections", "status"))
        rows = await cur.fetchall()
    cur2 = await conn.execute(q("projections", "held_locks"), {"class": LOCK_CLASS})
    return rows, {int(k) for (k,) in await cur2.fetchall()}


async def position(conn: psycopg.AsyncConnection[Any], name: str) -> int:
    """How far projection ``name`` has folded the ledger (0 before its first batch)."""
    cur = await conn.execute(q("projections", "checkpoint"), {"name": name})
    row = await cur.fetchone()
    if row is None:
        return 0
    folded, _hash, _applied = row
    return int(folded)


# -- the task view --------------------------------------------------------------------


async def get_task(conn: psycopg.AsyncConnection[Any], task_id: str) -> TaskState | None:
    cur = await conn.execute(q("projections", "task_get"), {"id": task_id})
    row = await cur.fetchone()
    return load_state(row[0]) if row else None


class PagedTask(NamedTuple):
    state: TaskState
    created_position: int  # the submission position: the page's key


async def task_page(
    conn: psycopg.AsyncConnection[Any],
    *,
    after: int,
    limit: int,
    status: str | None,
    agent_name: str | None,
    task_type: str | None,
) -> list[PagedTask]:
    """Up to ``limit`` tasks submitted after position ``after`` matching the
    filters, each with its submission position (the page's key)."""
    cur = await conn.execute(
        q("projections", "task_list"),
        {
            "after": after,
            "limit": limit,
            "status": status,
            "agent_name": agent_name,
            "task_type": task_type,
        },
    )
    return [PagedTask(load_state(raw), int(pos)) for raw, pos in await cur.fetchall()]


# -- the counts -----------------------------------------------------------------------


async def task_stats(conn: psycopg.AsyncConnection[Any]) -> dict[str, dict[str, dict[str, int]]]:
    """{"agent": {name: {status: n}}, "task_type": {type: {status: n}}}"""
    out: dict[str, dict[str, dict[str, int]]] = {"agent": {}, "task_type": {}}
    cur = await conn.execute(q("projections", "counts_all"))
    for dim, key, status, n in await cur.fetchall():
        out[dim].setdefault(key, {})[status] = int(n)
    return out
