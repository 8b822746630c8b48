"""The task decider (SPEC §3) without a database: every row, the "who" column,
the order of the checks, and the fold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import errors, tasks
from ledger.tasks import (
    Approve,
    Cancel,
    Claim,
    Complete,
    Fail,
    RecordStep,
    Reject,
    RenewLease,
    RequestApproval,
    Requeue,
    Submit,
    TaskState,
)


@dataclass(frozen=True)
class P:
    name: str
    role: str


SUBMITTER = P("agent-1", "agent")
WORKER = P("agent-2", "agent")
OTHER = P("agent-3", "agent")
OFFICER = P("officer-1", "officer")
AUDITOR = P("auditor-1", "auditor")
SERVICE = P("ledger-service", "service")
T0 = "2026-11-25T09:00:00.000000Z"
LEASE = "2026-11-25T09:01:00.000000Z"
BEFORE_LEASE = "2026-11-25T09:00:30.000000Z"
AFTER_LEASE = "2026-11-25T09:01:00.000001Z"


class Stream:
    """Decides and folds, the way the service does, with fake positions."""

    def __init__(self) -> None:
        self.state: TaskState | None = None
        self.events: list[dict[str, Any]] = []
        self.clock = 0

    def do(self, command: tasks.TaskCommand, who: P) -> TaskState:
        new = tasks.decide(self.state, command, who)
        assert new, "a decision that succeeds writes something"
        for e in new:
            self.clock += 1
            env = {
                "position": 100 + len(self.events) + 1,
                "stream": "task-0193f5c2-7d1e-7a55-9c3b-4f1d2e3a4b5c",
                "version": len(self.events) + 1,
                "type": e.type,
                "data": e.data,
                "meta": {"actor": who.name, "role": who.role, "request_id": "r"},
                "recorded_at": f"2026-11-25T09:00:{self.clock:02d}.000000Z",
            }
            self.events.append(env)
            self.state = tasks.evolve(self.state, env)
        assert self.state is not None
        return self.state

    def refused(self, command: tasks.TaskCommand, who: P, status: int) -> None:
        with pytest.raises(errors.LedgerError) as info:
            tasks.decide(self.state, command, who)
        assert info.value.status == status, info.value.detail


def submitted() -> Stream:
    s = Stream()
    s.do(Submit("position_check", {"symbol": "AAPL", "quantity": 250}, 5), SUBMITTER)
    return s


def running() -> Stream:
    s = submitted()
    s.do(Claim(LEASE), WORKER)
    return s


def awaiting() -> Stream:
    s = running()
    s.do(RequestApproval("large notional"), WORKER)
    return s


def test_submit_makes_a_queued_task_owned_by_the_submitter() -> None:
    s = submitted()
    assert s.events[0]["type"] == "TaskSubmitted"
    assert s.events[0]["data"] == {
        "task_type": "position_check",
        "payload": {"symbol": "AAPL", "quantity": 250},
        "priority": 5,
    }
    v = tasks.view(s.state)  # type: ignore[arg-type]
    assert v["id"] == "0193f5c2-7d1e-7a55-9c3b-4f1d2e3a4b5c"
    assert v["agent_name"] == "agent-1"
    assert v["status"] == "queued"
    assert (v["version"], v["position"]) == (1, 101)
    assert v["created_at"] == v["updated_at"] == s.events[0]["recorded_at"]
    assert v["result"] is None and v["error"] is None


@pytest.mark.parametrize("who", [OFFICER, AUDITOR, SERVICE])
def test_only_agents_submit(who: P) -> None:
    Stream().refused(Submit("x", {}), who, 403)


def test_commands_on_a_missing_task_are_404() -> None:
    Stream().refused(Claim(LEASE), WORKER, 404)


def test_any_agent_claims_a_queued_task_and_becomes_its_worker() -> None:
    s = submitted()
    st_ = s.do(Claim(LEASE), OTHER)
    assert st_.status == "running" and st_.worker == "agent-3"
    assert s.events[-1]["data"] == {"worker": "agent-3", "lease_expires_at": LEASE}
    assert st_.attempts == 1


@pytest.mark.parametrize("who", [OFFICER, AUDITOR, SERVICE])
def test_non_agents_cannot_claim(who: P) -> None:
    submitted().refused(Claim(LEASE), who, 403)


def test_a_running_task_cannot_be_claimed_again() -> None:
    running().refused(Claim(LEASE), OTHER, 409)


def test_worker_moves_belong_to_the_claimant() -> None:
    s = running()
    for cmd in (
        RenewLease(LEASE),
        RecordStep("note", "x"),
        RequestApproval("why"),
        Complete({}),
        Fail("boom", True),
    ):
        s.refused(cmd, OTHER, 403)
        s.refused(cmd, SUBMITTER, 403)
        s.refused(cmd, OFFICER, 403)


def test_lease_renewal_and_steps_keep_the_task_running() -> None:
    s = running()
    later = "2026-11-25T09:05:00.000000Z"
    st_ = s.do(RenewLease(later), WORKER)
    assert st_.status == "running" and st_.lease_expires_at == later
    st_ = s.do(RecordStep("tool_call", {"name": "price", "args": {"symbol": "AAPL"}}), WORKER)
    assert st_.status == "running" and st_.steps == 1
    assert s.events[-1]["data"]["kind"] == "tool_call"


def test_approval_round_trip_and_rejection() -> None:
    s = awaiting()
    assert s.state is not None and s.state.status == "awaiting_approval"
    assert s.state.lease_expires_at is None  # the lease pauses during review
    s.refused(Approve("ok"), WORKER, 403)  # approvals are the officer's
    s.refused(Complete({}), WORKER, 409)  # not running
    st_ = s.do(Approve("fine"), OFFICER)
    assert st_.status == "running" and st_.worker == "agent-2"
    assert st_.officer_comment == "fine"
    assert st_.lease_expires_at is not None  # a fresh lease of the same length
    s.refused(Approve("again"), OFFICER, 409)
    s.do(RequestApproval("second look"), WORKER)
    st_ = s.do(Reject("no"), OFFICER)
    assert st_.status == "rejected"
    for cmd in (Cancel("x"), Approve("x"), Requeue("x", AFTER_LEASE)):
        s.refused(cmd, OFFICER, 409)


def test_approve_and_reject_need_awaiting_approval() -> None:
    running().refused(Approve("x"), OFFICER, 409)
    running().refused(Reject("x"), OFFICER, 409)


def test_complete_is_final() -> None:
    s = running()
    st_ = s.do(Complete({"status": "processed"}), WORKER)
    assert st_.status == "done" and st_.result == {"status": "processed"}
    assert st_.worker is None and st_.lease_expires_at is None
    for cmd, who in (
        (Cancel("x"), SUBMITTER),
        (Requeue("x", AFTER_LEASE), OFFICER),
        (Claim(LEASE), OTHER),
        (Complete({}), WORKER),
    ):
        s.refused(cmd, who, 409)


def test_retryable_failure_can_be_requeued_and_claimed_again() -> None:
    s = running()
    st_ = s.do(Fail("timeout", True), WORKER)
    assert (st_.status, st_.error, st_.retryable) == ("failed", "timeout", True)
    s.refused(Requeue("retry", T0), AUDITOR, 403)
    st_ = s.do(Requeue("retry", T0), SUBMITTER)
    assert st_.status == "queued" and st_.reason == "retry"
    st_ = s.do(Claim(LEASE), OTHER)
    assert st_.attempts == 2 and st_.error is None


@pytest.mark.parametrize("who", [WORKER, SUBMITTER, OTHER, OFFICER, SERVICE])
def test_requeue_from_failed_by_any_agent_an_officer_or_the_service(who: P) -> None:
    """SPEC §3: requeue is "agent, officer or the service": any agent, unlike cancel."""
    s = running()
    s.do(Fail("timeout", True), WORKER)
    assert s.do(Requeue("retry", T0), who).status == "queued"


def test_a_final_failure_cannot_be_requeued() -> None:
    s = running()
    s.do(Fail("bad input", False), WORKER)
    s.refused(Requeue("retry", T0), OFFICER, 409)


def test_running_is_requeued_only_after_the_lease_lapsed() -> None:
    s = running()
    s.refused(Requeue("lease_expired", BEFORE_LEASE), SERVICE, 409)
    assert tasks.lease_lapsed(s.state, LEASE)  # type: ignore[arg-type]
    st_ = s.do(Requeue("lease_expired", AFTER_LEASE), SERVICE)
    assert st_.status == "queued" and st_.worker is None and st_.lease_expires_at is None
    assert s.events[-1]["data"] == {"reason": "lease_expired"}


def test_queued_and_awaiting_cannot_be_requeued() -> None:
    submitted().refused(Requeue("x", AFTER_LEASE), OFFICER, 409)
    awaiting().refused(Requeue("x", AFTER_LEASE), OFFICER, 409)


@pytest.mark.parametrize("make", [submitted, running, awaiting])
def test_cancel_by_submitter_or_officer(make: Any) -> None:
    s = make()
    s.refused(Cancel("x"), OTHER, 403)
    s.refused(Cancel("x"), AUDITOR, 403)
    if s.state.worker:
        s.refused(Cancel("x"), WORKER, 403)  # the worker did not submit it
    assert s.do(Cancel("no longer needed"), SUBMITTER).status == "cancelled"
    s2 = make()
    assert s2.do(Cancel("compliance hold"), OFFICER).status == "cancelled"
    s2.refused(Cancel("x"), OFFICER, 409)


def test_failed_cannot_be_cancelled() -> None:
    s = running()
    s.do(Fail("x", True), WORKER)
    s.refused(Cancel("x"), SUBMITTER, 409)


def test_role_is_checked_before_status_and_status_before_identity() -> None:
    s = running()
    s.do(Complete({}), WORKER)
    s.refused(Approve("x"), AUDITOR, 403)  # wrong role: 403 even on a final task
    s.refused(Complete({}), OTHER, 409)  # right role, wrong status: 409 before identity


def test_approval_restarts_the_lease_with_its_previous_length() -> None:
    s = submitted()
    s.do(Claim("2026-11-25T09:00:32.000000Z"), WORKER)  # claimed at :02, 30 s lease
    s.do(RequestApproval("check"), WORKER)
    st_ = s.do(Approve("ok"), OFFICER)  # at :04
    assert st_.lease_expires_at == "2026-11-25T09:00:34.000000Z"


def test_unknown_event_types_only_move_the_version() -> None:
    s = submitted()
    st0 = s.state
    assert st0 is not None
    env = {**s.events[0], "type": "TaskSomethingNew", "version": 2, "position": 200, "data": {}}
    st1 = tasks.evolve(st0, env)
    assert (st1.status, st1.version, st1.position) == ("queued", 2, 200)


def test_a_stream_must_start_with_a_submission() -> None:
    s = running()
    with pytest.raises(ValueError):
        tasks.evolve(None, s.events[1])


# -- random sequences against a plain table of SPEC §3 ---------------------------

# every lease in these sequences lapsed by FAR_FUTURE and holds at LONG_AGO
FAR_FUTURE = "2027-01-01T00:00:00.000000Z"
LONG_AGO = "2026-11-25T08:00:00.000000Z"
PEOPLE = [SUBMITTER, WORKER, OTHER, OFFICER, AUDITOR, SERVICE]
COMMANDS = [
    Claim(LEASE),
    RenewLease(LEASE),
    RecordStep("note", "n"),
    RequestApproval("r"),
    Approve("c"),
    Reject("c"),
    Complete({"ok": True}),
    Fail("e", True),
    Fail("e", False),
    Requeue("r", FAR_FUTURE),
    Requeue("r", LONG_AGO),
    Cancel("c"),
]


def model(
    status: str, worker: str | None, last: str | None, retryable: bool, cmd: Any, who: P
) -> int | str:
    """SPEC §3 as a table: the new status, or the refusal's HTTP status."""
    table: dict[type, tuple[set[str], set[str], str | None]] = {
        Claim: ({"agent"}, {"queued"}, "running"),
        RenewLease: ({"agent"}, {"running"}, "running"),
        RecordStep: ({"agent"}, {"running"}, "running"),
        RequestApproval: ({"agent"}, {"running"}, "awaiting_approval"),
        Approve: ({"officer"}, {"awaiting_approval"}, "running"),
        Reject: ({"officer"}, {"awaiting_approval"}, "rejected"),
        Complete: ({"agent"}, {"running"}, "done"),
        Fail: ({"agent"}, {"running"}, "failed"),
        Requeue: ({"agent", "officer", "service"}, {"failed", "running"}, "queued"),
        Cancel: ({"agent", "officer"}, {"queued", "running", "awaiting_approval"}, "cancelled"),
    }
    roles, sources, to = table[type(cmd)]
    if who.role not in roles:
        return 403
    if status not in sources:
        return 409
    if isinstance(cmd, Requeue):
        if status == "failed" and not retryable:
            return 409
        if status == "running" and cmd.now == LONG_AGO:
            return 409
    worker_move = isinstance(cmd, RenewLease | RecordStep | RequestApproval | Complete | Fail)
    if worker_move and who.name != worker:
        return 403
    if isinstance(cmd, Cancel) and who.role == "agent" and who.name != "agent-1":
        return 403
    assert to is not None
    return to


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(COMMANDS), st.sampled_from(PEOPLE)), max_size=25))
def test_random_sequences_follow_the_table(steps: list[tuple[Any, P]]) -> None:
    s = submitted()
    for cmd, who in steps:
        st_ = s.state
        assert st_ is not None
        expected = model(st_.status, st_.worker, st_.last_worker, bool(st_.retryable), cmd, who)
        before = len(s.events)
        if isinstance(expected, int):
            s.refused(cmd, who, expected)
            assert len(s.events) == before
        else:
            assert s.do(cmd, who).status == expected
            assert len(s.events) == before + 1
        # the fold of the events so far is the state the decider works on
        assert tasks.fold(s.events) == s.state
