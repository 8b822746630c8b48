"""KEK rotation (docs/privacy.md §3): every live data key is wrapped again
under a new KEK in one transaction, which also moves the KEK in force; then
the new KEK replaces the old in its file. Copies of wrapped keys that outlive
their destruction (dead row versions, WAL, backups) were wrapped under the
old KEK, and it is gone: rotating after an erasure finishes the shredding."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg

from ledger import errors
from ledger.db import q
from ledger.privacy import crypto


def next_path(path: Path) -> Path:
    return path.with_name(path.name + ".next")


def rotate(conn: psycopg.Connection[Any], path: Path) -> dict[str, Any]:
    """Rotate the KEK in ``path``; returns the old and new ids and how many
    keys were wrapped again. Safe to run again after an interruption: the
    new KEK waits in ``<path>.next`` until the database has moved to it."""
    old = crypto.load_kek(path)
    new, _made = crypto.load_or_create_kek(next_path(path))
    with conn.transaction():
        row = conn.execute(q("privacy", "kek_in_force_for_update")).fetchone()
        in_force = row[0] if row else old.id
        if in_force == new.id:  # an earlier run moved the database, not the file
            count = 0
        elif in_force != old.id:
            raise errors.Conflict(
                f"the KEK in force is {in_force}, and {path} holds {old.id}: "
                "rotate with the ledger's KEK file"
            )
        else:
            rows = conn.execute(q("privacy", "keys_under_kek"), {"kek_id": old.id}).fetchall()
            for key_id, wrapped in rows:
                conn.execute(
                    q("privacy", "rewrap"),
                    {"key_id": key_id, "kek_id": new.id, "wrapped": new.wrap(old.unwrap(wrapped))},
                )
            count = len(rows)
        conn.execute(q("privacy", "register_kek"), {"kek_id": new.id})
        (stray,) = conn.execute(
            q("privacy", "keys_under_other_keks"), {"kek_id": new.id}
        ).fetchone() or (0,)
    os.replace(next_path(path), path)
    return {"previous": old.id, "kek_id": new.id, "rewrapped": count, "unreadable": int(stray)}
