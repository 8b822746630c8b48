"""Projections: views folded from the ledger by a checkpointed runner.

A projection (``projections.base.Projection``) is a name, the event types it
handles and ``apply_batch(conn, events)``. ``projections.runner`` reads the
events after its checkpoint in position order, applies them and moves the
checkpoint in one transaction. Each projection also says how to make its
tables in a schema (so a rebuild can make fresh ones), how to fold the ledger
from scratch in plain Python, and how to read its live view in the same shape,
so ``ledger projections check`` can compare the two.

This package builds on ``ledger`` (the fold, the database, the names the API
reads the views by, ``ledger.views``); ``ledger`` never imports it.
"""

from __future__ import annotations

from projections.base import Projection
from projections.task_counts import TaskCounts
from projections.task_view import TaskView


def registry() -> dict[str, Projection]:
    """Every projection, by name: the list the runner, rebuild and check use."""
    found: list[Projection] = [TaskView(), TaskCounts()]
    return {p.name: p for p in found}
