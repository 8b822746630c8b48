"""The audit bundle of one task: its events, an inclusion proof for each, the
signed checkpoint they are proven against and the verifier key, in one JSON
file that ``ledger verify FILE`` checks offline (``ledger.audit.offline``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from ledger import errors, store, tasks
from ledger.audit.offline import BUNDLE_FORMAT
from ledger.db import q
from ledger.privacy import fields, keystore
from ledger.proofs import store as tree_store
from ledger.proofs.tiles import TileCache
from ledger.witness import store as witness_store


async def build(
    conn: psycopg.AsyncConnection[Any],
    task_id: str,
    *,
    wait: float = 10.0,
    nodes: dict[tuple[int, int], bytes] | None = None,
) -> dict[str, Any]:
    """The bundle for ``task_id`` (``conn`` in autocommit). Waits up to ``wait``
    seconds for a checkpoint covering the task's last event, asking the
    checkpointer for one; raises NotFound or Unavailable. ``nodes``: a memo
    of subtree roots kept between calls (``proofs.store.inclusions``)."""
    stream = tasks.stream_for(task_id)
    events = await store.read_stream(conn, stream)
    if not events:
        raise errors.NotFound(f"no events on stream {stream}")
    last = max(e["position"] for e in events)
    deadline = time.monotonic() + wait
    while True:
        cp = await tree_store.latest_checkpoint_async(conn)
        if cp is not None and cp.size >= last:
            break
        if time.monotonic() >= deadline:
            raise errors.Unavailable(
                f"no signed checkpoint covers position {last} yet; is the service running?",
                retry_after=1,
            )
        await conn.execute(q("proofs", "want_checkpoint"))
        await asyncio.sleep(0.1)
    paths = await tree_store.inclusions(
        conn, TileCache(), [e["position"] for e in events], cp.size, nodes
    )
    proofs = [
        {
            "leaf_index": e["position"] - 1,
            "tree_size": cp.size,
            "hashes": [h.hex() for h in path],
        }
        for e, path in zip(events, paths, strict=True)
    ]
    # what became of the protected values the events carry (docs/privacy.md §8)
    kids = {inner["kid"] for e in events for inner in fields.envelopes(e["data"])}
    protected = await keystore.statuses(conn, kids)
    return {
        "format": BUNDLE_FORMAT,
        "task_id": task_id,
        "stream": stream,
        "checkpoint": await witness_store.cosigned(conn, cp),
        "public_key": cp.vkeys[0] if cp.vkeys else "",
        "events": events,
        "proofs": proofs,
        **({"protected": protected} if protected else {}),
    }
