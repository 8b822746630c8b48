"""What the incremental verification holds fixed besides the new events:
the anchors it trusts (its watermark, the tree's last leaf, the tree
builder's own verdict) and the principals table, each held to the events.

The service's database role cannot write ``principals`` or
``verify_watermark`` (schema.sql): the first follows the ``PrincipalKey*``
events by a trigger, the second moves only through ``ledger_verified``. A
superuser still can; these checks are how such an edit shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from ledger.db import q
from ledger.proofs import merkle
from ledger.proofs import store as tree_store
from ledger.proofs.tiles import HASH, WIDTH


@dataclass(frozen=True, slots=True)
class Anchor:
    """A position the verification trusts without re-hashing, and why it broke."""

    position: int
    reason: str


def hash_at(conn: psycopg.Connection[Any], position: int) -> str | None:
    row = conn.execute(q("events", "event_hash_at"), {"position": position}).fetchone()
    return bytes(row[0]).hex() if row else None


def broken_anchor(
    conn: psycopg.Connection[Any], wpos: int, whash: str, head_pos: int
) -> Anchor | None:
    """The first anchor that no longer matches the events, or None: the event
    at the watermark must still carry the hash it was verified with, the
    tree's last leaf must still be the event at the tree's size, and the last
    leaf of the latest signed checkpoint (as its tile holds it) must still be
    the leaf of the event at its size."""
    if wpos and hash_at(conn, wpos) != whash:
        return Anchor(wpos, "the event at the verified watermark changed since it was verified")
    tree = tree_store.read_state(conn)
    if tree.size and tree.size <= head_pos and hash_at(conn, tree.size) != tree.last_hash.hex():
        return Anchor(
            tree.size,
            f"the event at position {tree.size} is not the tree's last leaf: "
            "events under the signed tree were rewritten",
        )
    signed = tree_store.latest_checkpoint(conn)
    if signed is not None and 0 < signed.size <= min(head_pos, tree.size):
        leaf = _stored_leaf(conn, signed.size - 1)
        event = hash_at(conn, signed.size)
        if leaf is None or event is None or leaf != merkle.leaf_hash(bytes.fromhex(event)):
            return Anchor(
                signed.size,
                f"the event at position {signed.size} is not the last leaf of the signed "
                f"checkpoint of size {signed.size}: events under it were rewritten",
            )
    return None


def _stored_leaf(conn: psycopg.Connection[Any], index: int) -> bytes | None:
    """The stored leaf hash of leaf ``index`` (its level-0 tile), or None."""
    tile, offset = divmod(index, WIDTH)
    hashes = tree_store.fetch_tiles(conn, [(0, tile)]).get((0, tile), b"")
    leaf = hashes[offset * HASH : (offset + 1) * HASH]
    return leaf if len(leaf) == HASH else None


def tree_halted(conn: psycopg.Connection[Any]) -> str | None:
    """Why the tree builder stopped (``merkle_state.halted``), or None."""
    return tree_store.read_state(conn).halted


def fold_principals(rows: list[tuple[int, bytes]]) -> dict[str, tuple[Any, ...]]:
    """The principals the ``PrincipalKey*`` events make, as the table's rows:
    name -> (role, key_sha256 hex, created_position, revoked_position)."""
    out: dict[str, tuple[Any, ...]] = {}
    for position, canonical in rows:
        event = orjson.loads(canonical)
        data = event.get("data") or {}
        name = str(data.get("name"))
        if event.get("type") == "PrincipalKeyCreated":
            out[name] = (data.get("role"), data.get("key_sha256"), position, None)
        elif name in out:
            out[name] = (*out[name][:3], position)
    return out


def principals_mismatch(conn: psycopg.Connection[Any]) -> str | None:
    """Why the ``principals`` table is not the fold of the ``PrincipalKey*``
    events (the first principal that differs, by name), or None."""
    rows = [(p, bytes(c)) for p, c in conn.execute(q("events", "principal_events")).fetchall()]
    chain = fold_principals(rows)
    table = {
        name: (role, bytes(key).hex(), created, revoked)
        for name, role, key, created, revoked in conn.execute(q("events", "principals_rows"))
    }
    fields = ("role", "key_sha256", "created_position", "revoked_position")
    for name in sorted(set(chain) | set(table)):
        want, have = chain.get(name), table.get(name)
        if want == have:
            continue
        if want is None:
            return f"principals table: {name!r} has a key no PrincipalKeyCreated event made"
        if have is None:
            return f"principals table: {name!r} (created at position {want[2]}) is missing"
        wrong = [
            f"{f} {h!r} (the chain says {w!r})"
            for f, w, h in zip(fields, want, have, strict=True)
            if w != h
        ]
        return f"principals table disagrees with the chain for {name!r}: " + "; ".join(wrong)
    return None
