"""C2SP signed notes and tlog checkpoints with Ed25519 keys. Pure: no I/O
(the key files are ``ledger.proofs.signing``'s).

A signed note is UTF-8 text ending in a newline, a blank line, then one or
more signature lines ``— <name> <base64(key id ‖ signature)>`` (U+2014, a
space). An Ed25519 key's id is the first four bytes of
``SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)``; its verifier key ("vkey") is
``<name>+<hex key id>+<base64(0x01 ‖ public key)>``. The signature covers the
note text up to and including its final newline (not the blank line).

A checkpoint (C2SP tlog-checkpoint) is a note whose text is the origin line,
the tree size in decimal, the base64 root hash, each on its own line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger import errors

ALG_ED25519 = 0x01
SIG_PREFIX = "— "  # U+2014 EM DASH, then a space


class NoteError(errors.LedgerError):
    """A note, key or checkpoint that is malformed or does not verify."""

    status, title, type_slug = 422, "Invalid signed note", "invalid-note"


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, without '+' or spaces")


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


@dataclass(frozen=True, slots=True)
class Verifier:
    name: str
    key_id: bytes
    public: bytes

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        _check_name(name)
        try:
            kid = bytes.fromhex(hex_id)
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise NoteError(f"verifier key is not well formed: {exc}") from None
        if len(kid) != 4 or len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("verifier key is not an Ed25519 key (0x01 ‖ 32 bytes) with a 4-byte id")
        public = raw[1:]
        if key_id(name, public) != kid:
            raise NoteError("verifier key id does not match its name and key")
        return cls(name, kid, public)

    @property
    def vkey(self) -> str:
        b64 = base64.b64encode(bytes([ALG_ED25519]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{b64}"

    def verify(self, msg: bytes, sig: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(sig, msg)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Signer:
    name: str
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Signer:
        _check_name(name)
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, key_id(self.name, self.public), self.public)

    def sign(self, msg: bytes) -> bytes:
        return self.private.sign(msg)

    def skey(self) -> str:
        """The private key in the signed-note text form
        ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 ‖ seed)>``."""
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        b64 = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id.hex()}+{b64}"

    @classmethod
    def parse(cls, skey: str) -> Signer:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signing key is PRIVATE+KEY+<name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts[2:]
        _check_name(name)
        try:
            raw = base64.b64decode(b64, validate=True)
            kid = bytes.fromhex(hex_id)
        except (ValueError, binascii.Error) as exc:
            raise NoteError(f"signing key is not well formed: {exc}") from None
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("signing key is not an Ed25519 seed (0x01 ‖ 32 bytes)")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.verifier.key_id != kid:
            raise NoteError("signing key id does not match its name and key")
        return signer


# -- notes -------------------------------------------------------------------


def sign_note(text: str, *signers: Signer) -> str:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if "\n\n" in text or text.startswith("\n"):
        raise NoteError("note text must not contain blank lines")
    msg = text.encode()
    lines = [
        f"{SIG_PREFIX}{s.name} {base64.b64encode(s.verifier.key_id + s.sign(msg)).decode()}\n"
        for s in signers
    ]
    return text + "\n" + "".join(lines)


def open_note(note: str, verifiers: list[Verifier]) -> tuple[str, list[Verifier]]:
    """The note's text and which of ``verifiers`` signed it; raises NoteError
    unless at least one known key signed it and every signature line by a
    known key verifies."""
    text, sep, sigs = note.rpartition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise NoteError("not a signed note: no blank line before the signatures")
    text += "\n"
    msg = text.encode()
    by_id = {(v.name, v.key_id): v for v in verifiers}
    good: list[Verifier] = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise NoteError("a signature line must start with '— '")
        name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise NoteError(f"signature by {name!r} is not base64") from None
        if len(raw) < 5:
            raise NoteError(f"signature by {name!r} is too short")
        v = by_id.get((name, raw[:4]))
        if v is None:
            continue  # a signature by a key we were not given: neither good nor bad
        if not v.verify(msg, raw[4:]):
            raise NoteError(f"the signature by {name} ({raw[:4].hex()}) does not verify")
        good.append(v)
    if not good:
        raise NoteError("the note is not signed by any of the given keys")
    return text, good


# -- checkpoints ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse_text(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint is origin, size and root hash, one per line")
        origin, size_s, root_s = lines[0], lines[1], lines[2]
        if not origin:
            raise NoteError("the checkpoint has no origin line")
        if not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")):
            raise NoteError("the checkpoint's tree size is not a decimal number")
        try:
            root = base64.b64decode(root_s, validate=True)
        except (ValueError, binascii.Error):
            raise NoteError("the checkpoint's root hash is not base64") from None
        if len(root) != 32:
            raise NoteError("the checkpoint's root hash is not 32 bytes")
        return cls(origin, int(size_s), root)


def sign_checkpoint(cp: Checkpoint, *signers: Signer) -> str:
    return sign_note(cp.text(), *signers)


def open_checkpoint(
    note: str, verifiers: list[Verifier], origin: str | None = None
) -> tuple[Checkpoint, list[Verifier]]:
    text, good = open_note(note, verifiers)
    cp = Checkpoint.parse_text(text)
    if origin is not None and cp.origin != origin:
        raise NoteError(f"the checkpoint is for origin {cp.origin!r}, not {origin!r}")
    return cp, good
