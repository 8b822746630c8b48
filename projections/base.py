"""What a projection is: a name, the event types it handles and ``apply_batch``,
plus how to make its tables, fold the ledger from scratch and read its live
view in the same shape (so ``python -m projections check`` can compare)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from ledger.events import Envelope


class Projection:
    """Base class: subclasses set the attributes and implement the methods."""

    name: str = ""
    event_types: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    # the SQL function (schema.sql) that makes this projection's tables in a schema
    tables_function: str = ""

    def apply(self, conn: psycopg.Connection[Any], event: Envelope) -> None:
        """Fold one event (a full envelope) into the view, inside the caller's transaction."""
        self.apply_batch(conn, [event])

    def apply_batch(self, conn: psycopg.Connection[Any], events: Sequence[Envelope]) -> None:
        """Fold events in position order; the default applies them one by one."""
        for event in events:
            self.apply(conn, event)

    def fold(self, events: Iterable[Envelope]) -> dict[str, Any]:
        """The view folded from scratch, in plain Python: key -> row."""
        raise NotImplementedError

    def read(self, conn: psycopg.Connection[Any]) -> dict[str, Any]:
        """The live view, in the shape ``fold`` gives."""
        raise NotImplementedError
