"""The stored tree and its checkpoints: ``merkle_state``, ``merkle_tiles``
and ``checkpoints`` in PostgreSQL.

Every read of tiles goes through one query (``tiles``: the rows for a set of
keys), from the proof routes (async) and the builder (sync) alike; the
arithmetic around it is ``ledger.proofs.tiles``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from ledger import errors
from ledger.db import q
from ledger.proofs import merkle
from ledger.proofs.tiles import (
    HASH,
    TileCache,
    TileKey,
    TileSource,
    TreeBehind,
    proof_hashes,
    tiles_needed,
)


class TreeHalted(errors.LedgerError):
    """The events under the tree changed: the builder refuses to go on."""

    status, title, type_slug = 503, "Tree halted", "tree-halted"
    transient = False  # an operator must look: a 503 without Retry-After


@dataclass(frozen=True, slots=True)
class State:
    size: int
    root: bytes
    last_hash: bytes
    halted: str | None


def _state(row: Any) -> State:
    size, root, last_hash, halted = row
    return State(int(size), bytes(root), bytes(last_hash), halted)


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A row of ``checkpoints``: what was signed, by which keys, and the note."""

    size: int
    root: bytes
    key_ids: list[str]
    note: str
    signed_at: datetime
    vkeys: list[str]

    @property
    def origin(self) -> str:
        return self.note.split("\n", 1)[0]


def latest_checkpoint(conn: psycopg.Connection[Any]) -> SignedCheckpoint | None:
    with conn.cursor(row_factory=class_row(SignedCheckpoint)) as cur:
        return cur.execute(q("proofs", "latest_checkpoint")).fetchone()


async def latest_checkpoint_async(conn: psycopg.AsyncConnection[Any]) -> SignedCheckpoint | None:
    async with conn.cursor(row_factory=class_row(SignedCheckpoint)) as cur:
        await cur.execute(q("proofs", "latest_checkpoint"))
        return await cur.fetchone()


async def checkpoints_after(
    conn: psycopg.AsyncConnection[Any], after: int, limit: int
) -> list[SignedCheckpoint]:
    async with conn.cursor(row_factory=class_row(SignedCheckpoint)) as cur:
        await cur.execute(q("proofs", "checkpoints_after"), {"after": after, "limit": limit})
        return await cur.fetchall()


def _tiles_params(keys: list[TileKey]) -> dict[str, Any]:
    return {"levels": [k[0] for k in keys], "idxs": [k[1] for k in keys]}


def read_state(conn: psycopg.Connection[Any]) -> State:
    return _state(conn.execute(q("proofs", "state")).fetchone())


async def read_state_async(conn: psycopg.AsyncConnection[Any]) -> State:
    cur = await conn.execute(q("proofs", "state"))
    return _state(await cur.fetchone())


def fetch_tiles(conn: psycopg.Connection[Any], keys: list[TileKey]) -> dict[TileKey, bytes]:
    rows = conn.execute(q("proofs", "tiles"), _tiles_params(keys)).fetchall()
    return {(level, idx): bytes(hashes) for level, idx, _width, hashes in rows}


async def fetch_tiles_async(
    conn: psycopg.AsyncConnection[Any], keys: set[TileKey], cache: TileCache
) -> dict[TileKey, bytes]:
    have, missing = cache.split(keys)
    if missing:
        cur = await conn.execute(q("proofs", "tiles"), _tiles_params(missing))
        for level, idx, width, hashes in await cur.fetchall():
            have[(level, idx)] = bytes(hashes)
            cache.add((level, idx), width, bytes(hashes))
    return have


def save(
    conn: psycopg.Connection[Any],
    tiles: dict[TileKey, bytes],
    old_size: int,
    new: State,
) -> None:
    """Write the changed tiles and the new size in one transaction; refuses
    (TreeHalted) when another builder moved the tree meanwhile."""
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                q("proofs", "put_tile"),
                [
                    {"level": lv, "idx": ix, "width": len(hs) // HASH, "hashes": hs}
                    for (lv, ix), hs in tiles.items()
                ],
            )
        saved = conn.execute(
            q("proofs", "save_state"),
            {"size": new.size, "root": new.root, "last_hash": new.last_hash, "old_size": old_size},
        )
        if saved.rowcount != 1:
            raise TreeHalted("another builder moved the tree; this one stops")


async def refuse_if_halted(conn: psycopg.AsyncConnection[Any]) -> State:
    """The tree's state, or TreeHalted (503 tree-halted, no Retry-After) once
    its builder halted: every answer that serves the tree asks this first."""
    state = await read_state_async(conn)
    if state.halted:
        raise TreeHalted(
            f"the tree builder halted: {state.halted}; the tree is served no further "
            "(GET /audit/verify names the first bad position)",
            halted=state.halted,
            tree_size=state.size,
        )
    return state


def halt(conn: psycopg.Connection[Any], reason: str) -> TreeHalted:
    """Record why the builder stops (``merkle_state.halted``); the error to raise."""
    conn.execute(q("proofs", "halt"), {"reason": reason})
    conn.commit()
    return TreeHalted(reason)


# -- proofs --------------------------------------------------------------------------


def check_inclusion_args(position: int, size: int) -> None:
    """The request itself, whatever the tree: 1 <= position <= tree_size."""
    if position < 1 or position > size:
        raise errors.InvalidInput(
            f"position {position} is not in a tree of size {size} (positions 1..{size})",
            errors=[
                {"field": "position", "rule": "le_tree_size", "message": "position > tree_size"}
            ],
        )


def check_consistency_args(old: int, new: int) -> None:
    """The request itself, whatever the tree: 0 <= from <= to."""
    if old < 0 or old > new:
        raise errors.InvalidInput(
            f"from must be between 0 and to ({new}); got {old}",
            errors=[{"field": "from", "rule": "le_to", "message": "from > to"}],
        )


def _check_size(size: int, built: int, what: str) -> None:
    if size > built:
        raise TreeBehind(
            f"{what} {size} is beyond the tree, which is built to size {built}; "
            "ask again shortly or use a smaller size",
            tree_size=built,
        )


async def inclusion(
    conn: psycopg.AsyncConnection[Any], cache: TileCache, position: int, size: int
) -> list[bytes]:
    """Inclusion proof of the event at ``position`` in the tree of ``size`` leaves."""
    check_inclusion_args(position, size)
    _check_size(size, (await read_state_async(conn)).size, "tree_size")
    ranges = merkle.inclusion_ranges(position - 1, size)
    return proof_hashes(await fetch_tiles_async(conn, tiles_needed(ranges), cache), ranges)


MAX_NODES = 200_000  # most subtree roots a caller's ``nodes`` memo keeps


async def inclusions(
    conn: psycopg.AsyncConnection[Any],
    cache: TileCache,
    positions: list[int],
    size: int,
    nodes: dict[tuple[int, int], bytes] | None = None,
) -> list[list[bytes]]:
    """Inclusion proofs of the events at ``positions`` in the tree of ``size``
    leaves, every tile they need read in one query (an audit bundle's proofs).

    ``nodes``, when given, memoises the roots of the perfect subtrees the
    proofs are made of, keyed (level, index): such a subtree's leaves are
    events, which never change, so its root never does either."""
    for position in positions:
        check_inclusion_args(position, size)
    _check_size(size, (await read_state_async(conn)).size, "tree_size")
    ranges = [merkle.inclusion_ranges(position - 1, size) for position in positions]
    needed: set[TileKey] = set().union(*(tiles_needed(r) for r in ranges)) if ranges else set()
    tiles = TileSource(await fetch_tiles_async(conn, needed, cache))
    if nodes is None:
        return [proof_hashes(tiles.tiles, r) for r in ranges]
    if len(nodes) > MAX_NODES:
        nodes.clear()

    def source(level: int, index: int) -> bytes:
        root = nodes.get((level, index))
        if root is None:
            root = nodes[(level, index)] = tiles(level, index)
        return root

    return [[merkle.range_hash(source, a, b) for a, b in r] for r in ranges]


async def consistency(
    conn: psycopg.AsyncConnection[Any], cache: TileCache, old: int, new: int
) -> list[bytes]:
    """Consistency proof from the tree of ``old`` leaves to the one of ``new``."""
    check_consistency_args(old, new)
    _check_size(new, (await read_state_async(conn)).size, "to")
    ranges = merkle.consistency_ranges(old, new)
    return proof_hashes(await fetch_tiles_async(conn, tiles_needed(ranges), cache), ranges)
