"""The task domain as a decider (SPEC §3): pure, no I/O.

* ``evolve(state, event) -> state`` folds one event (a full envelope or at
  least ``stream``, ``version``, ``position``, ``type``, ``data``, ``meta``,
  ``recorded_at``) into the task's state. Commands, ``GET /tasks/{id}``,
  replay and the projections all fold with this one function, so they agree.
* ``decide(state, command, principal) -> [NewEvent]`` says which events a
  command produces, or raises: ``errors.Forbidden`` (403) when the principal is
  outside the SPEC's "who" column, ``errors.IllegalTransition`` (409) when the
  task's status does not allow the move, ``errors.NotFound`` (404) when there
  is no task. A refused command produces no events, so nothing is written.

The checks run in a fixed order, so every answer is predictable:

1. no task (state None) for anything but a submission: 404;
2. the principal's role is not in the command's column: 403;
3. the task's status does not allow the move: 409 (final statuses included);
4. the principal has the right role but is the wrong agent (a worker move by
   an agent not holding the claim, a cancel by an agent that did not submit the
   task): 403.

Who may do what (the "who" column):

=================  ===============================================================
submit             agents
claim              any agent, while the task is queued
lease, steps,      the agent holding the claim (``worker``)
approval-request,
complete, fail
approve, reject    officers
requeue            agents, officers and the service; from ``failed`` only when
                   retryable, from ``running`` only once the lease has lapsed (at
                   ``command.now``)
cancel             officers and the agent that submitted the task
=================  ===============================================================

Time enters only through commands (``lease_expires_at``, ``now``) and the
events' ``recorded_at``, never from a clock here, so the same inputs always
decide the same way.

A lease pauses while a task awaits approval; ``TaskApproved`` grants the
worker a fresh lease of the length it last held (approval time + that
length), so a long review does not cost the worker its task the moment it is
approved, and a worker that died meanwhile is still requeued.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from ledger import errors
from ledger.clock import format_time, parse_time, seconds_between
from ledger.events import NewEvent
from ledger.tasks.model import (
    AGENT,
    AWAITING_APPROVAL,
    CANCELLED,
    DONE,
    FAILED,
    OFFICER,
    QUEUED,
    REJECTED,
    RUNNING,
    SERVICE,
    Actor,
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
    TaskCommand,
    TaskState,
    replace,
    task_id_of,
)

__all__ = ["RULES", "WORKER_MOVES", "decide", "evolve", "fold", "lease_lapsed"]

# -- fold ------------------------------------------------------------------------

# The fields an event that ends a task's run clears.
_STOPPED = {"worker": None, "lease_expires_at": None}


def evolve(state: TaskState | None, event: Any) -> TaskState:
    """The state after ``event``. Unknown event types only move version/position."""
    etype = event["type"]
    data: dict[str, Any] = event.get("data") or {}
    at: str = event["recorded_at"]
    if state is None:
        if etype != "TaskSubmitted":
            raise ValueError(f"a task stream must begin with TaskSubmitted, not {etype}")
        meta = event.get("meta") or {}
        return TaskState(
            id=task_id_of(event["stream"]),
            agent_name=str(meta.get("actor", "")),
            task_type=data["task_type"],
            payload=data.get("payload") or {},
            priority=int(data.get("priority") or 0),
            status=QUEUED,
            created_at=at,
            updated_at=at,
            version=event["version"],
            position=event["position"],
        )
    # one replace per event (each costs microseconds, a replay folds hundreds):
    # every branch passes the moved version and position along with its own fields
    s = state
    base: dict[str, Any] = {
        "updated_at": at,
        "version": event["version"],
        "position": event["position"],
    }
    if etype == "TaskClaimed":
        return replace(
            s,
            **base,
            status=RUNNING,
            worker=data["worker"],
            last_worker=data["worker"],
            lease_expires_at=data["lease_expires_at"],
            lease_seconds=seconds_between(at, data["lease_expires_at"]),
            result=None,
            error=None,
            retryable=None,
            approval_reason=None,
            reason=None,
            attempts=s.attempts + 1,
        )
    if etype == "TaskLeaseRenewed":
        expires = data["lease_expires_at"]
        return replace(
            s, **base, lease_expires_at=expires, lease_seconds=seconds_between(at, expires)
        )
    if etype == "TaskStepRecorded":
        return replace(s, **base, steps=s.steps + 1)
    if etype == "TaskApprovalRequested":
        return replace(
            s, **base, status=AWAITING_APPROVAL, approval_reason=data.get("reason"),
            lease_expires_at=None,
        )  # fmt: skip
    if etype == "TaskApproved":
        lease = None
        if s.lease_seconds is not None:
            lease = format_time(parse_time(at) + timedelta(seconds=s.lease_seconds))
        return replace(
            s, **base, status=RUNNING, officer_comment=data.get("comment"), lease_expires_at=lease
        )
    if etype == "TaskRejected":
        return replace(s, **base, **_STOPPED, status=REJECTED, officer_comment=data.get("comment"))
    if etype == "TaskCompleted":
        return replace(s, **base, **_STOPPED, status=DONE, result=data.get("result"))
    if etype == "TaskFailed":
        return replace(
            s, **base, **_STOPPED, status=FAILED, error=data.get("error"),
            retryable=bool(data.get("retryable")),
        )  # fmt: skip
    if etype == "TaskRequeued":
        return replace(s, **base, **_STOPPED, status=QUEUED, reason=data.get("reason"))
    if etype == "TaskCancelled":
        return replace(s, **base, **_STOPPED, status=CANCELLED, reason=data.get("reason"))
    return replace(s, **base)


def fold(events: Iterable[Any], state: TaskState | None = None) -> TaskState | None:
    for e in events:
        state = evolve(state, e)
    return state


# -- decide ----------------------------------------------------------------------

# command class -> (event type, roles in the "who" column, statuses it may start from, verb)
RULES: dict[type, tuple[str, frozenset[str], frozenset[str], str]] = {
    Submit: ("TaskSubmitted", frozenset({AGENT}), frozenset(), "submit"),
    Claim: ("TaskClaimed", frozenset({AGENT}), frozenset({QUEUED}), "claim"),
    RenewLease: ("TaskLeaseRenewed", frozenset({AGENT}), frozenset({RUNNING}), "renew the lease"),
    RecordStep: ("TaskStepRecorded", frozenset({AGENT}), frozenset({RUNNING}), "record a step"),
    RequestApproval: (
        "TaskApprovalRequested",
        frozenset({AGENT}),
        frozenset({RUNNING}),
        "request approval",
    ),
    Approve: ("TaskApproved", frozenset({OFFICER}), frozenset({AWAITING_APPROVAL}), "approve"),
    Reject: ("TaskRejected", frozenset({OFFICER}), frozenset({AWAITING_APPROVAL}), "reject"),
    Complete: ("TaskCompleted", frozenset({AGENT}), frozenset({RUNNING}), "complete"),
    Fail: ("TaskFailed", frozenset({AGENT}), frozenset({RUNNING}), "fail"),
    Requeue: (
        "TaskRequeued",
        frozenset({AGENT, OFFICER, SERVICE}),
        frozenset({FAILED, RUNNING}),
        "requeue",
    ),
    Cancel: (
        "TaskCancelled",
        frozenset({AGENT, OFFICER}),
        frozenset({QUEUED, RUNNING, AWAITING_APPROVAL}),
        "cancel",
    ),
}
WORKER_MOVES = (RenewLease, RecordStep, RequestApproval, Complete, Fail)


def decide(state: TaskState | None, command: TaskCommand, principal: Actor) -> list[NewEvent]:
    """The events ``command`` by ``principal`` produces on a task in ``state``.

    Raises NotFound, Forbidden or IllegalTransition (see the module docstring
    for the order of the checks); never returns an empty list.
    """
    etype, roles, sources, what = RULES[type(command)]
    if isinstance(command, Submit):
        if principal.role not in roles:
            raise _forbidden(principal, f"only agents submit tasks, not a {principal.role}")
        if state is not None:
            raise errors.IllegalTransition(f"task {state.id} already exists", task_id=state.id)
        data = {"task_type": command.task_type, "payload": command.payload}
        return [NewEvent(etype, {**data, "priority": command.priority})]
    if state is None:
        raise errors.NotFound("no such task")
    if principal.role not in roles:
        allowed = " or ".join(sorted(roles))
        raise _forbidden(principal, f"to {what} needs the role {allowed}, not {principal.role}")
    if state.status not in sources:
        raise _illegal(state, what)

    if isinstance(command, Claim):
        data = {"worker": principal.name, "lease_expires_at": command.lease_expires_at}
        return [NewEvent(etype, data)]
    if isinstance(command, WORKER_MOVES) and principal.name != state.worker:
        raise _forbidden(
            principal,
            f"task {state.id} is claimed by {state.worker}: only that worker may {what}",
        )
    if isinstance(command, RenewLease):
        return [NewEvent(etype, {"lease_expires_at": command.lease_expires_at})]
    if isinstance(command, RecordStep):
        return [NewEvent(etype, {"kind": command.kind, "content": command.content})]
    if isinstance(command, RequestApproval):
        return [NewEvent(etype, {"reason": command.reason})]
    if isinstance(command, Approve | Reject):
        return [NewEvent(etype, {"comment": command.comment})]
    if isinstance(command, Complete):
        return [NewEvent(etype, {"result": command.result})]
    if isinstance(command, Fail):
        return [NewEvent(etype, {"error": command.error, "retryable": command.retryable})]
    if isinstance(command, Requeue):
        if state.status == FAILED and not state.retryable:
            raise _illegal(
                state, what, f"task {state.id} failed without retry; it cannot be requeued"
            )
        if state.status == RUNNING and not lease_lapsed(state, command.now):
            raise _illegal(
                state,
                what,
                f"task {state.id} is running and its lease holds until {state.lease_expires_at}; "
                "a running task is requeued only once its lease has lapsed",
            )
        # SPEC §3: "agent, officer or the service" (cancel, by contrast, names
        # the submitting agent): any agent may put a retryable task back.
        return [NewEvent(etype, {"reason": command.reason})]
    if isinstance(command, Cancel):
        if principal.role == AGENT and principal.name != state.agent_name:
            raise _forbidden(
                principal, f"only the submitting agent or an officer may cancel task {state.id}"
            )
        return [NewEvent(etype, {"reason": command.reason})]
    raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover


def lease_lapsed(state: TaskState, now: str) -> bool:
    """True when a running task's lease has expired at ``now``."""
    if state.status != RUNNING or state.lease_expires_at is None:
        return False
    return parse_time(state.lease_expires_at) <= parse_time(now)


def _illegal(state: TaskState, what: str, detail: str | None = None) -> errors.IllegalTransition:
    return errors.IllegalTransition(
        detail or f"task {state.id} is {state.status}: cannot {what} it",
        task_id=state.id,
        task_status=state.status,
        version=state.version,
    )


def _forbidden(principal: Actor, detail: str) -> errors.Forbidden:
    return errors.Forbidden(detail, actor=principal.name, role=principal.role)
