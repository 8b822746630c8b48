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
* ``view(state) -> dict`` is the ``GET /tasks/{id}`` shape.

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

Time enters only through commands (``lease_expires_at``, ``now``), never from
a clock here, so the same inputs always decide the same way.

A lease pauses while a task awaits approval; ``TaskApproved`` grants the
worker a fresh lease of the length it last held (approval time + that
length), so a long review does not cost the worker its task the moment it is
approved, and a worker that died meanwhile is still requeued.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ledger import errors
from ledger.appender import NewEvent

STREAM_PREFIX = "task-"

QUEUED = "queued"
RUNNING = "running"
AWAITING_APPROVAL = "awaiting_approval"
DONE = "done"
FAILED = "failed"
REJECTED = "rejected"
CANCELLED = "cancelled"
STATUSES = (QUEUED, RUNNING, AWAITING_APPROVAL, DONE, FAILED, REJECTED, CANCELLED)
FINAL = frozenset({DONE, REJECTED, CANCELLED})

STEP_KINDS = ("prompt", "model_output", "tool_call", "note")

AGENT = "agent"
OFFICER = "officer"
SERVICE = "service"

TASK_EVENT_TYPES = (
    "TaskSubmitted",
    "TaskClaimed",
    "TaskLeaseRenewed",
    "TaskStepRecorded",
    "TaskApprovalRequested",
    "TaskApproved",
    "TaskRejected",
    "TaskCompleted",
    "TaskFailed",
    "TaskRequeued",
    "TaskCancelled",
)


class Actor(Protocol):
    """Who issues a command: an authenticated principal (or the service)."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...


# -- time ----------------------------------------------------------------------


def format_time(t: datetime) -> str:
    """SPEC §1 timestamp form: ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time; its ``T`` and ``Z`` may be lowercase (§5.6)."""
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    t = datetime.fromisoformat(text[:10] + text[10:11].upper() + text[11:])
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def stream_for(task_id: str) -> str:
    return STREAM_PREFIX + task_id


def task_id_of(stream: str) -> str:
    return stream[len(STREAM_PREFIX) :] if stream.startswith(STREAM_PREFIX) else stream


# -- state and fold ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskState:
    id: str
    agent_name: str
    task_type: str
    payload: dict[str, Any]
    priority: int
    status: str
    created_at: str
    updated_at: str
    version: int
    position: int
    worker: str | None = None
    last_worker: str | None = None
    lease_expires_at: str | None = None
    lease_seconds: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool | None = None
    approval_reason: str | None = None
    officer_comment: str | None = None
    reason: str | None = None
    attempts: int = 0
    steps: int = 0


def evolve(state: TaskState | None, event: dict[str, Any]) -> TaskState:
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
        return dataclasses.replace(
            s,
            **base,
            status=RUNNING,
            worker=data["worker"],
            last_worker=data["worker"],
            lease_expires_at=data["lease_expires_at"],
            lease_seconds=_seconds_between(at, data["lease_expires_at"]),
            result=None,
            error=None,
            retryable=None,
            approval_reason=None,
            reason=None,
            attempts=s.attempts + 1,
        )
    if etype == "TaskLeaseRenewed":
        return dataclasses.replace(
            s,
            **base,
            lease_expires_at=data["lease_expires_at"],
            lease_seconds=_seconds_between(at, data["lease_expires_at"]),
        )
    if etype == "TaskStepRecorded":
        return dataclasses.replace(s, **base, steps=s.steps + 1)
    if etype == "TaskApprovalRequested":
        return dataclasses.replace(
            s,
            **base,
            status=AWAITING_APPROVAL,
            approval_reason=data.get("reason"),
            lease_expires_at=None,
        )
    if etype == "TaskApproved":
        lease = None
        if s.lease_seconds is not None:
            lease = format_time(parse_time(at) + timedelta(seconds=s.lease_seconds))
        return dataclasses.replace(
            s, **base, status=RUNNING, officer_comment=data.get("comment"), lease_expires_at=lease
        )
    if etype == "TaskRejected":
        return dataclasses.replace(
            s,
            **base,
            status=REJECTED,
            officer_comment=data.get("comment"),
            worker=None,
            lease_expires_at=None,
        )
    if etype == "TaskCompleted":
        return dataclasses.replace(
            s, **base, status=DONE, result=data.get("result"), worker=None, lease_expires_at=None
        )
    if etype == "TaskFailed":
        return dataclasses.replace(
            s,
            **base,
            status=FAILED,
            error=data.get("error"),
            retryable=bool(data.get("retryable")),
            worker=None,
            lease_expires_at=None,
        )
    if etype == "TaskRequeued":
        return dataclasses.replace(
            s, **base, status=QUEUED, reason=data.get("reason"), worker=None, lease_expires_at=None
        )
    if etype == "TaskCancelled":
        return dataclasses.replace(
            s,
            **base,
            status=CANCELLED,
            reason=data.get("reason"),
            worker=None,
            lease_expires_at=None,
        )
    return dataclasses.replace(s, **base)


def fold(events: list[dict[str, Any]], state: TaskState | None = None) -> TaskState | None:
    for e in events:
        state = evolve(state, e)
    return state


def _seconds_between(start: str, end: str) -> float:
    return (parse_time(end) - parse_time(start)).total_seconds()


def view(state: TaskState) -> dict[str, Any]:
    """The ``GET /tasks/{id}`` document (SPEC §4 fields first, then extras)."""
    return {
        "id": state.id,
        "agent_name": state.agent_name,
        "task_type": state.task_type,
        "status": state.status,
        "payload": state.payload,
        "result": state.result,
        "error": state.error,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "version": state.version,
        "position": state.position,
        "priority": state.priority,
        "worker": state.worker,
        "lease_expires_at": state.lease_expires_at,
        "retryable": state.retryable,
        "approval_reason": state.approval_reason,
        "officer_comment": state.officer_comment,
        "reason": state.reason,
        "attempts": state.attempts,
        "steps": state.steps,
    }


# -- commands ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submit:
    task_type: str
    payload: dict[str, Any]
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Claim:
    lease_expires_at: str


@dataclass(frozen=True, slots=True)
class RenewLease:
    lease_expires_at: str


@dataclass(frozen=True, slots=True)
class RecordStep:
    kind: str
    content: Any


@dataclass(frozen=True, slots=True)
class RequestApproval:
    reason: str


@dataclass(frozen=True, slots=True)
class Approve:
    comment: str


@dataclass(frozen=True, slots=True)
class Reject:
    comment: str


@dataclass(frozen=True, slots=True)
class Complete:
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Fail:
    error: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class Requeue:
    reason: str
    now: str  # when the command is decided: a running task's lease must have lapsed by then


@dataclass(frozen=True, slots=True)
class Cancel:
    reason: str


TaskCommand = (
    Submit
    | Claim
    | RenewLease
    | RecordStep
    | RequestApproval
    | Approve
    | Reject
    | Complete
    | Fail
    | Requeue
    | Cancel
)

# command class -> (event type, roles in the "who" column, statuses it may start from)
RULES: dict[type, tuple[str, frozenset[str], frozenset[str]]] = {
    Submit: ("TaskSubmitted", frozenset({AGENT}), frozenset()),
    Claim: ("TaskClaimed", frozenset({AGENT}), frozenset({QUEUED})),
    RenewLease: ("TaskLeaseRenewed", frozenset({AGENT}), frozenset({RUNNING})),
    RecordStep: ("TaskStepRecorded", frozenset({AGENT}), frozenset({RUNNING})),
    RequestApproval: ("TaskApprovalRequested", frozenset({AGENT}), frozenset({RUNNING})),
    Approve: ("TaskApproved", frozenset({OFFICER}), frozenset({AWAITING_APPROVAL})),
    Reject: ("TaskRejected", frozenset({OFFICER}), frozenset({AWAITING_APPROVAL})),
    Complete: ("TaskCompleted", frozenset({AGENT}), frozenset({RUNNING})),
    Fail: ("TaskFailed", frozenset({AGENT}), frozenset({RUNNING})),
    Requeue: ("TaskRequeued", frozenset({AGENT, OFFICER, SERVICE}), frozenset({FAILED, RUNNING})),
    Cancel: (
        "TaskCancelled",
        frozenset({AGENT, OFFICER}),
        frozenset({QUEUED, RUNNING, AWAITING_APPROVAL}),
    ),
}
VERBS: dict[type, str] = {
    Submit: "submit",
    Claim: "claim",
    RenewLease: "renew the lease",
    RecordStep: "record a step",
    RequestApproval: "request approval",
    Approve: "approve",
    Reject: "reject",
    Complete: "complete",
    Fail: "fail",
    Requeue: "requeue",
    Cancel: "cancel",
}
WORKER_MOVES = (RenewLease, RecordStep, RequestApproval, Complete, Fail)


def _illegal(state: TaskState, what: str, detail: str | None = None) -> errors.IllegalTransition:
    return errors.IllegalTransition(
        detail or f"task {state.id} is {state.status}: cannot {what} it",
        task_id=state.id,
        task_status=state.status,
        version=state.version,
    )


def decide(state: TaskState | None, command: TaskCommand, principal: Actor) -> list[NewEvent]:
    """The events ``command`` by ``principal`` produces on a task in ``state``.

    Raises NotFound, Forbidden or IllegalTransition (see the module docstring
    for the order of the checks); never returns an empty list.
    """
    etype, roles, sources = RULES[type(command)]
    what = VERBS[type(command)]
    if isinstance(command, Submit):
        if principal.role not in roles:
            raise _forbidden(principal, f"only agents submit tasks, not a {principal.role}")
        if state is not None:
            raise errors.IllegalTransition(f"task {state.id} already exists", task_id=state.id)
        return [
            NewEvent(
                etype,
                {
                    "task_type": command.task_type,
                    "payload": command.payload,
                    "priority": command.priority,
                },
            )
        ]
    if state is None:
        raise errors.NotFound("no such task")
    if principal.role not in roles:
        allowed = " or ".join(sorted(roles))
        raise _forbidden(principal, f"to {what} needs the role {allowed}, not {principal.role}")
    if state.status not in sources:
        raise _illegal(state, what)

    if isinstance(command, Claim):
        return [
            NewEvent(
                etype, {"worker": principal.name, "lease_expires_at": command.lease_expires_at}
            )
        ]
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


def _forbidden(principal: Actor, detail: str) -> errors.Forbidden:
    return errors.Forbidden(detail, actor=principal.name, role=principal.role)
