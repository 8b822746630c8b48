"""The tree builder: extends the stored tree from the events table, in order.

One leader runs it (``ledger.proofs.checkpointer``). It keeps each tile
level's partial tile in memory, reads the next events' hashes, checks each
links to the tree's last leaf with the chain verifier's own rule
(``audit.chain.link_error``), grows the tree with the pure
``tiles.integrate`` and writes what changed and the new size in one
transaction (``store.save``).
"""

from __future__ import annotations

from typing import Any

import psycopg

from ledger.audit.chain import link_error
from ledger.db import q
from ledger.proofs import merkle, store
from ledger.proofs.store import State, TreeHalted
from ledger.proofs.tiles import HASH, edge_keys, integrate

EXTEND_CHUNK = 50_000


class Builder:
    """Extends the stored tree. Not thread-safe; one per leader."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        st = store.read_state(conn)
        if st.halted:
            raise TreeHalted(st.halted)
        self.state = st
        wanted = edge_keys(st.size)
        stored = store.fetch_tiles(conn, [key for key, width in wanted if width])
        self.edge: list[bytes] = []
        for key, width in wanted:
            hashes = stored.get(key, b"")
            if len(hashes) < width * HASH:
                raise TreeHalted(f"tile {key} is missing or short")
            self.edge.append(hashes[: width * HASH])
        conn.commit()

    @property
    def size(self) -> int:
        return self.state.size

    @property
    def root(self) -> bytes:
        return self.state.root

    def extend(self, limit: int = EXTEND_CHUNK) -> int:
        """Add up to ``limit`` new events as leaves; returns how many were added.

        Refuses (TreeHalted, recorded in merkle_state) when the next event does
        not follow the tree's last leaf: history under the tree was rewritten.
        """
        rows = self.conn.execute(
            q("proofs", "leaves_after"), {"after": self.size, "limit": limit}
        ).fetchall()
        self.conn.rollback()
        if not rows:
            return 0
        expected, prev = self.size + 1, self.state.last_hash
        leaves: list[bytes] = []
        for position, prev_hash, h in rows:
            if position != expected or bytes(prev_hash) != prev:
                why = link_error(
                    position, bytes(prev_hash).hex(), expected, prev.hex(), first=False
                )
                raise store.halt(
                    self.conn,
                    f"the event at position {position} does not extend the tree of {expected - 1} "
                    f"leaves ({why}): events under the tree were rewritten",
                )
            prev = bytes(h)
            leaves.append(merkle.leaf_hash(prev))
            expected += 1
        grown = integrate(self.edge, self.size, leaves)
        new = State(grown.size, grown.root, prev, None)
        store.save(self.conn, grown.tiles, self.size, new)
        self.state, self.edge = new, list(grown.edge)
        return len(leaves)
