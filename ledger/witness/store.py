"""The log's record of its witnesses in PostgreSQL: the cosignatures each
returned (``checkpoint_cosignatures``) and how each was last found
(``witness_status``). The submitter writes them; the routes read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ledger.db import q
from ledger.proofs import cosignature
from ledger.proofs.store import SignedCheckpoint


@dataclass(frozen=True, slots=True)
class WitnessStatus:
    witness: str
    url: str
    size: int | None
    ok: bool
    error: str | None
    checked_at: datetime


async def cosigned(conn: psycopg.AsyncConnection[Any], cp: SignedCheckpoint) -> str:
    """The checkpoint's note with every cosignature stored for it appended."""
    cur = await conn.execute(q("log", "cosignatures"), {"size": cp.size})
    return cosignature.with_lines(cp.note, [line for (line,) in await cur.fetchall()])


async def latest_with_quorum(
    conn: psycopg.AsyncConnection[Any], quorum: int
) -> SignedCheckpoint | None:
    cur = await conn.execute(q("log", "latest_cosigned"), {"quorum": quorum})
    row = await cur.fetchone()
    return SignedCheckpoint(*row) if row else None


async def statuses(conn: psycopg.AsyncConnection[Any]) -> list[WitnessStatus]:
    cur = await conn.execute(q("log", "witness_statuses"))
    return [WitnessStatus(*row) for row in await cur.fetchall()]
