"""The projections' own folds agree with the decider's (pure: no database)."""

from __future__ import annotations

from ledger import tasks
from projections import task_counts


def test_the_counts_status_map_agrees_with_the_fold() -> None:
    mapped = set(task_counts.STATUS_AFTER)
    assert set(tasks.TASK_EVENT_TYPES) - mapped == {
        "TaskLeaseRenewed",
        "TaskStepRecorded",
    }
    base = tasks.evolve(
        None,
        {
            "type": "TaskSubmitted",
            "stream": "task-x",
            "version": 1,
            "position": 1,
            "recorded_at": "2026-01-01T00:00:00.000000Z",
            "data": {"task_type": "t", "payload": {}},
            "meta": {"actor": "a"},
        },
    )
    data = {"worker": "w", "lease_expires_at": "2026-01-01T00:01:00.000000Z", "retryable": True}
    for etype, status in task_counts.STATUS_AFTER.items():
        if etype == "TaskSubmitted":
            assert base.status == status
            continue
        e = {
            "type": etype,
            "stream": "task-x",
            "version": 2,
            "position": 2,
            "recorded_at": "2026-01-01T00:00:01.000000Z",
            "data": data,
            "meta": {},
        }
        assert tasks.evolve(base, e).status == status, etype
