"""The data keys' table (schema.sql, privacy section): a key per (subject,
task stream), made on first use and wrapped by the KEK; read back by id.
Destroying keys is not done here: the SubjectForgotten and RetentionExpired
events do it, in the transaction that appends them."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from ledger import errors
from ledger.db import q
from ledger.privacy import crypto
from ledger.privacy.reveal import KeyState


class StaleKek(Exception):
    """The KEK this process holds is not the one in force (it was rotated)."""

    def __init__(self, in_force: str) -> None:
        super().__init__(in_force)
        self.in_force = in_force


def new_kid() -> str:
    return "dk-" + uuid.uuid4().hex


async def data_key(
    conn: psycopg.AsyncConnection[Any], kek: crypto.Kek, subject: str, stream: str, task_type: str
) -> tuple[str, bytes]:
    """(key id, data key) for ``subject`` on ``stream``, made now if needed.
    Refused (409) when the subject was forgotten or the stream's key destroyed;
    StaleKek when ``kek`` is not the KEK in force."""
    fresh = crypto.new_data_key()
    cur = await conn.execute(
        q("privacy", "data_key"),
        {
            "subject": subject,
            "stream": stream,
            "task_type": task_type,
            "key_id": new_kid(),
            "kek_id": kek.id,
            "wrapped": kek.wrap(fresh),
        },
    )
    row = await cur.fetchone()
    assert row is not None
    kid, kek_id, wrapped, destroyed, forgotten = row
    if kid is None and forgotten is None:
        raise StaleKek(str(kek_id))
    if forgotten is not None:
        raise errors.Conflict(
            f"subject {subject} was forgotten (position {forgotten}); "
            "no data about it is recorded any more",
            subject=subject,
            forgotten_position=forgotten,
        )
    if wrapped is None:
        raise errors.Conflict(
            f"the protected data of {stream} was erased (position {destroyed}); "
            "nothing more is recorded under its key",
            stream=stream,
            erased_position=destroyed,
        )
    if kek_id != kek.id:
        raise errors.Unavailable(
            f"data key {kid} is wrapped by {kek_id}, and this service holds {kek.id}; "
            "is LEDGER_KEK_FILE the ledger's?"
        )
    return str(kid), kek.unwrap(bytes(wrapped))


async def resolve(
    conn: psycopg.AsyncConnection[Any], kek: crypto.Kek, kids: set[str]
) -> dict[str, KeyState]:
    """The state of each of ``kids`` the table knows (unknown ids are absent)."""
    if not kids:
        return {}
    cur = await conn.execute(q("privacy", "keys_by_id"), {"ids": sorted(kids)})
    out: dict[str, KeyState] = {}
    for kid, kek_id, wrapped, position, by in await cur.fetchall():
        if wrapped is None:
            out[kid] = KeyState(kid, None, position, by)
        elif kek_id != kek.id:
            out[kid] = KeyState(kid, None, unreadable=True)
        else:
            try:
                out[kid] = KeyState(kid, kek.unwrap(bytes(wrapped)))
            except crypto.KeyError_:
                out[kid] = KeyState(kid, None, unreadable=True)
    return out


async def statuses(conn: psycopg.AsyncConnection[Any], kids: set[str]) -> dict[str, dict[str, Any]]:
    """Whether each key is live or erased (and by which event), without the KEK:
    what an audit bundle says of the protected values it carries."""
    if not kids:
        return {}
    cur = await conn.execute(q("privacy", "key_statuses"), {"ids": sorted(kids)})
    out: dict[str, dict[str, Any]] = {}
    for kid, gone, position, by in await cur.fetchall():
        out[kid] = (
            {"status": "erased", "erased_by": by, "erased_at_position": position}
            if gone
            else {"status": "live"}
        )
    return out
