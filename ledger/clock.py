"""Time and ids: the SPEC §1 timestamp form, RFC 3339 parsing, UUIDv7.

Pure helpers; the decider takes time only through its commands, so these are
called by the command layer and the routes, never by ``ledger.tasks``'s
decisions themselves (which only compare the strings it is given).
"""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta


def now() -> datetime:
    return datetime.now(UTC)


def format_time(t: datetime) -> str:
    """SPEC §1 timestamp form: ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time; its ``T`` and ``Z`` may be lowercase (§5.6)."""
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    t = datetime.fromisoformat(text[:10] + text[10:11].upper() + text[11:])
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def seconds_between(start: str, end: str) -> float:
    return (parse_time(end) - parse_time(start)).total_seconds()


def lease_until(seconds: float, at: datetime | None = None) -> str:
    """``lease_expires_at`` for a lease of ``seconds`` from ``at`` (default now)."""
    return format_time((at or now()) + timedelta(seconds=seconds))


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit ms timestamp, 74 random bits."""
    ms = time.time_ns() // 1_000_000
    rand = secrets.randbits(74)
    value = (
        (ms & ((1 << 48) - 1)) << 80
        | 0x7 << 76
        | (rand >> 62) << 64
        | 0b10 << 62
        | (rand & ((1 << 62) - 1))
    )
    return uuid.UUID(int=value)
