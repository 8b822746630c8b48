"""Task counts by status, per agent (the submitter) and per task type.

Only the events that move a task's status are read. Each task's last status
is kept (``task_counts_status``) so a move decrements the status it leaves
and increments the one it enters; the counts are ``task_counts``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import psycopg

from ledger import tasks, views
from ledger.db import q
from ledger.events import Envelope
from projections.base import Projection

NAME = views.TASK_COUNTS

# The status each event leaves a task in (SPEC §3); ledger.tasks.evolve agrees,
# which the tests check. Events not listed keep the status.
STATUS_AFTER: dict[str, str] = {
    "TaskSubmitted": tasks.QUEUED,
    "TaskClaimed": tasks.RUNNING,
    "TaskApprovalRequested": tasks.AWAITING_APPROVAL,
    "TaskApproved": tasks.RUNNING,
    "TaskRejected": tasks.REJECTED,
    "TaskCompleted": tasks.DONE,
    "TaskFailed": tasks.FAILED,
    "TaskRequeued": tasks.QUEUED,
    "TaskCancelled": tasks.CANCELLED,
}


class Key(NamedTuple):
    """A ``task_counts`` row's key."""

    dimension: str  # "agent" or "task_type"
    key: str
    status: str


class Counted(NamedTuple):
    """A ``task_counts_status`` row: what a task is counted under."""

    agent_name: str
    task_type: str
    status: str


def _moves(known: dict[str, Counted], events: Iterable[Envelope]) -> Counter[Key]:
    """Fold ``events`` into ``known`` (task id -> what it is counted under); the count deltas."""
    delta: Counter[Key] = Counter()
    for e in events:
        new = STATUS_AFTER.get(e["type"])
        if new is None:
            continue
        tid = tasks.task_id_of(e["stream"])
        if e["type"] == "TaskSubmitted" and tid not in known:
            agent = str((e.get("meta") or {}).get("actor", ""))
            ttype = str(e["data"]["task_type"])
            known[tid] = Counted(agent, ttype, new)
            delta[Key("agent", agent, new)] += 1
            delta[Key("task_type", ttype, new)] += 1
            continue
        if tid not in known:
            raise ValueError(f"{e['type']} at position {e['position']} before its TaskSubmitted")
        agent, ttype, old = known[tid]
        known[tid] = Counted(agent, ttype, new)
        for dim, key in (("agent", agent), ("task_type", ttype)):
            delta[Key(dim, key, old)] -= 1
            delta[Key(dim, key, new)] += 1
    return delta


class TaskCounts(Projection):
    name = NAME
    event_types = tuple(STATUS_AFTER)
    tables = ("task_counts", "task_counts_status")
    tables_function = "projection_task_counts_tables"

    def apply_batch(self, conn: psycopg.Connection[Any], events: Sequence[Envelope]) -> None:
        ids = list(dict.fromkeys(tasks.task_id_of(e["stream"]) for e in events))
        known: dict[str, Counted] = {
            tid: Counted(agent, ttype, status)
            for tid, agent, ttype, status in conn.execute(
                q("projections", "counts_status"), {"ids": ids}
            ).fetchall()
        }
        before = dict(known)
        delta = _moves(known, events)
        changed = [tid for tid, v in known.items() if before.get(tid) != v]
        if changed:
            conn.execute(
                q("projections", "counts_status_upsert"),
                {
                    "id": changed,
                    "agent_name": [known[t].agent_name for t in changed],
                    "task_type": [known[t].task_type for t in changed],
                    "status": [known[t].status for t in changed],
                },
            )
        moves = sorted((k, n) for k, n in delta.items() if n)
        if moves:
            conn.execute(
                q("projections", "counts_add"),
                {
                    "dimension": [k.dimension for k, _ in moves],
                    "key": [k.key for k, _ in moves],
                    "status": [k.status for k, _ in moves],
                    "n": [n for _, n in moves],
                },
            )

    def fold(self, events: Iterable[Envelope]) -> dict[str, Any]:
        known: dict[str, Counted] = {}
        counts = _moves(known, events)
        out: dict[str, Any] = {f"{d}/{k}/{s}": n for (d, k, s), n in counts.items() if n}
        out.update({f"task/{tid}": list(v) for tid, v in known.items()})
        return out

    def read(self, conn: psycopg.Connection[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            f"{d}/{k}/{s}": int(n)
            for d, k, s, n in conn.execute(q("projections", "counts_all")).fetchall()
        }
        for tid, agent, ttype, status in conn.execute(
            q("projections", "counts_status_all")
        ).fetchall():
            out[f"task/{tid}"] = [agent, ttype, status]
        return out
