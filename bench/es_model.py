"""The aggregate the ``eventsourcing`` comparator saves: a task that is
submitted and records steps (the library wants it importable by topic)."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate, event


class BenchTask(Aggregate):
    @event("Submitted")
    def __init__(self, task_type: str, payload: dict[str, Any]) -> None:
        self.task_type = task_type
        self.payload = payload
        self.steps = 0

    @event("StepRecorded")
    def record_step(self, kind: str, content: str) -> None:
        self.steps += 1
