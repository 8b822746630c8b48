"""The checkpointer: one leader across every process builds the tree and signs.

``ledger tree`` runs it as a process of its own (``ledger run`` starts
it beside the API); an API process can stand by for it too (``ledger serve
--tree``, :func:`start_service`). It loads the signing key (refusing one that group or others can
read) and runs a thread that tries to become the leader with
``pg_try_advisory_lock`` on a dedicated connection; the others stand by and
retry. The leader LISTENs on ``ledger_events`` (and polls), extends the
stored tree (``ledger.proofs.builder``) and signs a C2SP checkpoint whenever the tree grew and the last one is at
least ``checkpoint_interval_seconds`` old, or at once when
``ledger_checkpoint_wanted`` is notified. Nothing here is on the append path.

Key rotation: the first key signs without ceremony. A key that is not the
one that signed the latest checkpoint is first announced by a
``SigningKeyAnnounced`` event on stream ``signing-<hex key id>``; the first
checkpoint covering that event is signed by the new key and, when it is
still at hand, by the previous one. A running leader notices a replaced key
file and rotates; ``ledger signing-key rotate`` replaces it, keeping the old
key beside it as ``<file>.<hex key id>.retired`` for that co-signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from ledger import db, errors
from ledger.appender import append_sync
from ledger.db import q
from ledger.proofs import note, store
from ledger.proofs.builder import EXTEND_CHUNK, Builder
from ledger.proofs.origin import resolve_origin, settings_with_stored_origin, stored_origin
from ledger.proofs.signing import KeyHolder, announced_keys, announcement, load_keys
from ledger.proofs.store import TreeHalted
from ledger.settings import Settings

log = structlog.get_logger("ledger.checkpoints")

LEADER_LOCK = 0x1ED6E6  # advisory lock id held by the tree builder's leader
APP_NAME = "ledger-tree"  # application_name of the tree builder's sessions
WANT_CHANNEL = "ledger_checkpoint_wanted"
# Under a stream of appends every group commit NOTIFYs; the builder extends at
# most this often then (seconds), not once per commit: each extend rewrites the
# edge tiles and commits. After a quiet spell the first NOTIFY still acts at once.
MIN_STEP_SECONDS = 0.05


@dataclass(slots=True)
class Latest:
    size: int
    key_ids: list[str]
    at: float  # monotonic time it was signed by this leader (0: before it started)


class Leader:
    """The leader's work on its own connection: extend, announce, sign."""

    def __init__(self, conn: psycopg.Connection[Any], settings: Settings, keys: KeyHolder):
        self.conn = conn
        self.settings = settings
        self.keys = keys
        self.builder = Builder(conn)
        self.signer = keys.get()
        self.cosigner: note.Signer | None = None
        # the position the current key's announcement must be covered by, if any
        self.announced_at = 0
        row = store.latest_checkpoint(conn)
        conn.rollback()
        self.latest: Latest | None = Latest(row.size, list(row.key_ids), 0.0) if row else None
        if self.latest and self.signer.verifier.key_id.hex() not in self.latest.key_ids:
            self._rotate_to(self.signer, keys.retired(self.latest.key_ids))

    def _rotate_to(self, new: note.Signer, previous: note.Signer | None) -> None:
        vkeys = announced_keys(self.conn)
        position = vkeys.get(new.verifier.vkey)
        if position is None:
            prev_vkey = previous.verifier.vkey if previous else None
            self.conn.execute("SET LOCAL synchronous_commit = on")  # an event: durable
            (res,) = append_sync(self.conn, [announcement(new, self.settings.origin, prev_vkey)])
            self.conn.commit()
            if isinstance(res, errors.VersionConflict):
                position = announced_keys(self.conn)[new.verifier.vkey]
            elif isinstance(res, errors.LedgerError):
                raise res
            else:
                position = res[0]["position"]
            log.info("signing_key_announced", vkey=new.verifier.vkey, position=position)
        self.signer, self.cosigner, self.announced_at = new, previous, position

    def step(self, urgent: bool) -> bool:
        """Extend the tree and sign if due. True when a checkpoint was signed."""
        current = self.keys.get()
        if current.verifier != self.signer.verifier:
            self._rotate_to(current, self.signer)
            urgent = True
        while self.builder.extend(EXTEND_CHUNK) == EXTEND_CHUNK:
            pass
        size = self.builder.size
        if self.latest is not None and size <= self.latest.size:
            return False
        if size < self.announced_at:
            return False  # a new key signs nothing before its announcement is covered
        due = self.latest is None or (
            time.monotonic() - self.latest.at >= self.settings.checkpoint_interval_seconds
        )
        if not (urgent or due):
            return False
        self.sign(size, self.builder.root)
        return True

    def next_due(self) -> float:
        """Seconds until a pending checkpoint is due (or a long time)."""
        if self.latest is None or self.builder.size <= self.latest.size:
            return 3600.0
        return max(
            0.0, self.latest.at + self.settings.checkpoint_interval_seconds - time.monotonic()
        )

    def sign(self, size: int, root: bytes) -> None:
        signers = [self.signer] + ([self.cosigner] if self.cosigner else [])
        cp = note.Checkpoint(self.settings.origin, size, root)
        text = note.sign_checkpoint(cp, *signers)
        key_ids = [s.verifier.key_id.hex() for s in signers]
        self.conn.execute("SET LOCAL synchronous_commit = on")  # served once committed: durable
        self.conn.execute(
            q("proofs", "insert_checkpoint"),
            {
                "size": size,
                "root": root,
                "key_ids": key_ids,
                "vkeys": [s.verifier.vkey for s in signers],
                "note": text,
            },
        )
        self.conn.commit()
        self.latest = Latest(size, key_ids, time.monotonic())
        if self.cosigner and size >= self.announced_at:
            self.cosigner = None  # the old key has vouched for the announcement
        log.info("checkpoint_signed", tree_size=size, key_ids=key_ids)


class CheckpointService:
    """A thread that becomes the leader when it can and works while it is."""

    def __init__(self, url: str, settings: Settings, keys: KeyHolder) -> None:
        self.url = url
        # named, so an operator sees which process leads (pg_stat_activity)
        self.conninfo = db.service_conninfo(url, settings.db_role, application_name=APP_NAME)
        self.settings = settings
        self.keys = keys
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ledger-checkpoints", daemon=True)
        self.is_leader = False
        self.attempts = 0  # tries at the leader's lock so far

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as lock_conn:
                    (got,) = lock_conn.execute(
                        q("proofs", "leader_lock"), {"key": LEADER_LOCK}
                    ).fetchone() or (False,)
                    self.attempts += 1
                    if not got:
                        lock_conn.close()
                        self.stopping.wait(2.0)
                        continue
                    lock_conn.execute("LISTEN ledger_events")
                    lock_conn.execute("LISTEN ledger_checkpoint_wanted")
                    with psycopg.connect(self.conninfo) as work:
                        # The tiles are derived from the events (a builder that
                        # lost its last steps in a crash redoes them from the
                        # stored state), so they skip the flush each step cost the
                        # appends beside them; a checkpoint itself is durable (sign).
                        work.execute("SET synchronous_commit = off")
                        work.commit()
                        self._lead(lock_conn, work)
            except TreeHalted as exc:
                log.error("tree_halted", reason=exc.detail)
                self.stopping.wait(1.0)
            except (psycopg.Error, OSError) as exc:
                if not self.stopping.is_set():
                    log.warning("checkpoint_leader_lost", error=str(exc))
                    self.stopping.wait(1.0)
            except Exception:
                log.exception("checkpoint_service_crashed")
                self.stopping.wait(5.0)
            finally:
                self.is_leader = False

    def _lead(self, lock_conn: psycopg.Connection[Any], work: psycopg.Connection[Any]) -> None:
        # another process may have signed the first checkpoint since this one started
        self.settings = resolve_origin(self.settings, stored_origin(work))
        work.commit()
        leader = Leader(work, self.settings, self.keys)
        self.is_leader = True
        log.info("checkpoint_leader_elected", tree_size=leader.builder.size)
        urgent = True
        gap = min(MIN_STEP_SECONDS, self.settings.tree_poll_seconds)
        while not self.stopping.is_set():
            leader.step(urgent)
            stepped = time.monotonic()
            urgent = False
            wait = min(self.settings.tree_poll_seconds, leader.next_due())
            for n in lock_conn.notifies(timeout=max(wait, 0.01), stop_after=1):
                if n.channel == WANT_CHANNEL:
                    urgent = True
            # Woken by an append right after a step: let the commits that follow
            # gather for the rest of the gap, asleep (every commit NOTIFYs; waking
            # for each one cost the API process's request thread the GIL hundreds
            # of times a second), then take what arrived meanwhile at once.
            if not urgent and (rest := stepped + gap - time.monotonic()) > 0:
                self.stopping.wait(rest)
            while True:  # one read takes what one packet holds: read until none is left
                got = False
                for n in lock_conn.notifies(timeout=0.0):
                    got = True
                    if n.channel == WANT_CHANNEL:
                        urgent = True
                if not got:
                    break


def start_thread(settings: Settings, url: str) -> CheckpointService:
    """Refuse an unsafe key or another origin than the ledger's (before
    anything starts), then run the leader thread."""
    settings = settings_with_stored_origin(settings, url)
    service = CheckpointService(url, settings, load_keys(settings))
    service.start()
    return service


def stop_thread(service: CheckpointService) -> None:
    """Wake the leader out of its wait for appends, and join it."""
    service.stopping.set()
    with (
        contextlib.suppress(psycopg.Error, OSError),
        psycopg.connect(service.conninfo, autocommit=True, connect_timeout=5) as conn,
    ):
        conn.execute(q("proofs", "want_checkpoint"))
    service.stop()


async def start_service(ctx: Any) -> Any:
    """An API process as a standby for the tree (``ledger serve --tree``, and
    the tests' apps): a SERVICES-style entry that runs the leader thread beside
    the requests. ``ledger run`` runs it in a process of its own instead."""
    service = await asyncio.to_thread(start_thread, ctx.settings, ctx.url)
    ctx.extras["checkpoint_service"] = service

    async def stop() -> None:
        await asyncio.to_thread(stop_thread, service)

    return stop
