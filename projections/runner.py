"""The projection runner: a checkpointed loop per projection, one leader each.

For each projection a thread tries ``pg_try_advisory_lock`` on a dedicated
connection. The one that gets it leads: it LISTENs on ``ledger_events`` (and
polls every ``projection_poll_seconds`` besides) and runs batches; the others
are hot standbys that try the lock again every ``projection_standby_seconds``
and take over when the leader's session ends (PostgreSQL releases the lock
the moment the leader's connection drops, ``kill -9`` included).

A batch is one transaction on a second connection: lock the projection's
checkpoint row, read the events after it (at most ``projection_batch_size``),
apply them, move the checkpoint (position and the event hash there) and
NOTIFY ``ledger_projections``. A crash anywhere rolls all of it back, so each
event is applied exactly once.

Why reading "after the checkpoint, in position order" never skips an event
that commits late: positions are not taken from a SEQUENCE. ``ledger_append``
(schema.sql) locks the ``ledger_head`` row FOR UPDATE before it numbers any
event and holds that lock until it commits, and PostgreSQL makes a commit
visible before it releases the committing transaction's locks. So appends are
serialized and become visible in position order: once the head row shows
position H, every event at or below H is committed and visible. A batch reads
the head first and then only events up to it; an event above H may still be
in flight and is left for the next batch.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import class_row

from ledger import db, errors
from ledger.db import q
from ledger.events import Envelope, envelope_from_row
from ledger.settings import Settings
from ledger.views import LOCK_CLASS, lock_key
from projections import registry
from projections.base import Projection

log = structlog.get_logger("projections.runner")

# How often a leader busy catching up checks that its lock session is alive.
LOCK_CHECK_SECONDS = 1.0


def connect(
    url: str, role: str | None, application: str, *, autocommit: bool = True
) -> psycopg.Connection[Any]:
    """A connection for projection work. No prepared statements: a rebuild swaps
    the view tables under the runner, and plain statements simply see the new ones."""
    conn = psycopg.connect(
        db.service_conninfo(url, role),
        autocommit=autocommit,
        application_name=application[:63],
        prepare_threshold=None,
        # a leader cut off by the network must lose its advisory lock in
        # seconds, not after the kernel's TCP timeout: the server drops a
        # session whose peer stops answering keepalives
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        tcp_user_timeout=30_000,
    )
    return conn


class LeadLost(errors.LedgerError):
    """The checkpoint moved under this runner: another one leads now."""


@dataclass(frozen=True, slots=True)
class Batch:
    applied: int  # events applied
    position: int  # the checkpoint after the batch
    full: bool  # the batch was cut at the size limit: more are waiting
    moved: bool  # the checkpoint moved


@dataclass(frozen=True, slots=True)
class Head:
    """The ledger's head (the ``head`` query): its last event's position and hash."""

    position: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event row of the ``batch`` and ``all_events`` queries."""

    position: int
    canonical: bytes
    hash: bytes

    def envelope(self) -> Envelope:
        return envelope_from_row(self.canonical, self.hash)


def read_head(conn: psycopg.Connection[Any]) -> Head:
    with conn.cursor(row_factory=class_row(Head)) as cur:
        return cur.execute(q("projections", "head")).fetchone() or Head(0, bytes(32))


def read_batch(
    conn: psycopg.Connection[Any], projection: Projection, after: int, upto: int, limit: int
) -> list[StoredEvent]:
    """The projection's events in (after, upto], at most ``limit``, in position order."""
    with conn.cursor(row_factory=class_row(StoredEvent)) as cur:
        return cur.execute(
            q("projections", "batch"),
            {
                "after": after,
                "upto": upto,
                "types": list(projection.event_types),
                "limit": limit,
            },
        ).fetchall()


def ensure_checkpoint(conn: psycopg.Connection[Any], name: str) -> None:
    with conn.transaction():
        conn.execute(q("projections", "ensure_checkpoint"), {"name": name})


def run_batch(conn: psycopg.Connection[Any], projection: Projection, limit: int) -> Batch:
    """Apply the next events after the checkpoint and move it, in one transaction."""
    with conn.transaction():
        row = conn.execute(
            q("projections", "checkpoint_for_update"), {"name": projection.name}
        ).fetchone()
        if row is None:
            raise errors.LedgerError(f"projection {projection.name} has no checkpoint row")
        old, _hash, _applied = row
        head = read_head(conn)
        if head.position <= old:
            return Batch(0, old, False, False)
        rows = read_batch(conn, projection, old, head.position, limit)
        full = len(rows) == limit
        last: StoredEvent | Head = rows[-1] if full else head
        new_pos, new_hash = int(last.position), bytes(last.hash)
        if rows:
            projection.apply_batch(conn, [r.envelope() for r in rows])
        moved = conn.execute(
            q("projections", "move_checkpoint"),
            {
                "name": projection.name,
                "old": old,
                "position": new_pos,
                "hash": new_hash,
                "applied": len(rows),
            },
        )
        if moved.rowcount != 1:
            raise LeadLost(f"the checkpoint of {projection.name} moved under this runner")
        conn.execute(q("projections", "notify"), {"payload": f"{projection.name}:{new_pos}"})
    return Batch(len(rows), new_pos, full, True)


class Runner:
    """Leads (or stands by for) each of ``names`` (default: every projection)."""

    def __init__(self, url: str, settings: Settings, names: list[str] | None = None) -> None:
        known = registry()
        unknown = [n for n in names or [] if n not in known]
        if unknown:
            raise errors.InvalidInput(
                f"no projection named {', '.join(unknown)}; known: {', '.join(known)}"
            )
        self.url = url
        self.settings = settings
        self.projections = [known[n] for n in names] if names else list(known.values())
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()
        self.leading: dict[str, bool] = {p.name: False for p in self.projections}
        self.threads = [
            threading.Thread(
                target=self._follow, args=(p,), name=f"projection-{p.name}", daemon=True
            )
            for p in self.projections
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)

    def wait(self) -> None:
        for t in self.threads:
            while t.is_alive():
                t.join(1.0)

    def _follow(self, p: Projection) -> None:
        app = f"ledger-projection:{p.name}"
        standing_by = False
        while not self.stopping.is_set():
            try:
                with connect(self.url, self.settings.db_role, app) as lock_conn:
                    got = lock_conn.execute(
                        q("projections", "try_lock"), {"class": LOCK_CLASS, "key": lock_key(p.name)}
                    ).fetchone()
                    if not (got and got[0]):
                        lock_conn.close()
                        if not standing_by:  # said once, so operators see the standby
                            log.info(
                                "projection_standing_by", projection=p.name, holder=self.holder
                            )
                            standing_by = True
                        self.stopping.wait(self.settings.projection_standby_seconds)
                        continue
                    standing_by = False
                    lock_conn.execute("LISTEN ledger_events")
                    with connect(self.url, self.settings.db_role, app, autocommit=False) as work:
                        # A view is derived data: a batch lost to a crash of the
                        # server goes with its checkpoint (one WAL record order) and
                        # is folded again from the durable ledger. So no fsync wait.
                        work.execute("SET synchronous_commit = off")
                        work.commit()
                        self._lead(p, lock_conn, work)
            except (psycopg.Error, OSError, LeadLost) as exc:
                if not self.stopping.is_set():
                    log.warning("projection_lead_lost", projection=p.name, error=str(exc))
                    self.stopping.wait(1.0)
            except Exception as exc:
                log.exception("projection_apply_failed", projection=p.name, error=str(exc))
                self.stopping.wait(self.settings.projection_retry_seconds)
            finally:
                self.leading[p.name] = False

    def _lead(
        self, p: Projection, lock_conn: psycopg.Connection[Any], work: psycopg.Connection[Any]
    ) -> None:
        ensure_checkpoint(work, p.name)
        with work.transaction():
            work.execute(q("projections", "take_lead"), {"name": p.name, "holder": self.holder})
        self.leading[p.name] = True
        log.info("projection_lead_taken", projection=p.name, holder=self.holder)
        limit = self.settings.projection_batch_size
        behind = True
        checked = time.monotonic()
        while not self.stopping.is_set():
            b = run_batch(work, p, limit)
            if b.full:
                behind = True
                if time.monotonic() - checked > LOCK_CHECK_SECONDS:
                    # catching up never waits on the lock session: ask it now
                    # and then, so a leader whose lock went (its session was
                    # ended) stops within a second instead of after the backlog
                    lock_conn.execute("SELECT 1")
                    checked = time.monotonic()
                continue
            if behind:
                log.info("projection_caught_up", projection=p.name, position=b.position)
                behind = False
            woken = False
            for _n in lock_conn.notifies(
                timeout=self.settings.projection_poll_seconds, stop_after=1
            ):
                woken = True
            if woken and self.settings.projection_gather_seconds > 0:
                self.stopping.wait(self.settings.projection_gather_seconds)


def drop_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
