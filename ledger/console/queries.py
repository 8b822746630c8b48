"""What the console reads from PostgreSQL beyond the API's own reads: the task
search, counts by status, and a time range turned into positions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ledger import store
from ledger.db import q
from ledger.tasks import TaskState, load_state

MAX_POSITION = 2**62


@dataclass(frozen=True, slots=True)
class Filters:
    status: str | None = None
    agent_name: str | None = None
    task_type: str | None = None
    text: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def _recorded_at(conn: psycopg.AsyncConnection[Any], position: int) -> datetime:
    cur = await conn.execute(q("console", "recorded_at"), {"position": position})
    row = await cur.fetchone()
    assert row is not None, position
    value: datetime = row[0]
    return value


async def first_at_or_after(conn: psycopg.AsyncConnection[Any], moment: datetime, head: int) -> int:
    """The first position recorded at or after ``moment`` (``head + 1`` if none).
    ``recorded_at`` never decreases with position (SPEC §1), so a binary search
    over the primary key finds it in about log2(head) index probes."""
    lo, hi = 1, head + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if await _recorded_at(conn, mid) >= moment:
            hi = mid
        else:
            lo = mid + 1
    return lo


async def last_at_or_before(conn: psycopg.AsyncConnection[Any], moment: datetime, head: int) -> int:
    """The last position recorded at or before ``moment`` (0 if none)."""
    lo, hi = 0, head
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if await _recorded_at(conn, mid) <= moment:
            lo = mid
        else:
            hi = mid - 1
    return lo


async def position_range(
    conn: psycopg.AsyncConnection[Any], since: datetime | None, until: datetime | None
) -> tuple[int, int]:
    head, _hash = await store.head_async(conn)
    lo = await first_at_or_after(conn, since, head) if since else 1
    hi = await last_at_or_before(conn, until, head) if until else MAX_POSITION
    return lo, hi


async def search(
    conn: psycopg.AsyncConnection[Any], f: Filters, *, before: int | None, limit: int
) -> list[tuple[TaskState, int]]:
    """Up to ``limit`` tasks submitted before position ``before``, newest first,
    each with its submission position (the next page's key)."""
    lo, hi = await position_range(conn, f.since, f.until)
    if lo > hi:
        return []
    cur = await conn.execute(
        q("console", "task_search"),
        {
            "before": before if before is not None else MAX_POSITION,
            "lo": lo,
            "hi": hi,
            "status": f.status,
            "agent_name": f.agent_name,
            "task_type": f.task_type,
            "text": f.text.lower() if f.text else None,
            "limit": limit,
        },
    )
    return [(load_state(raw), int(pos)) for raw, pos in await cur.fetchall()]


async def status_counts(
    conn: psycopg.AsyncConnection[Any], agent_name: str | None, task_type: str | None
) -> dict[str, int]:
    cur = await conn.execute(
        q("console", "status_counts"), {"agent_name": agent_name, "task_type": task_type}
    )
    return {status: int(n) for status, n in await cur.fetchall()}


async def tasks_in_range(
    conn: psycopg.AsyncConnection[Any], since: datetime | None, until: datetime | None, limit: int
) -> tuple[list[str], int, int]:
    """Ids of the tasks submitted in the range (at most ``limit``), and the range's positions."""
    lo, hi = await position_range(conn, since, until)
    head, _hash = await store.head_async(conn)
    hi = min(hi, head)
    if lo > hi:
        return [], lo, hi
    cur = await conn.execute(q("console", "tasks_in_range"), {"lo": lo, "hi": hi, "limit": limit})
    return [str(r[0]) for r in await cur.fetchall()], lo, hi
