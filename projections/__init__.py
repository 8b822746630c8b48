"""Projections: views folded from the ledger by a checkpointed runner.

A projection is a name, the event types it handles and ``apply(conn,
event)`` (``apply_batch`` for many at once). ``projections.runner`` reads the
events after its checkpoint in position order and applies them and moves the
checkpoint in one transaction. Each projection also says how to make its
tables in a schema (so a rebuild can make fresh ones), how to fold the ledger
from scratch in plain Python, and how to read its live view in the same shape,
so ``ledger projections check`` can compare the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg


class Projection:
    """Base class: subclasses set the attributes and implement the methods."""

    name: str = ""
    event_types: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    # the SQL function (schema.sql) that makes this projection's tables in a schema
    tables_function: str = ""

    def apply(self, conn: psycopg.Connection[Any], event: dict[str, Any]) -> None:
        """Fold one event (a full envelope) into the view, inside the caller's transaction."""
        self.apply_batch(conn, [event])

    def apply_batch(self, conn: psycopg.Connection[Any], events: Sequence[dict[str, Any]]) -> None:
        """Fold events in position order; the default applies them one by one."""
        for event in events:
            self.apply(conn, event)

    def fold(self, events: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """The view folded from scratch, in plain Python: key -> row."""
        raise NotImplementedError

    def read(self, conn: psycopg.Connection[Any]) -> dict[str, Any]:
        """The live view, in the shape ``fold`` gives."""
        raise NotImplementedError


def registry() -> dict[str, Projection]:
    """Every projection, by name."""
    from projections.task_counts import TaskCounts
    from projections.task_view import TaskView

    found: list[Projection] = [TaskView(), TaskCounts()]
    return {p.name: p for p in found}
