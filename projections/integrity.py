"""Whether the ledger under a view is still a chain, before a check folds it.

``python -m projections check`` folds the events up to the view's checkpoint
and compares; on a ledger a superuser broke (an event deleted, moved or
swapped) that fold means nothing, and the decider may refuse it outright.
So the check first asks the database for the first break (one pass over
positions and hashes, no hashing), and the fold itself reports an event whose
bytes disagree with the row it was read from; either is a clean finding
(:class:`Broken`), never a traceback. Naming every break is the verifier's
job (``GET /audit/verify``, ``ledger verify``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from ledger.db import q


class Broken(Exception):
    """The ledger under the view is not intact at ``position``."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"position {position}: {reason}")
        self.position = position
        self.reason = reason


def first_break(conn: psycopg.Connection[Any], upto: int) -> Broken | None:
    """The first break in positions 1..upto, or None when they chain."""
    row = conn.execute(q("projections", "ledger_break"), {"upto": upto}).fetchone()
    if row is not None:
        position, prev_position, linked = row
        if position != prev_position + 1:
            missing = prev_position + 1
            return Broken(
                missing,
                f"position {missing} is missing (position {position} follows {prev_position})",
            )
        if not linked:
            return Broken(
                position, "its prev_hash is not the hash of the event before it (moved or edited)"
            )
    (last,) = conn.execute(q("projections", "last_position_upto"), {"upto": upto}).fetchone() or (
        0,
    )
    if last < upto:
        return Broken(last + 1, f"position {last + 1} is missing (the view has folded to {upto})")
    return None


def check_row(position: int, event: Mapping[str, object]) -> None:
    """An event read back must say the position its row has."""
    if event.get("position") != position:
        raise Broken(
            position,
            f"the row holds the event of position {event.get('position')} (events were swapped)",
        )
