"""The cryptography of protected fields (docs/privacy.md §2–§3): AES-256-GCM
over a value's RFC 8785 bytes, bound by its additional data to the stream,
the field, the key and the subject; data keys wrapped by the key-encryption
key (AES key wrap, RFC 3394); the KEK file. Pure apart from the file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from ledger.canonical import canonical_bytes
from ledger.privacy.fields import ALG, ENVELOPE_VERSION, MARK

KEY_BYTES = 32
NONCE_BYTES = 12


class KeyError_(ValueError):
    """A key that does not open what it should (wrong KEK, tampered envelope)."""


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def aad(stream: str, inner: dict[str, Any]) -> bytes:
    """The additional data: RFC 8785 bytes of the envelope's clear fields and the stream."""
    return canonical_bytes(
        {
            "alg": inner["alg"],
            "class": inner["class"],
            "field": inner["field"],
            "kid": inner["kid"],
            "stream": stream,
            "subject": inner["subject"],
            "v": inner["v"],
        }
    )


def seal(
    key: bytes, *, stream: str, field: str, kid: str, subject: str, kind: str, value: Any
) -> dict[str, Any]:
    """The envelope of ``value`` (any JSON value) under data key ``key``."""
    inner: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "alg": ALG,
        "kid": kid,
        "class": kind,
        "subject": subject,
        "field": field,
    }
    nonce = secrets.token_bytes(NONCE_BYTES)
    ct = AESGCM(key).encrypt(nonce, canonical_bytes(value), aad(stream, inner))
    return {MARK: {**inner, "nonce": b64u(nonce), "ct": b64u(ct)}}


def open_(key: bytes, stream: str, inner: dict[str, Any]) -> Any:
    """The value an envelope's inner object holds; KeyError_ when it does not open."""
    if inner.get("alg") != ALG:
        raise KeyError_(f"unknown algorithm {inner.get('alg')!r}")
    try:
        plain = AESGCM(key).decrypt(unb64u(inner["nonce"]), unb64u(inner["ct"]), aad(stream, inner))
    except (InvalidTag, KeyError, ValueError) as exc:
        raise KeyError_("the envelope does not open with its key") from exc
    return orjson.loads(plain)


# -- the key-encryption key --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kek:
    id: str
    key: bytes = b""

    def wrap(self, data_key: bytes) -> bytes:
        return aes_key_wrap(self.key, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self.key, bytes(wrapped))
        except InvalidUnwrap as exc:
            raise KeyError_("the data key does not unwrap with this KEK") from exc

    def __repr__(self) -> str:  # never the key itself, in a log or a traceback
        return f"Kek(id={self.id!r})"


def kek_id(key: bytes) -> str:
    return "kek-" + hashlib.sha256(b"ledger-kek-id\x00" + key).hexdigest()[:16]


def load_kek(path: Path) -> Kek:
    """The KEK in ``path``: one line, base64url of 32 random bytes; the file
    must be readable by its owner alone."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(
            f"{path} is readable by others (mode {mode:o}); run 'chmod 600 {path}'"
        )
    key = unb64u(path.read_text().strip())
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path}: a KEK is {KEY_BYTES} bytes, base64url on one line")
    return Kek(kek_id(key), key)


def load_or_create_kek(path: Path) -> tuple[Kek, bool]:
    """The KEK in ``path``, made (mode 0600) when the file does not exist yet."""
    if path.exists():
        return load_kek(path), False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(b64u(key) + "\n")
    try:
        os.link(tmp, path)  # first writer wins; a concurrent start reads its key
    except FileExistsError:
        return load_kek(path), False
    finally:
        tmp.unlink()
    return Kek(kek_id(key), key), True
