"""The checkpoint signing key on disk: where it lives, its safety, rotation,
and the ``SigningKeyAnnounced`` event that introduces a new key to the ledger.

The key is ``$LEDGER_HOME/signing.key`` (or ``LEDGER_SIGNING_KEY_FILE``),
made on first start with mode 0600; the service refuses a key file group or
others can read. ``ledger signing-key rotate`` replaces it and keeps the old
one beside it (``<file>.<hex key id>.retired``) so it can co-sign the
checkpoint that covers the new key's announcement.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any

import orjson
import psycopg
import structlog

from ledger import errors
from ledger.db import q
from ledger.events import NewEvent, StreamAppend, system_meta
from ledger.proofs.note import Signer
from ledger.settings import Settings

log = structlog.get_logger("ledger.proofs")

ANNOUNCED_TYPE = "SigningKeyAnnounced"


class KeyFileError(errors.LedgerError):
    """The signing key file is unsafe or unreadable: the service will not start."""

    status, title, type_slug = 500, "Signing key unusable", "signing-key"


def key_path(settings: Settings) -> Path:
    return settings.signing_key_file or settings.home / "signing.key"


def retired_path(path: Path, key_id: bytes) -> Path:
    return path.with_name(f"{path.name}.{key_id.hex()}.retired")


def load_key_file(path: Path) -> Signer:
    """Read a signing key; refuse one that group or others may read or write."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"signing key file {path} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"signing key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"signing key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: group and others "
            f"must have no access; run 'chmod 600 {path}'"
        )
    return Signer.parse(path.read_text())


def _write_new(path: Path, signer: Signer, suffix: str) -> Path:
    """``signer`` written beside ``path`` (mode 0600, synced); the temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{suffix}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (signer.skey() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def create_key_file(path: Path, name: str) -> Signer:
    """Write a new key at ``path`` (mode 0600), unless another process just did:
    then that one is returned. Never overwrites."""
    signer = Signer.generate(name)
    tmp = _write_new(path, signer, "tmp")
    try:
        os.link(tmp, path)  # atomic, and fails if the key already exists
    except FileExistsError:
        return load_key_file(path)
    finally:
        tmp.unlink()
    return signer


def load_or_create(path: Path, name: str) -> tuple[Signer, bool]:
    """(signer, created)"""
    if path.exists():
        return load_key_file(path), False
    return create_key_file(path, name), True


def rotate_key_file(path: Path, name: str) -> tuple[Signer, Signer]:
    """Replace the key at ``path`` with a new one; the old one is kept beside it
    (``<file>.<hex key id>.retired``). Returns (old, new)."""
    old = load_key_file(path)
    new = Signer.generate(name)
    tmp = _write_new(path, new, "new")
    retired = retired_path(path, old.verifier.key_id)
    if not retired.exists():
        os.link(path, retired)
    os.replace(tmp, path)
    return old, new


class KeyHolder:
    """The signing key from its file, reloaded when the file is replaced."""

    def __init__(self, path: Path, name: str, *, create: bool = True) -> None:
        self.path = path
        if create:
            self.signer, created = load_or_create(path, name)
            if created:
                log.info("signing_key_created", path=str(path), vkey=self.signer.verifier.vkey)
        else:
            self.signer = load_key_file(path)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_ino, st.st_mtime_ns

    def get(self) -> Signer:
        with contextlib.suppress(FileNotFoundError):
            stamp = self._stat()
            if stamp != self._stamp:
                self.signer = load_key_file(self.path)
                self._stamp = stamp
        return self.signer

    def retired(self, key_ids: list[str]) -> Signer | None:
        """The first of ``key_ids`` still kept as a retired key file, if any."""
        for kid in key_ids:
            path = retired_path(self.path, bytes.fromhex(kid))
            if path.exists():
                return load_key_file(path)
        return None


def load_keys(settings: Settings) -> KeyHolder:
    return KeyHolder(key_path(settings), settings.origin)


def announcement(signer: Signer, origin: str, previous: str | None) -> StreamAppend:
    """The ``SigningKeyAnnounced`` event introducing ``signer`` (after ``previous``)."""
    v = signer.verifier
    data = {"name": v.name, "key_id": v.key_id.hex(), "vkey": v.vkey, "origin": origin}
    if previous:
        data["previous_vkey"] = previous
    return StreamAppend(
        stream=f"signing-{v.key_id.hex()}",
        events=[NewEvent(ANNOUNCED_TYPE, data)],
        meta=system_meta("checkpoints"),
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
