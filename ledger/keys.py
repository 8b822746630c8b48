"""Principals and their API keys.

A key is shown once, when created, and stored only as its SHA-256. Creating
and revoking a key are events on stream ``principal-<name>``, so who could
act as whom is on the chain; the ``principals`` table follows those events
inside the appending transaction (a trigger in schema.sql).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

from ledger import errors
from ledger.appender import Command, NewEvent

ROLES = ("agent", "officer", "auditor", "admin")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
KEY_PREFIX = "lk_"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise errors.InvalidInput(
            "principal names are 1-64 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit",
            errors=[{"field": "name", "rule": "pattern", "message": NAME_RE.pattern}],
        )


def check_role(role: str) -> None:
    if role not in ROLES:
        raise errors.InvalidInput(
            f"role must be one of {', '.join(ROLES)}",
            errors=[{"field": "role", "rule": "enum", "message": f"one of {list(ROLES)}"}],
        )


def create_command(
    name: str, role: str, meta: dict[str, Any], *, expected_version: int | None = None
) -> tuple[str, Command]:
    """A new key for ``name`` and the command recording it. Re-creating a
    principal replaces its key (the old one stops working)."""
    check_name(name)
    check_role(role)
    key = new_key()
    data = {"name": name, "role": role, "key_sha256": key_digest(key).hex()}
    cmd = Command(
        stream=f"principal-{name}",
        events=[NewEvent("PrincipalKeyCreated", data)],
        meta=meta,
        expected_version=expected_version,
    )
    return key, cmd


def revoke_command(name: str, meta: dict[str, Any], reason: str | None = None) -> Command:
    check_name(name)
    data: dict[str, Any] = {"name": name}
    if reason:
        data["reason"] = reason
    return Command(
        stream=f"principal-{name}", events=[NewEvent("PrincipalKeyRevoked", data)], meta=meta
    )
