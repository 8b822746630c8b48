"""C2SP tlog-cosignature, Ed25519 ``cosignature/v1``: a witness's timestamped
signature over a checkpoint. Pure: no I/O.

A cosigner key's id is ``SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4]``; its
verifier key is ``<name>+<hex id>+<base64(0x04 ‖ public key)>`` and its
private key ``PRIVATE+KEY+<name>+<hex id>+<base64(0x04 ‖ seed)>``. The
signature line is ``— <name> base64(key id ‖ u64 timestamp ‖ signature)``
and the signature covers ``cosignature/v1\\ntime <timestamp>\\n`` followed by
the checkpoint's note text (its lines up to the blank line).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from ledger.proofs.note import SIG_PREFIX, NoteError

ALG_COSIGNATURE_V1 = 0x04


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public).digest()[:4]


def message(text: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: the header, the time, the checkpoint's text."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def note_text(note: str) -> str:
    """A signed note's text (up to and including the newline before the blank line)."""
    text, sep, _sigs = note.rpartition("\n\n")
    if not sep:
        raise NoteError("not a signed note: no blank line before the signatures")
    return text + "\n"


def _decode(b64: str, what: str) -> bytes:
    try:
        return base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error):
        raise NoteError(f"{what} is not base64") from None


@dataclass(frozen=True, slots=True)
class CosignerKey:
    """A witness's verifier key."""

    name: str
    key_id: bytes
    public: bytes

    @classmethod
    def parse(cls, vkey: str) -> CosignerKey:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not parts[0] or any(c.isspace() for c in parts[0]):
            raise NoteError("a witness key is <name>+<hex key id>+<base64(0x04 ‖ key)>")
        name, hex_id, b64 = parts
        raw = _decode(b64, "the witness key")
        try:
            kid = bytes.fromhex(hex_id)
        except ValueError:
            raise NoteError("the witness key id is not hex") from None
        if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
            raise NoteError("not a cosignature/v1 key (0x04 ‖ 32-byte Ed25519 key)")
        if key_id(name, raw[1:]) != kid:
            raise NoteError("the witness key id does not match its name and key")
        return cls(name, kid, raw[1:])

    @property
    def vkey(self) -> str:
        b64 = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{b64}"

    def verify_line(self, line: str, text: str) -> int | None:
        """The timestamp of ``line`` when it is this key's valid cosignature of
        the checkpoint ``text``; None when the line is another key's. Raises
        NoteError when it names this key but does not verify."""
        if not line.startswith(SIG_PREFIX):
            return None
        name, _, b64 = line[len(SIG_PREFIX) :].strip().partition(" ")
        if name != self.name:
            return None
        raw = _decode(b64, f"the signature by {name}")
        if len(raw) != 4 + 8 + 64 or raw[:4] != self.key_id:
            return None
        (timestamp,) = struct.unpack(">Q", raw[4:12])
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(
                raw[12:], message(text, timestamp)
            )
        except InvalidSignature:
            raise NoteError(f"the cosignature by {name} does not verify") from None
        if timestamp == 0 or timestamp >= 1 << 63:
            raise NoteError(f"the cosignature by {name} has no valid timestamp")
        return int(timestamp)

    def timestamp_in(self, note: str) -> int | None:
        """The timestamp of this key's valid cosignature in a signed note, if any."""
        text = note_text(note)
        _, _, sigs = note.rpartition("\n\n")
        for line in sigs.split("\n"):
            got = self.verify_line(line, text)
            if got is not None:
                return got
        return None


@dataclass(frozen=True, slots=True)
class Cosigner:
    name: str
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        if not name or "+" in name or any(c.isspace() for c in name):
            raise NoteError(f"witness name {name!r} must be non-empty, without '+' or spaces")
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def key(self) -> CosignerKey:
        public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return CosignerKey(self.name, key_id(self.name, public), public)

    def cosign(self, text: str, timestamp: int) -> str:
        """The signature line (with its newline) cosigning checkpoint ``text``."""
        sig = self.private.sign(message(text, timestamp))
        raw = self.key.key_id + struct.pack(">Q", timestamp) + sig
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(raw).decode()}\n"

    def skey(self) -> str:
        seed = self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        b64 = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key.key_id.hex()}+{b64}"

    @classmethod
    def parse(cls, skey: str) -> Cosigner:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a witness signing key is PRIVATE+KEY+<name>+<hex id>+<base64 key>")
        raw = _decode(parts[4], "the witness signing key")
        if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
            raise NoteError("not a cosignature/v1 signing key (0x04 ‖ 32-byte seed)")
        signer = cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key.key_id.hex() != parts[3]:
            raise NoteError("the witness signing key id does not match its name and key")
        return signer


def count_valid(note: str, keys: Iterable[CosignerKey]) -> tuple[list[CosignerKey], list[str]]:
    """Which of ``keys`` validly cosigned ``note``, and why the others did not."""
    good: list[CosignerKey] = []
    bad: list[str] = []
    for k in keys:
        try:
            ts = k.timestamp_in(note)
        except NoteError as exc:
            bad.append(f"{k.name}: {exc.detail}")
            continue
        if ts is None:
            bad.append(f"{k.name}: no cosignature")
        else:
            good.append(k)
    return good, bad


def with_lines(note: str, lines: Iterable[str]) -> str:
    """``note`` with the signature ``lines`` it does not already carry appended."""
    have = set(note.split("\n"))
    extra = [ln if ln.endswith("\n") else ln + "\n" for ln in lines if ln.rstrip("\n") not in have]
    return note + "".join(extra)
