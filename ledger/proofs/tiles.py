"""The tree as C2SP-style tiles of height 8: pure arithmetic, no I/O.

Tile ``(L, N)`` holds the hashes of the perfect subtrees at tree level ``8L``
numbered ``256N .. 256N + width - 1`` (level 0: leaf hashes). A perfect
subtree at level ``8L + r`` (r < 8) is the root of ``2**r`` consecutive hashes
of one tile. A proof names O(log n) perfect subtrees
(``merkle.perfect_nodes``); they live in O(log n) tiles. Full tiles never
change; only the right edge of each tile level grows.

:func:`integrate` is the whole of growing the tree (as tessera's
``Integrate``): given the right edge (each tile level's partial tile) and the
new leaf hashes, it returns the tiles that changed, the new edge and the new
root. Reading and writing tiles is ``ledger.proofs.store``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ledger import errors
from ledger.proofs import merkle

HEIGHT = 8
WIDTH = 1 << HEIGHT
HASH = merkle.HASH_SIZE

TileKey = tuple[int, int]  # (tile level, tile index)


class TreeBehind(errors.LedgerError):
    """A proof or root was asked for a size the tree has not been built to."""

    status, title, type_slug = 422, "Tree size out of range", "tree-size-out-of-range"


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
    """The tiles holding the perfect subtrees that make up ``ranges`` of leaves."""
    out: set[TileKey] = set()
    for a, b in ranges:
        for level, index in merkle.perfect_nodes(a, b):
            out.add(tile_for(level, index)[0])
    return out


def edge_keys(size: int) -> list[tuple[TileKey, int]]:
    """The partial tile of each tile level of a tree of ``size`` leaves, and
    how many hashes it holds (0: that level's last tile is full or absent)."""
    out: list[tuple[TileKey, int]] = []
    level, count = 0, size
    while count:
        out.append(((level, count >> HEIGHT), count & (WIDTH - 1)))
        level, count = level + 1, count >> HEIGHT
    return out


class TileSource:
    """A ``merkle.NodeSource`` over tiles in a dict."""

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
        if width == WIDTH and self.limit:
            if len(self.full) >= self.limit:
                self.full.clear()
            self.full[key] = hashes


def proof_hashes(tiles: dict[TileKey, bytes], ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """The roots of ``ranges`` (an inclusion or consistency proof's) from tiles."""
    src = TileSource(tiles)
    return [merkle.range_hash(src, a, b) for a, b in ranges]


@dataclass(frozen=True, slots=True)
class Integrated:
    size: int
    root: bytes
    edge: tuple[bytes, ...]  # each tile level's partial tile after the leaves
    tiles: dict[TileKey, bytes]  # every tile the leaves changed, as it now is


def integrate(edge: Sequence[bytes], size: int, leaf_hashes: Sequence[bytes]) -> Integrated:
    """Add ``leaf_hashes`` (already ``merkle.leaf_hash``-ed) to the tree of
    ``size`` leaves whose right edge is ``edge`` (level by level, the hashes of
    the partial tile: empty where the level's last tile is full)."""
    tiles = [bytearray(t) for t in edge]
    count = [size >> (HEIGHT * lv) for lv in range(len(tiles))]
    dirty: dict[TileKey, bytes] = {}

    def push(level: int, h: bytes) -> None:
        while True:
            while len(tiles) <= level:
                tiles.append(bytearray())
                count.append(0)
            tile = tiles[level]
            tile += h
            dirty[(level, count[level] >> HEIGHT)] = bytes(tile)
            count[level] += 1
            if len(tile) < WIDTH * HASH:
                return
            h = subtree_from_tile(bytes(tile), 0, WIDTH)  # a full tile: its root goes up
            tiles[level] = bytearray()
            level += 1

    for lh in leaf_hashes:
        push(0, lh)
    new_size = size + len(leaf_hashes)
    edge_tiles: dict[TileKey, bytes] = {}
    n = new_size
    for level, tile in enumerate(tiles):
        if tile:
            edge_tiles[(level, n >> HEIGHT)] = bytes(tile)
        n >>= HEIGHT
    root = merkle.range_hash(TileSource(edge_tiles), 0, new_size) if new_size else merkle.EMPTY_ROOT
    return Integrated(new_size, root, tuple(bytes(t) for t in tiles), dirty)
