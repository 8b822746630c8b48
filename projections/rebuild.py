"""Rebuild a projection from position 0, and check a live view against a fold.

**Rebuild** makes the projection's tables afresh in a schema of their own
(``projections_rebuild_<name>``, by the same SQL function that made the live
ones, so indexes and grants are the same), folds every event into them with
the projection's own ``apply_batch`` (its statements name tables without a
schema; the rebuild's search_path puts the fresh schema first), in chunks of
their own transactions while the live view goes on serving and the runner
goes on updating it. When it is within ``SETTLE`` events of the head, one
transaction: lock the checkpoint row (the runner's next batch waits on it),
fold the last events, drop the live tables, move the fresh ones into
``public`` and set the checkpoint to where the fresh ones are. Readers wait
only for the drop and the move. The runner then continues from there on the
new tables. Run as the owner of the tables (the login that applies the
schema), since it drops and moves them.

**Check** reads, in one REPEATABLE READ snapshot, the checkpoint (position
P, hash H) and the live view, folds the events up to P from scratch with the
projection's plain-Python ``fold``, and reports every difference, and whether
H is the hash of the event at P.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import class_row

from ledger import errors
from ledger.db import q
from ledger.events import Envelope
from ledger.views import REBUILD_CLASS, lock_key
from projections import registry
from projections.base import Projection
from projections.integrity import Broken, check_row, first_break
from projections.runner import (
    StoredEvent,
    connect,
    drop_schema,
    ensure_checkpoint,
    read_batch,
    read_head,
)

log = structlog.get_logger("projections.rebuild")

SETTLE = 2000  # fold outside the swap until this close to the head
CHUNK = 10_000
# The swap waits this long for the live tables, at most, before it lets go and
# tries again: while it waits, new readers queue behind it, so it must be short
# next to their own lock_timeout (5 s), or they fail instead of the rebuild.
SWAP_LOCK_TIMEOUT = 0.5
SWAP_ATTEMPTS = 40


def projection(name: str) -> Projection:
    known = registry()
    if name not in known:
        raise errors.NotFound(f"no projection named {name!r}; known: {', '.join(known)}")
    return known[name]


def shadow_schema(name: str) -> str:
    return f"projections_rebuild_{name}"


@dataclass(slots=True)
class Rebuilt:
    name: str
    position: int
    hash: str
    applied: int
    seconds: float
    swap_seconds: float


def _fold_into(
    conn: psycopg.Connection[Any], p: Projection, after: int, upto: int, chunk: int
) -> int:
    """Apply the projection's events in (after, upto] to the tables first on the
    search_path, ``chunk`` at a time; returns how many were applied."""
    applied = 0
    while after < upto:
        rows = read_batch(conn, p, after, upto, chunk)
        if rows:
            p.apply_batch(conn, [r.envelope() for r in rows])
            applied += len(rows)
        if len(rows) < chunk:
            break
        after = int(rows[-1].position)
    return applied


def rebuild(url: str, name: str, *, chunk: int = CHUNK, settle: int = SETTLE) -> Rebuilt:
    p = projection(name)
    schema = shadow_schema(name)
    t0 = time.perf_counter()
    with connect(url, None, f"ledger-projections-rebuild:{name}") as conn:
        got = conn.execute(
            q("projections", "try_lock"), {"class": REBUILD_CLASS, "key": lock_key(name)}
        ).fetchone()
        if not (got and got[0]):
            raise errors.Conflict(f"a rebuild of {name} is already running")
        ensure_checkpoint(conn, name)
        drop_schema(conn, schema)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SELECT {}(%s)").format(sql.Identifier(p.tables_function)), (schema,))
        conn.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(schema)))
        conn.autocommit = False
        position, applied = 0, 0
        while True:
            head = read_head(conn)
            conn.rollback()
            if head.position - position <= settle:
                break
            upto = min(head.position, position + chunk)
            with conn.transaction():
                applied += _fold_into(conn, p, position, upto, chunk)
            position = upto
            if position % (chunk * 20) == 0:
                log.info("projection_rebuild_progressed", projection=name, position=position)
        t_swap = time.perf_counter()
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            try:
                with conn.transaction():
                    upto, upto_hash, applied = _swap(
                        conn, p, name, schema, position, chunk, applied
                    )
                break
            except psycopg.errors.LockNotAvailable:
                # A long reader holds the view: readers queued behind our lock
                # request would wait with us, so let go, catch up, try again.
                log.info("projection_swap_waited", projection=name, attempt=attempt)
                if attempt == SWAP_ATTEMPTS:
                    raise errors.Unavailable(
                        f"the {name} view stayed busy; the rebuild could not swap in "
                        f"{SWAP_ATTEMPTS} tries and left the live view as it was; run it again"
                    ) from None
                time.sleep(min(2.0, 0.1 * attempt))
                head = read_head(conn)
                conn.rollback()
                with conn.transaction():
                    applied += _fold_into(conn, p, position, head.position, chunk)
                position = head.position
                t_swap = time.perf_counter()
        swapped = time.perf_counter()
        conn.autocommit = True
        drop_schema(conn, schema)
    out = Rebuilt(name, upto, upto_hash.hex(), applied, swapped - t0, swapped - t_swap)
    log.info(
        "projection_rebuilt",
        projection=name,
        position=upto,
        applied=applied,
        seconds=round(out.seconds, 3),
        swap_seconds=round(out.swap_seconds, 3),
    )
    return out


def _swap(
    conn: psycopg.Connection[Any],
    p: Projection,
    name: str,
    schema: str,
    position: int,
    chunk: int,
    applied: int,
) -> tuple[int, bytes, int]:
    """In the caller's transaction: lock the live tables (briefly: readers
    queue behind a waiting lock request), fold the last events, move the
    rebuilt tables in and the checkpoint with them."""
    conn.execute(f"SET LOCAL lock_timeout = '{int(SWAP_LOCK_TIMEOUT * 1000)}ms'")
    conn.execute(q("projections", "checkpoint_for_update"), {"name": name}).fetchone()
    for table in p.tables:
        conn.execute(
            sql.SQL("LOCK TABLE public.{} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
        )
    head = read_head(conn)
    upto, upto_hash = head.position, bytes(head.hash)
    applied += _fold_into(conn, p, position, upto, chunk)
    for table in p.tables:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS public.{}").format(sql.Identifier(table)))
        conn.execute(
            sql.SQL("ALTER TABLE {}.{} SET SCHEMA public").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        )
    conn.execute(
        q("projections", "swap_checkpoint"),
        {"name": name, "position": upto, "hash": upto_hash, "applied": applied},
    )
    conn.execute(q("projections", "notify"), {"payload": f"{name}:{upto}"})
    return upto, upto_hash, applied


@dataclass(slots=True)
class Checked:
    name: str
    position: int
    hash: str
    hash_ok: bool
    rows: int
    differences: list[str] = field(default_factory=list)
    broken: Broken | None = None  # the ledger under the view is not a chain

    @property
    def ok(self) -> bool:
        return self.hash_ok and not self.differences and self.broken is None


def _events(conn: psycopg.Connection[Any], p: Projection, upto: int) -> Iterator[Envelope]:
    with conn.cursor(name="projection_check", row_factory=class_row(StoredEvent)) as cur:
        cur.itersize = 5000
        cur.execute(q("projections", "all_events"), {"upto": upto, "types": list(p.event_types)})
        for row in cur:
            event = row.envelope()
            check_row(row.position, event)
            yield event


def _describe(key: str, live: Any, folded: Any) -> str:
    if isinstance(live, dict) and isinstance(folded, dict):
        fields = sorted(
            k for k in set(live) | set(folded) if live.get(k, ...) != folded.get(k, ...)
        )
        parts = [f"{k}: view {live.get(k)!r} != fold {folded.get(k)!r}" for k in fields]
        return f"{key}: " + "; ".join(parts)
    return f"{key}: view {live!r} != fold {folded!r}"


def check(url: str, role: str | None, name: str, *, limit: int = 50) -> Checked:
    """Compare the live view with a fold from scratch up to its checkpoint."""
    p = projection(name)
    with connect(url, role, f"ledger-projections-check:{name}", autocommit=False) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            row = conn.execute(q("projections", "checkpoint"), {"name": name}).fetchone()
            position, h, _applied = row or (0, bytes(32), 0)
            if position:
                at = conn.execute(q("projections", "event_hash"), {"position": position}).fetchone()
                hash_ok = at is not None and bytes(at[0]) == h
            else:
                hash_ok = h == bytes(32)
            live = p.read(conn)
            broken = first_break(conn, position)
            try:
                folded = {} if broken else p.fold(_events(conn, p, position))
            except Broken as exc:
                broken = exc
            except errors.LedgerError as exc:  # the decider refused the history
                broken = Broken(position, f"the fold from scratch was refused: {exc}")
    if broken is not None:
        return Checked(name, position, h.hex(), hash_ok, len(live), broken=broken)
    diffs: list[str] = []
    for key in sorted(set(live) | set(folded)):
        if key not in folded:
            diffs.append(f"{key}: in the view, not in the fold")
        elif key not in live:
            diffs.append(f"{key}: in the fold, missing from the view")
        elif live[key] != folded[key]:
            diffs.append(_describe(key, live[key], folded[key]))
    return Checked(
        name,
        position,
        h.hex(),
        hash_ok,
        len(live),
        diffs[:limit] + ([f"... and {len(diffs) - limit} more"] if len(diffs) > limit else []),
    )
