"""What a reader sees of protected values (docs/privacy.md §4), given the
state of their keys: pure, so the fold's properties with erasures are tested
without a database (tests/unit/test_privacy_fold.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from ledger.privacy import crypto
from ledger.privacy.fields import MARK, READERS, marker, transform

log = structlog.get_logger("ledger.privacy")


@dataclass(frozen=True, slots=True)
class KeyState:
    """One data key as the table holds it: ``key`` is None once destroyed
    (``destroyed_by`` then names the event type, ``destroyed_position`` it)."""

    kid: str
    key: bytes | None
    destroyed_position: int | None = None
    destroyed_by: str | None = None
    unreadable: bool = False  # wrapped under a KEK this process does not hold


def readable(role: str, name: str, parties: Iterable[str | None]) -> frozenset[str]:
    """The classes a caller reads in clear in one task: those its role reads
    (``READERS``); for an agent, only in a task it submitted or worked
    (``parties``: the submitter, the worker, the last worker), on a need to know."""
    classes = frozenset(c for c, roles in READERS.items() if role in roles)
    if role == "agent" and name not in set(parties):
        return frozenset()
    return classes


def reveal(
    classes: frozenset[str],
    stream: str,
    value: Any,
    states: dict[str, KeyState],
    *,
    as_stored: bool = False,
) -> Any:
    """``value`` (from ``stream``) with each protected value as a caller who
    reads ``classes`` in clear (:func:`readable`) sees it:

    * a key the ledger does not know: the envelope as stored (not one of ours);
    * a class the caller may not read: with ``as_stored`` the envelope as
      stored (an event then still hashes), else a ``withheld`` marker, or an
      ``erased`` one once the key is destroyed;
    * a reader: the value, or an ``erased`` marker (which event, at which
      position), or ``unavailable`` when the key cannot be unwrapped or does
      not open the envelope.
    """

    def show(inner: dict[str, Any]) -> Any:
        st = states.get(inner["kid"])
        if st is None:
            return {MARK: inner}
        reader = inner.get("class") in classes
        if not reader and as_stored:
            return {MARK: inner}
        if st.key is None and st.destroyed_position is not None:
            return marker(
                inner, "erased", erased_by=st.destroyed_by, erased_at_position=st.destroyed_position
            )
        if not reader:
            return marker(inner, "withheld")
        if st.key is None:
            return marker(inner, "unavailable")
        try:
            return crypto.open_(st.key, stream, inner)
        except crypto.KeyError_:
            log.warning("protected_value_unopened", stream=stream, kid=inner["kid"])
            return marker(inner, "unavailable")

    return transform(value, show)
