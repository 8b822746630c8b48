"""The ledger's RFC 9162 tree in PostgreSQL, as C2SP-style tiles of height 8.

Tile ``(L, N)`` holds the hashes of the perfect subtrees at tree level ``8L``
numbered ``256N .. 256N + width - 1`` (level 0: leaf hashes). A perfect
subtree at level ``8L + r`` (r < 8) is the root of ``2**r`` consecutive hashes
of one tile. A proof names O(log n) perfect subtrees (``merkle.perfect_nodes``);
they live in O(log n) tiles, fetched in one query. Full tiles never change and
are cached; only the right edge of each tile level grows.

:class:`Builder` extends the tree from the events table in order (one leader,
``ledger/checkpoints.py``). It keeps each tile level's partial tile in memory
and writes the tiles it changed and the new size in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger import errors, merkle
from ledger.db import q

HEIGHT = 8
WIDTH = 1 << HEIGHT
HASH = merkle.HASH_SIZE
ZERO = bytes(32)

TileKey = tuple[int, int]  # (tile level, tile index)


class TreeBehind(errors.LedgerError):
    """A proof or root was asked for a size the tree has not been built to."""

    status = 422
    title = "Tree size out of range"
    type_slug = "tree-size-out-of-range"


class TreeHalted(errors.LedgerError):
    """The events under the tree changed: the builder refuses to go on."""

    status = 503
    title = "Tree halted"
    type_slug = "tree-halted"


def tile_for(level: int, index: int) -> tuple[TileKey, int, int]:
    """Where a perfect subtree's hashes are: (tile, first hash, how many)."""
    tl, r = divmod(level, HEIGHT)
    base = index << r
    return (tl, base >> HEIGHT), base & (WIDTH - 1), 1 << r


def subtree_from_tile(hashes: bytes, first: int, count: int) -> bytes:
    if (first + count) * HASH > len(hashes):
        raise TreeBehind("the tree has not been built that far")
    hs = [hashes[i * HASH : (i + 1) * HASH] for i in range(first, first + count)]
    return merkle.root_of_leaf_hashes(hs)


def tiles_needed(ranges: Iterable[tuple[int, int]]) -> set[TileKey]:
    out: set[TileKey] = set()
    for a, b in ranges:
        for level, index in merkle.perfect_nodes(a, b):
            out.add(tile_for(level, index)[0])
    return out


class TileSource:
    """A NodeSource over tiles in a dict."""

    def __init__(self, tiles: dict[TileKey, bytes]) -> None:
        self.tiles = tiles

    def __call__(self, level: int, index: int) -> bytes:
        key, first, count = tile_for(level, index)
        hashes = self.tiles.get(key)
        if hashes is None:
            raise TreeBehind(f"tile {key} is not built")
        return subtree_from_tile(hashes, first, count)


class TileCache:
    """Full tiles never change: keep the most recently fetched ones."""

    def __init__(self, limit: int = 2048) -> None:
        self.limit = limit
        self.full: dict[TileKey, bytes] = {}

    def split(self, keys: set[TileKey]) -> tuple[dict[TileKey, bytes], list[TileKey]]:
        have = {k: self.full[k] for k in keys if k in self.full}
        return have, [k for k in keys if k not in have]

    def add(self, key: TileKey, width: int, hashes: bytes) -> None:
        if width == WIDTH:
            if len(self.full) >= self.limit:
                self.full.clear()
            self.full[key] = hashes


def _fetch_query(missing: list[TileKey]) -> tuple[str, dict[str, Any]]:
    return q("proofs", "tiles"), {
        "levels": [k[0] for k in missing],
        "idxs": [k[1] for k in missing],
    }


async def fetch_tiles_async(
    conn: psycopg.AsyncConnection[Any], keys: set[TileKey], cache: TileCache
) -> dict[TileKey, bytes]:
    have, missing = cache.split(keys)
    if missing:
        query, params = _fetch_query(missing)
        cur = await conn.execute(query, params)
        for level, idx, width, hashes in await cur.fetchall():
            have[(level, idx)] = bytes(hashes)
            cache.add((level, idx), width, bytes(hashes))
    return have


def fetch_tiles(
    conn: psycopg.Connection[Any], keys: set[TileKey], cache: TileCache | None = None
) -> dict[TileKey, bytes]:
    cache = cache or TileCache(0)
    have, missing = cache.split(keys)
    if missing:
        query, params = _fetch_query(missing)
        for level, idx, width, hashes in conn.execute(query, params).fetchall():
            have[(level, idx)] = bytes(hashes)
            cache.add((level, idx), width, bytes(hashes))
    return have


@dataclass(frozen=True, slots=True)
class State:
    size: int
    root: bytes
    last_hash: bytes
    halted: str | None


def state_from_row(row: Any) -> State:
    return State(int(row[0]), bytes(row[1]), bytes(row[2]), row[3])


def read_state(conn: psycopg.Connection[Any]) -> State:
    return state_from_row(conn.execute(q("proofs", "state")).fetchone())


async def read_state_async(conn: psycopg.AsyncConnection[Any]) -> State:
    cur = await conn.execute(q("proofs", "state"))
    return state_from_row(await cur.fetchone())


def check_size(size: int, built: int, what: str = "tree_size") -> None:
    if size > built:
        raise TreeBehind(
            f"{what} {size} is beyond the tree, which is built to size {built}; "
            "ask again shortly or use a smaller size",
            tree_size=built,
        )


def root_at(conn: psycopg.Connection[Any], size: int) -> bytes:
    """The root of the first ``size`` leaves, from the stored tiles."""
    if size == 0:
        return merkle.EMPTY_ROOT
    tiles = fetch_tiles(conn, tiles_needed([(0, size)]))
    return merkle.range_hash(TileSource(tiles), 0, size)


class Builder:
    """Extends the stored tree. Not thread-safe; one per leader."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        st = read_state(conn)
        if st.halted:
            raise TreeHalted(st.halted)
        self.size = st.size
        self.root = st.root
        self.last_hash = st.last_hash
        # the partial (rightmost, incomplete) tile of each tile level
        self.edge: list[bytearray] = []
        level, count = 0, self.size
        while count:
            width = count & (WIDTH - 1)
            if width:
                row = conn.execute(
                    q("proofs", "tile"), {"level": level, "idx": count >> HEIGHT}
                ).fetchone()
                if row is None or int(row[0]) < width:
                    raise TreeHalted(f"tile ({level}, {count >> HEIGHT}) is missing or short")
                self.edge.append(bytearray(bytes(row[1])[: width * HASH]))
            else:
                self.edge.append(bytearray())
            level, count = level + 1, count >> HEIGHT
        self.conn.commit()

    def _push(self, level: int, h: bytes, dirty: dict[TileKey, bytes], count: list[int]) -> None:
        while len(self.edge) <= level:
            self.edge.append(bytearray())
            count.append(0)
        tile = self.edge[level]
        tile += h
        idx = count[level] >> HEIGHT
        count[level] += 1
        dirty[(level, idx)] = bytes(tile)
        if len(tile) == WIDTH * HASH:
            parent = subtree_from_tile(bytes(tile), 0, WIDTH)
            self.edge[level] = bytearray()
            self._push(level + 1, parent, dirty, count)

    def extend(self, limit: int = 50_000) -> int:
        """Add up to ``limit`` new events as leaves; returns how many were added.

        Refuses (TreeHalted, recorded in merkle_state) when the next event's
        prev_hash is not the hash of the tree's last leaf: history under the
        tree was rewritten.
        """
        rows = self.conn.execute(
            q("proofs", "leaves_after"), {"after": self.size, "limit": limit}
        ).fetchall()
        self.conn.rollback()
        if not rows:
            return 0
        expected_pos, prev = self.size + 1, self.last_hash
        leaves: list[bytes] = []
        for position, prev_hash, h in rows:
            if position != expected_pos:
                self._halt(f"position {expected_pos} is missing under the tree")
            if bytes(prev_hash) != prev:
                self._halt(
                    f"the event at position {position} does not chain to the tree's leaf "
                    f"{position - 1}: events under the tree were rewritten"
                )
            prev = bytes(h)
            leaves.append(merkle.leaf_hash(prev))
            expected_pos += 1
        count = [self.size >> (HEIGHT * lv) for lv in range(len(self.edge))]
        dirty: dict[TileKey, bytes] = {}
        for lh in leaves:
            self._push(0, lh, dirty, count)
        new_size = self.size + len(leaves)
        tiles = TileSource(self._edge_tiles(new_size))
        new_root = merkle.range_hash(tiles, 0, new_size)
        with self.conn.transaction():
            with self.conn.cursor() as cur:
                cur.executemany(
                    q("proofs", "put_tile"),
                    [
                        {"level": lv, "idx": ix, "width": len(hs) // HASH, "hashes": hs}
                        for (lv, ix), hs in dirty.items()
                    ],
                )
            saved = self.conn.execute(
                q("proofs", "save_state"),
                {"size": new_size, "root": new_root, "last_hash": prev, "old_size": self.size},
            )
            if saved.rowcount != 1:
                raise TreeHalted("another builder moved the tree; this one stops")
        self.size, self.root, self.last_hash = new_size, new_root, prev
        return len(leaves)

    def _edge_tiles(self, size: int) -> dict[TileKey, bytes]:
        out: dict[TileKey, bytes] = {}
        count = size
        for level, tile in enumerate(self.edge):
            if tile:
                out[(level, count >> HEIGHT)] = bytes(tile)
            count >>= HEIGHT
        return out

    def _halt(self, reason: str) -> None:
        self.conn.execute(q("proofs", "halt"), {"reason": reason})
        self.conn.commit()
        raise TreeHalted(reason)


def check_inclusion_args(position: int, size: int) -> None:
    """The request itself, whatever the tree: 1 <= position <= tree_size."""
    if position < 1 or position > size:
        raise errors.InvalidInput(
            f"position {position} is not in a tree of size {size} (positions 1..{size})",
            errors=[
                {"field": "position", "rule": "le_tree_size", "message": "position > tree_size"}
            ],
        )


def _check_inclusion(position: int, size: int, built: int) -> None:
    check_inclusion_args(position, size)
    check_size(size, built)


def check_consistency_args(old: int, new: int) -> None:
    """The request itself, whatever the tree: 0 <= from <= to."""
    if old < 0 or old > new:
        raise errors.InvalidInput(
            f"from must be between 0 and to ({new}); got {old}",
            errors=[{"field": "from", "rule": "le_to", "message": "from > to"}],
        )


def _check_consistency(old: int, new: int, built: int) -> None:
    check_consistency_args(old, new)
    check_size(new, built, "to")


async def inclusion_async(
    conn: psycopg.AsyncConnection[Any], cache: TileCache, position: int, size: int
) -> list[bytes]:
    """Inclusion proof of the event at ``position`` in the tree of ``size`` leaves."""
    _check_inclusion(position, size, (await read_state_async(conn)).size)
    ranges = merkle.inclusion_ranges(position - 1, size)
    tiles = await fetch_tiles_async(conn, tiles_needed(ranges), cache)
    src = TileSource(tiles)
    return [merkle.range_hash(src, a, b) for a, b in ranges]


async def consistency_async(
    conn: psycopg.AsyncConnection[Any], cache: TileCache, old: int, new: int
) -> list[bytes]:
    _check_consistency(old, new, (await read_state_async(conn)).size)
    ranges = merkle.consistency_ranges(old, new)
    tiles = await fetch_tiles_async(conn, tiles_needed(ranges), cache)
    src = TileSource(tiles)
    return [merkle.range_hash(src, a, b) for a, b in ranges]


def inclusion(
    conn: psycopg.Connection[Any], position: int, size: int, cache: TileCache | None = None
) -> list[bytes]:
    _check_inclusion(position, size, read_state(conn).size)
    ranges = merkle.inclusion_ranges(position - 1, size)
    src = TileSource(fetch_tiles(conn, tiles_needed(ranges), cache))
    return [merkle.range_hash(src, a, b) for a, b in ranges]
