"""Retention (docs/privacy.md §7): a finished task of a type with a retention
period has its protected fields expire that many days after its last event,
unless a legal hold covers the task, one of its subjects or its task type.
Expiry destroys the task's data keys with a ``RetentionExpired`` event (one
per task type and run, on a stream ``retention-<id>``) that says who let
what expire, when, and under which rule.

:func:`plan` is what would expire at a moment; :func:`apply` expires it.
Both work on a plain (sync) connection: ``ledger retention`` runs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg

from ledger import clock, errors
from ledger.appender import append_sync
from ledger.db import q
from ledger.events import NewEvent, StreamAppend
from ledger.privacy.fields import REGISTRY, Registry
from ledger.tasks import task_id_of

STREAM_PREFIX = "retention-"
# The task's last event says it is finished: nothing more will be recorded.
FINISHED = {"TaskCompleted", "TaskRejected", "TaskCancelled"}


@dataclass(slots=True)
class Expiry:
    """The tasks of one task type whose protected fields expire under one rule."""

    task_type: str
    rule: str
    retention_days: int
    cutoff: str
    tasks: list[dict[str, Any]] = field(default_factory=list)  # task id, last event, keys
    held: list[dict[str, Any]] = field(default_factory=list)  # due, but held: by which holds

    @property
    def keys(self) -> list[str]:
        return sorted(k for t in self.tasks for k in t["keys"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_type": self.task_type,
            "rule": self.rule,
            "retention_days": self.retention_days,
            "cutoff": self.cutoff,
            "tasks": self.tasks,
            "held": self.held,
        }


def _finished(last_type: str, canonical: bytes) -> bool:
    if last_type in FINISHED:
        return True
    if last_type == "TaskFailed":  # a failure that may not be retried is final too
        data = orjson.loads(bytes(canonical)).get("data") or {}
        return data.get("retryable") is False
    return False


def _holds(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for stream, scope, target, _p in conn.execute(q("privacy", "active_holds")).fetchall():
        out.setdefault((scope, target), []).append(stream)
    return out


def plan(
    conn: psycopg.Connection[Any], as_of: datetime, registry: Registry = REGISTRY
) -> list[Expiry]:
    """What expires at ``as_of``: per task type with a retention period, the
    finished tasks past it (and those past it but held, with their holds)."""
    holds = _holds(conn)
    out: list[Expiry] = []
    for policy in registry.with_retention():
        assert policy.retention_days is not None
        cutoff = as_of - timedelta(days=policy.retention_days)
        ex = Expiry(policy.task_type, policy.rule, policy.retention_days, clock.format_time(cutoff))
        rows = conn.execute(
            q("privacy", "retention_candidates"), {"types": [policy.task_type], "cutoff": cutoff}
        ).fetchall()
        for stream, _tt, kids, subjects, last_type, last_at, canonical in rows:
            if not _finished(last_type, canonical):
                continue
            task_id = task_id_of(stream)
            held = [
                *holds.get(("task", task_id), []),
                *holds.get(("task_type", policy.task_type), []),
                *(h for s in sorted(set(subjects)) for h in holds.get(("subject", s), [])),
            ]
            item = {"task_id": task_id, "last_event_at": last_at, "keys": list(kids)}
            if held:
                ex.held.append({**item, "holds": sorted(set(held))})
            else:
                ex.tasks.append(item)
        if ex.tasks or ex.held:
            out.append(ex)
    return out


def apply(
    conn: psycopg.Connection[Any],
    as_of: datetime,
    meta: dict[str, Any],
    registry: Registry = REGISTRY,
) -> list[dict[str, Any]]:
    """Expire what :func:`plan` finds at ``as_of``: one RetentionExpired per
    task type, whose trigger destroys the listed keys as it is appended.
    Returns what was appended (task type, tasks, keys, position)."""
    done: list[dict[str, Any]] = []
    for ex in plan(conn, as_of, registry):
        if not ex.tasks:
            continue
        data = {
            "rule": ex.rule,
            "task_type": ex.task_type,
            "retention_days": ex.retention_days,
            "as_of": clock.format_time(as_of),
            "cutoff": ex.cutoff,
            "tasks": [t["task_id"] for t in ex.tasks],
            "keys": ex.keys,
        }
        stream = STREAM_PREFIX + str(clock.uuid7())
        try:
            (res,) = append_sync(
                conn, [StreamAppend(stream, [NewEvent("RetentionExpired", data)], meta, 0)]
            )
        except psycopg.errors.CheckViolation:
            # the database refused it: a hold placed since the plan covers some of it
            raise errors.Conflict(
                f"a legal hold was placed on {ex.task_type} tasks while they were planned to "
                "expire; nothing of them expired: run again"
            ) from None
        if isinstance(res, errors.LedgerError):
            raise res
        done.append({**data, "stream": stream, "position": res[0]["position"]})
    return done
