"""The tree builder and checkpoint signer: one leader across every process.

Each API process starts :func:`start_service` (registered in SERVICES). It
loads the signing key (refusing one that group or others can read) and runs
a thread that tries to become the leader with ``pg_try_advisory_lock`` on a
dedicated connection; the others stand by and retry. The leader LISTENs on
``ledger_events`` (and polls), extends the stored tree (``ledger/tree.py``)
and signs a C2SP checkpoint whenever the tree grew and the last one is at
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

import contextlib
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import structlog

from ledger import db, errors, note, tree
from ledger.appender import Command, NewEvent, append_sync
from ledger.commands import SERVICE
from ledger.db import q
from ledger.settings import Settings

log = structlog.get_logger("ledger.checkpoints")

LEADER_LOCK = 0x1ED6E6  # advisory lock id held by the tree builder's leader
WANT_CHANNEL = "ledger_checkpoint_wanted"
ANNOUNCED_TYPE = "SigningKeyAnnounced"
EXTEND_CHUNK = 50_000
# Under a stream of appends every group commit NOTIFYs; the builder extends at
# most this often then (seconds), not once per commit: each extend rewrites the
# edge tiles and commits. After a quiet spell the first NOTIFY still acts at once.
MIN_STEP_SECONDS = 0.05


def key_path(settings: Settings) -> Path:
    return settings.signing_key_file or settings.home / "signing.key"


def retired_path(path: Path, key_id: bytes) -> Path:
    return path.with_name(f"{path.name}.{key_id.hex()}.retired")


class KeyHolder:
    """The signing key from its file, reloaded when the file is replaced."""

    def __init__(self, path: Path, name: str, *, create: bool = True) -> None:
        self.path = path
        if create:
            self.signer, created = note.load_or_create(path, name)
            if created:
                log.info("signing_key_created", path=str(path), vkey=self.signer.verifier.vkey)
        else:
            self.signer = note.load_key_file(path)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_ino, st.st_mtime_ns

    def get(self) -> note.Signer:
        with contextlib.suppress(FileNotFoundError):
            stamp = self._stat()
            if stamp != self._stamp:
                self.signer = note.load_key_file(self.path)
                self._stamp = stamp
        return self.signer


def rotate_key_file(path: Path, name: str) -> tuple[note.Signer, note.Signer]:
    """Replace the key at ``path`` with a new one; the old one is kept beside it
    (``<file>.<hex key id>.retired``). Returns (old, new)."""
    old = note.load_key_file(path)
    new = note.Signer.generate(name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (new.skey() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    retired = retired_path(path, old.verifier.key_id)
    if not retired.exists():
        os.link(path, retired)
    os.replace(tmp, path)
    return old, new


def service_meta() -> dict[str, Any]:
    return {
        "actor": SERVICE.name,  # the service's own principal, as lease expiry names it
        "role": SERVICE.role,
        "request_id": f"checkpoints-{uuid.uuid4().hex[:12]}",
    }


def announcement_command(signer: note.Signer, origin: str, previous: str | None) -> Command:
    v = signer.verifier
    data = {"name": v.name, "key_id": v.key_id.hex(), "vkey": v.vkey, "origin": origin}
    if previous:
        data["previous_vkey"] = previous
    return Command(
        stream=f"signing-{v.key_id.hex()}",
        events=[NewEvent(ANNOUNCED_TYPE, data)],
        meta=service_meta(),
        expected_version=0,
    )


def announced_keys(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """vkey -> position of its announcement."""
    out: dict[str, int] = {}
    for canonical, _h in conn.execute(q("proofs", "key_announcements")).fetchall():
        event = orjson.loads(bytes(canonical))
        out.setdefault(str(event["data"]["vkey"]), int(event["position"]))
    conn.rollback()
    return out


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
        self.builder = tree.Builder(conn)
        self.signer = keys.get()
        self.cosigner: note.Signer | None = None
        # the position the current key's announcement must be covered by, if any
        self.announced_at = 0
        row = conn.execute(q("proofs", "latest_checkpoint")).fetchone()
        conn.rollback()
        self.latest: Latest | None = Latest(int(row[0]), list(row[2]), 0.0) if row else None
        if self.latest and self.signer.verifier.key_id.hex() not in self.latest.key_ids:
            previous = self._retired(self.latest.key_ids)
            self._rotate_to(self.signer, previous)

    def _retired(self, key_ids: list[str]) -> note.Signer | None:
        for kid in key_ids:
            path = retired_path(self.keys.path, bytes.fromhex(kid))
            if path.exists():
                return note.load_key_file(path)
        return None

    def _rotate_to(self, new: note.Signer, previous: note.Signer | None) -> None:
        vkeys = announced_keys(self.conn)
        position = vkeys.get(new.verifier.vkey)
        if position is None:
            prev_vkey = previous.verifier.vkey if previous else None
            self.conn.execute("SET LOCAL synchronous_commit = on")  # an event: durable
            (res,) = append_sync(
                self.conn, [announcement_command(new, self.settings.origin, prev_vkey)]
            )
            self.conn.commit()
            if isinstance(res, errors.VersionConflict):
                position = announced_keys(self.conn)[new.verifier.vkey]
            elif isinstance(res, errors.LedgerError):
                raise res
            else:
                position = res[0].position
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
        self.settings = settings
        self.keys = keys
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ledger-checkpoints", daemon=True)
        self.is_leader = False

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.thread.join(timeout)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, autocommit=True)
        db.session_setup(self.settings.db_role)(conn)
        conn.autocommit = True
        return conn

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                with self._connect() as lock_conn:
                    row = lock_conn.execute(
                        q("proofs", "leader_lock"), {"key": LEADER_LOCK}
                    ).fetchone()
                    if not (row and row[0]):
                        lock_conn.close()
                        self.stopping.wait(2.0)
                        continue
                    lock_conn.execute("LISTEN ledger_events")
                    lock_conn.execute("LISTEN ledger_checkpoint_wanted")
                    with psycopg.connect(self.url) as work:
                        db.session_setup(self.settings.db_role)(work)
                        # The tiles are derived from the events (a builder that
                        # lost its last steps in a crash redoes them from the
                        # stored state), so they skip the flush each step cost the
                        # appends beside them; a checkpoint itself is durable (sign).
                        work.execute("SET synchronous_commit = off")
                        work.commit()
                        self._lead(lock_conn, work)
            except tree.TreeHalted as exc:
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


def load_keys(settings: Settings) -> KeyHolder:
    return KeyHolder(key_path(settings), settings.origin)


class OriginMismatch(errors.LedgerError):
    """LEDGER_ORIGIN names another log than the one this ledger's checkpoints sign."""


def stored_origin(conn: psycopg.Connection[Any]) -> str | None:
    """The origin line of the latest checkpoint, None before the first."""
    row = conn.execute(q("proofs", "latest_checkpoint")).fetchone()
    return str(row[3]).split("\n", 1)[0] if row else None


def resolve_origin(settings: Settings, stored: str | None) -> Settings:
    """A log keeps one origin for life: the one its first checkpoint was signed
    for. An unset LEDGER_ORIGIN takes it; a LEDGER_ORIGIN set to another is an
    error that says what to do (a silent switch would split the log in two for
    every auditor holding an old checkpoint)."""
    if stored is None or stored == settings.origin:
        return settings
    if "origin" in settings.model_fields_set:
        raise OriginMismatch(
            f"this ledger's checkpoints are signed for origin {stored!r}, but LEDGER_ORIGIN is "
            f"{settings.origin!r}; a log keeps its origin for life: set LEDGER_ORIGIN={stored} "
            "or unset it"
        )
    return settings.model_copy(update={"origin": stored})


def settings_with_stored_origin(settings: Settings, url: str) -> Settings:
    with psycopg.connect(url, autocommit=True) as conn:
        db.session_setup(settings.db_role)(conn)
        return resolve_origin(settings, stored_origin(conn))


async def start_service(ctx: Any) -> Any:
    """SERVICES entry: refuse to start on an unsafe key or another origin than the
    ledger's, then run the leader thread."""
    import asyncio

    ctx.settings = await asyncio.to_thread(settings_with_stored_origin, ctx.settings, ctx.url)
    keys = load_keys(ctx.settings)
    ctx.extras["signing_keys"] = keys
    service = CheckpointService(ctx.url, ctx.settings, keys)
    service.start()
    ctx.extras["checkpoint_service"] = service

    async def stop() -> None:
        import asyncio

        service.stopping.set()
        with contextlib.suppress(Exception):
            async with ctx.pool.connection() as conn:
                await conn.execute(q("proofs", "want_checkpoint"))
        await asyncio.to_thread(service.stop)

    return stop


# -- ledger signing-key show | rotate ---------------------------------------------------


def configure_signing_key(p: Any) -> None:
    p.description = "show the checkpoint signing key's verifier key, or rotate the key"
    sub = p.add_subparsers(dest="signing_cmd", required=True)
    sub.add_parser("show", help="print the verifier key (vkey), creating the key if needed")
    sub.add_parser(
        "rotate",
        help="replace the key; the running leader announces the new one in the ledger "
        "before it signs, and the old one co-signs the checkpoint covering that",
    )


def cmd_signing_key(args: Any) -> int:
    import sys

    settings = Settings()
    url = db.resolve_url(settings)
    db.apply_schema(url)
    settings = settings_with_stored_origin(settings, url)
    path = key_path(settings)
    if args.signing_cmd == "show":
        print(load_keys(settings).get().verifier.vkey)
        return 0
    old, new = rotate_key_file(path, settings.origin)
    print(new.verifier.vkey)
    print(
        f"rotated {path}: {old.verifier.key_id.hex()} -> {new.verifier.key_id.hex()}; the old "
        f"key is kept as {retired_path(path, old.verifier.key_id).name} to co-sign the "
        "announcement",
        file=sys.stderr,
    )
    return 0


COMMANDS: dict[str, tuple[Any, Any]] = {"signing-key": (configure_signing_key, cmd_signing_key)}
