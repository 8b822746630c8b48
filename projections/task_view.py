"""The task view: every task's current state, folded with ``ledger.tasks.evolve``
(the API reads it through ``ledger.views``).

One row per task (``task_view``): the whole ``TaskState`` as JSON, and the
columns the lists filter on, the queue orders by and the claim checks
(status, agent, type, priority, version, submission position). A batch loads
the states of the tasks it touches in one query, evolves them in memory in
position order and writes them back with one upsert.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from ledger import tasks, views
from ledger.db import q
from ledger.events import Envelope
from ledger.tasks import TaskState, dump_state, load_state
from projections.base import Projection

NAME = views.TASKS


def row_of(state: TaskState, created_position: int) -> dict[str, Any]:
    """What ``read`` and ``fold`` compare for one task: the state and its columns."""
    return {
        **dataclasses.asdict(state),
        "columns": {
            "agent_name": state.agent_name,
            "task_type": state.task_type,
            "status": state.status,
            "priority": state.priority,
            "version": state.version,
            "position": state.position,
            "created_position": created_position,
        },
    }


class TaskView(Projection):
    name = NAME
    event_types = tasks.TASK_EVENT_TYPES
    tables = ("task_view",)
    tables_function = "projection_tasks_tables"

    def apply_batch(self, conn: psycopg.Connection[Any], events: Sequence[Envelope]) -> None:
        ids = list(dict.fromkeys(tasks.task_id_of(e["stream"]) for e in events))
        states: dict[str, TaskState | None] = dict.fromkeys(ids)
        for tid, raw in conn.execute(q("projections", "task_states"), {"ids": ids}).fetchall():
            states[tid] = load_state(raw)
        created: dict[str, int] = {}
        for e in events:
            tid = tasks.task_id_of(e["stream"])
            before = states[tid]
            if before is None:
                created[tid] = int(e["position"])
            states[tid] = tasks.evolve(before, e)
        cols: dict[str, list[Any]] = {
            k: []
            for k in (
                "id",
                "agent_name",
                "task_type",
                "status",
                "priority",
                "version",
                "position",
                "created_position",
                "state",
            )
        }
        for tid, st in states.items():
            assert st is not None
            cols["id"].append(tid)
            cols["agent_name"].append(st.agent_name)
            cols["task_type"].append(st.task_type)
            cols["status"].append(st.status)
            cols["priority"].append(st.priority)
            cols["version"].append(st.version)
            cols["position"].append(st.position)
            # kept as it is for an existing row (the upsert does not touch it)
            cols["created_position"].append(created.get(tid, 0))
            cols["state"].append(dump_state(st))
        conn.execute(q("projections", "task_upsert"), cols)

    def fold(self, events: Iterable[Envelope]) -> dict[str, Any]:
        states: dict[str, TaskState] = {}
        created: dict[str, int] = {}
        for e in events:
            tid = tasks.task_id_of(e["stream"])
            before = states.get(tid)
            if before is None:
                created[tid] = int(e["position"])
            states[tid] = tasks.evolve(before, e)
        return {tid: row_of(st, created[tid]) for tid, st in states.items()}

    def read(self, conn: psycopg.Connection[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for row in conn.execute(q("projections", "task_all")).fetchall():
            tid, raw, *columns = row
            st = load_state(raw)
            r = row_of(st, int(columns[-1]))
            r["columns"] = dict(zip(r["columns"], columns, strict=True))
            out[tid] = r
        return out
