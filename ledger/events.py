"""The event model (SPEC §1): what a command asks to append, what the ledger
recorded: the envelope every append answers with and every read, export and
fold works on.

* :class:`NewEvent` – a type and its data, before the ledger numbers it;
* :class:`StreamAppend` – events for one stream, appended all or none, with
  the expected version and idempotency key they are appended under;
* :data:`Envelope` – an event as committed: the SPEC §1 object itself, a dict
  with every field (what the writer answers with, and what is read back);
* :func:`system_meta` – the ``meta`` of events the ledger writes on its own
  account (lease expiry, key announcements, the operator's command line).

Nothing here touches the database: ``ledger.tasks`` (the pure decider)
builds on it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import orjson

from ledger.canonical import canonical_bytes

# The service acting on its own account (lease expiry, signing-key announcements).
SERVICE_NAME = "ledger-service"
SERVICE_ROLE = "service"


class Envelope(TypedDict):
    """One event as SPEC §1 defines it, ``hash`` included."""

    position: int
    stream: str
    version: int
    type: str
    data: dict[str, Any]
    meta: dict[str, Any]
    recorded_at: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    data: dict[str, Any]


@dataclass(slots=True)
class StreamAppend:
    """Events for one stream, appended all or none (what a task command, a key
    change or a key announcement asks of the writer).

    ``expected_version``: the stream's version the command was decided on
    (0 = the stream must not exist yet), or None to append whatever it is.
    ``idempotency``: (actor, key, request sha256) to record with the events.
    """

    stream: str
    events: Sequence[NewEvent]
    meta: dict[str, Any]
    expected_version: int | None = None
    idempotency: tuple[str, str, bytes] | None = None
    bodies: list[bytes] = field(default_factory=list)

    def prepare(self) -> None:
        """Canonical '{"data":..,"meta":..' prefixes, computed outside the lock:
        the RFC 8785 bytes of ``{"data": d, "meta": m}`` without the closing
        brace, put together from ``d``'s and ``m``'s own (an object's members
        in key order, "data" before "meta"), ``meta`` serialized once for all
        of the command's events."""
        if not self.bodies:
            meta = b',"meta":' + canonical_bytes(self.meta)
            self.bodies = [b'{"data":' + canonical_bytes(e.data) + meta for e in self.events]


def request_digest(body: Any) -> bytes:
    """What an idempotency key is bound to: the canonical request."""
    return hashlib.sha256(canonical_bytes(body)).digest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who acts: an authenticated key's principal, or the ledger itself."""

    name: str
    role: str


SERVICE = Principal(SERVICE_NAME, SERVICE_ROLE)


def envelope_from_row(canonical: bytes, hash_: bytes) -> Envelope:
    """An event read back from its stored canonical bytes and hash (never from
    jsonb, so what is read is what was hashed)."""
    event: Envelope = orjson.loads(canonical)
    event["hash"] = bytes(hash_).hex()
    return event


def system_meta(source: str, actor: str = SERVICE_NAME, role: str = SERVICE_ROLE) -> dict[str, Any]:
    """``meta`` for an event the ledger (or its operator) writes itself:
    ``source`` names what wrote it in the request id (``lease-sweep-…``)."""
    return {"actor": actor, "role": role, "request_id": f"{source}-{uuid.uuid4().hex[:12]}"}
