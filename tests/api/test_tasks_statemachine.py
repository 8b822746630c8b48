"""SPEC §3 as a plain model, and the HTTP API driven against it by hypothesis:
several agents, an officer and an auditor issue random commands; every
answer (status code, resulting status) matches the model, refused commands
write nothing, and the fold of each task's events is what GET /tasks/{id} says."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ledger import clock, leases, tasks
from ledger.settings import Settings
from tests.support import app_with_runner, auth, create_key

PEOPLE = {  # name -> role
    "agent-1": "agent",
    "agent-2": "agent",
    "agent-3": "agent",
    "officer-1": "officer",
    "auditor-1": "auditor",
}
WORKER_OPS = {"lease", "steps", "approval-request", "complete", "fail", "fail-final"}
ROLES = {
    "claim": {"agent"},
    **{op: {"agent"} for op in WORKER_OPS},
    "approve": {"officer"},
    "reject": {"officer"},
    "requeue": {"agent", "officer"},
    "cancel": {"agent", "officer"},
}
FROM = {
    "claim": {"queued"},
    **{op: {"running"} for op in WORKER_OPS},
    "approve": {"awaiting_approval"},
    "reject": {"awaiting_approval"},
    # running -> queued needs a lapsed lease: never, in real time, during this test
    "requeue": {"failed"},
    "cancel": {"queued", "running", "awaiting_approval"},
}
TO = {
    "claim": "running",
    "lease": "running",
    "steps": "running",
    "approval-request": "awaiting_approval",
    "approve": "running",
    "reject": "rejected",
    "complete": "done",
    "fail": "failed",
    "fail-final": "failed",
    "requeue": "queued",
    "cancel": "cancelled",
}
BODIES: dict[str, Any] = {
    "claim": None,
    "lease": None,
    "steps": {"kind": "note", "content": "checked the limit"},
    "approval-request": {"reason": "above desk limit"},
    "approve": {"comment": "approved"},
    "reject": {"comment": "rejected"},
    "complete": {"result": {"status": "processed"}},
    "fail": {"error": "feed down", "retryable": True},
    "fail-final": {"error": "bad input", "retryable": False},
    "requeue": {"reason": "retry"},
    "cancel": {"reason": "not needed"},
}


@dataclass
class Model:
    submitter: str
    status: str = "queued"
    worker: str | None = None
    last_worker: str | None = None
    retryable: bool = False
    version: int = 1


def expect(m: Model, op: str, who: str) -> int | str:
    """The SPEC §3 answer: the new status, or the refusal's HTTP status."""
    role = PEOPLE[who]
    if role not in ROLES[op]:
        return 403
    if m.status not in FROM[op]:
        return 409
    if op == "requeue" and not m.retryable:
        return 409
    if op in WORKER_OPS and who != m.worker:
        return 403
    if op == "cancel" and role == "agent" and who != m.submitter:
        return 403
    return TO[op]


def apply(m: Model, op: str, who: str) -> None:
    m.status = TO[op]
    m.version += 1
    if op == "claim":
        m.worker = m.last_worker = who
        m.retryable = False
    elif op in ("complete", "fail", "fail-final", "reject", "cancel", "requeue"):
        m.worker = None
    if op == "fail":
        m.retryable = True
    elif op == "fail-final":
        m.retryable = False


class TaskMachine(RuleBasedStateMachine):
    client: Any
    keys: dict[str, str]

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, Model] = {}

    task_ids = Bundle("task_ids")

    def head(self) -> int:
        r = self.client.get("/audit/head", headers=auth(self.keys["auditor-1"]))
        return int(r.json()["position"])

    @initialize(target=task_ids, who=st.sampled_from(["agent-1", "agent-2", "agent-3"]))
    def first_task(self, who: str) -> Any:
        return self.submit(who, 0)

    @precondition(lambda self: len(self.model) < 4)
    @rule(target=task_ids, who=st.sampled_from(sorted(PEOPLE)), priority=st.integers(-5, 5))
    def submit(self, who: str, priority: int) -> Any:
        before = self.head()
        body = {"task_type": "position_check", "payload": {"n": priority}, "priority": priority}
        r = self.client.post("/tasks", json=body, headers=auth(self.keys[who]))
        if PEOPLE[who] != "agent":
            assert r.status_code == 403, r.text
            assert self.head() == before
            return multiple()
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["status"] == "queued" and out["version"] == 1
        assert out["position"] == before + 1
        self.model[out["id"]] = Model(submitter=who)
        return out["id"]

    @rule(task_id=task_ids, data=st.data())
    def command(self, task_id: str, data: st.DataObject) -> None:
        self.run_command(task_id, data)

    # the same rule three more times: commands are most of what is worth exploring
    @rule(task_id=task_ids, data=st.data())
    def command_2(self, task_id: str, data: st.DataObject) -> None:
        self.run_command(task_id, data)

    @rule(task_id=task_ids, data=st.data())
    def command_3(self, task_id: str, data: st.DataObject) -> None:
        self.run_command(task_id, data)

    @rule(task_id=task_ids, data=st.data())
    def command_4(self, task_id: str, data: st.DataObject) -> None:
        self.run_command(task_id, data)

    def run_command(self, task_id: str, data: st.DataObject) -> None:
        """Half the time an op the task's status allows, mostly by a principal
        who may do it, so sequences get deep into the lifecycle; otherwise
        anything by anyone."""
        m = self.model[task_id]
        # cancel ends a task from three statuses: keep it to the "anything" branch
        legal = sorted(op for op in TO if m.status in FROM[op] and op != "cancel")
        legal += [op for op in legal if op in ("approval-request", "approve")]  # the rarer path
        op = data.draw(st.sampled_from(legal if legal and data.draw(st.booleans()) else sorted(TO)))
        anyone = data.draw(st.sampled_from(sorted(PEOPLE)))
        if op in ("approve", "reject"):
            right = "officer-1"
        elif op in WORKER_OPS:
            right = m.worker or anyone
        elif op in ("cancel", "requeue"):
            right = m.submitter
        else:
            right = anyone if PEOPLE[anyone] == "agent" else m.submitter
        who = right if data.draw(st.integers(0, 3)) else anyone
        expected = expect(m, op, who)
        before = self.head()
        path = "fail" if op == "fail-final" else op
        r = self.client.post(
            f"/tasks/{task_id}/{path}", json=BODIES[op], headers=auth(self.keys[who])
        )
        if isinstance(expected, int):
            assert r.status_code == expected, (op, who, m, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert self.head() == before, "a refused command wrote something"
            return
        assert r.status_code == (201 if op == "steps" else 200), (op, who, m, r.text)
        out = r.json()
        assert out["version"] == m.version + 1
        assert out["position"] == before + 1
        if op != "steps":
            assert out["status"] == expected
        apply(m, op, who)

    @rule()
    def leases_lapse(self) -> None:
        """Time passes beyond every lease: the service requeues each running task."""
        ctx = self.client.app.state.ctx
        at = clock.now() + timedelta(days=1)
        requeued: set[str] = set()
        while batch := self.client.portal.call(leases.sweep, ctx, at):
            requeued.update(batch)
        for task_id, m in self.model.items():
            if m.status == "running":
                assert task_id in requeued
                m.status, m.worker = "queued", None
                m.version += 1
            else:
                assert task_id not in requeued

    @rule(task_id=task_ids)
    def read_back(self, task_id: str) -> None:
        self.check(task_id)

    def check(self, task_id: str) -> None:
        m = self.model[task_id]
        key = self.keys["officer-1"]
        events = self.client.get(f"/tasks/{task_id}/events", headers=auth(key)).json()
        at_least = {"min_position": events[-1]["position"]}  # views may lag the writes
        got = self.client.get(f"/tasks/{task_id}", params=at_least, headers=auth(key)).json()
        state = tasks.fold(events)
        assert state is not None
        assert got == tasks.view(state)
        assert (got["status"], got["version"], got["worker"]) == (m.status, m.version, m.worker)
        assert got["agent_name"] == m.submitter

    def teardown(self) -> None:
        for task_id in self.model:
            self.check(task_id)


def test_the_api_follows_the_model(settings: Settings, db_url: str) -> None:
    keys = {name: create_key(db_url, name, role) for name, role in PEOPLE.items()}
    quiet = settings.model_copy(update={"lease_sweep_seconds": 0})  # time moves only by rule
    with TestClient(app_with_runner(quiet)) as client:
        TaskMachine.client = client
        TaskMachine.keys = keys
        run_state_machine_as_test(
            TaskMachine,
            settings=settings_(),
        )


def settings_() -> Any:
    return settings(
        max_examples=100,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
