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
from dataclasses import dataclass
from typing import Any

from ledger import errors
from ledger.events import NewEvent, StreamAppend

ROLES = ("agent", "officer", "auditor", "admin")
# Names the ledger itself acts under (meta.actor of the lease sweeper, the
# checkpoint signer and the command line; older signing-key announcements say
# "service"): nobody may hold a key in them.
RESERVED = frozenset({"ledger-service", "operator", "service"})
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
KEY_PREFIX = "lk_"


@dataclass(frozen=True, slots=True)
class PrincipalState:
    """A principal as it stands (the ``principal_state`` query's row)."""

    role: str
    revoked_position: int | None
    version: int  # of its stream, principal-<name>


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
) -> tuple[str, StreamAppend]:
    """A new key for ``name`` and the command recording it. Re-creating a
    principal replaces its key (the old one stops working)."""
    check_name(name)
    check_role(role)
    key = new_key()
    data = {"name": name, "role": role, "key_sha256": key_digest(key).hex()}
    cmd = StreamAppend(
        stream=f"principal-{name}",
        events=[NewEvent("PrincipalKeyCreated", data)],
        meta=meta,
        expected_version=expected_version,
    )
    return key, cmd


def plan_create(
    name: str,
    role: str,
    meta: dict[str, Any],
    current: PrincipalState | None,
    *,
    replace: bool = False,
    how_to_replace: str = 'send "replace": true',
) -> tuple[str, StreamAppend]:
    """``create_command`` with the rules a person issuing keys expects:
    ``current`` is the principal as it stands, or None. An active principal keeps its key unless
    ``replace`` says to issue a new one (the old one then stops working);
    reserved names are refused; the append expects the version seen, so two
    admins racing cannot both think they made the key."""
    check_name(name)
    check_role(role)
    if name in RESERVED:
        raise errors.InvalidInput(
            f"{name!r} is the ledger's own name; choose another",
            errors=[{"field": "name", "rule": "reserved", "message": ", ".join(sorted(RESERVED))}],
        )
    if current is not None and current.revoked_position is None and not replace:
        raise errors.Conflict(
            f"{name!r} already has an active {current.role} key; to issue a new one (the old key "
            f"stops working) {how_to_replace}, or revoke it first",
            name=name,
            role=current.role,
        )
    return create_command(name, role, meta, expected_version=current.version if current else 0)


def plan_revoke(
    name: str, current: PrincipalState | None, meta: dict[str, Any], reason: str | None = None
) -> StreamAppend:
    """The revocation of ``name``'s key: refused when there is no such principal
    (404) or its key is revoked already (409)."""
    check_name(name)
    if current is None:
        raise errors.NotFound(f"no principal named {name!r}")
    if current.revoked_position is not None:
        raise errors.Conflict(
            f"the key of {name!r} was already revoked at position {current.revoked_position}"
        )
    data: dict[str, Any] = {"name": name}
    if reason:
        data["reason"] = reason
    return StreamAppend(
        stream=f"principal-{name}",
        events=[NewEvent("PrincipalKeyRevoked", data)],
        meta=meta,
        expected_version=current.version,
    )
