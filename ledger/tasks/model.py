"""The task domain's vocabulary (SPEC §3): statuses, event types, the commands
a principal may send, and the state a task's events fold into.

Pure data; :mod:`ledger.tasks.decider` says what each command does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

__all__ = [
    "AGENT", "AWAITING_APPROVAL", "CANCELLED", "DONE", "FAILED", "FINAL", "OFFICER", "QUEUED",
    "REJECTED", "RUNNING", "SERVICE", "STATUSES", "STEP_KINDS", "STREAM_PREFIX",
    "TASK_EVENT_TYPES", "Actor", "Approve", "Cancel", "Claim", "Complete", "Fail", "RecordStep",
    "Reject", "RenewLease", "RequestApproval", "Requeue", "Submit", "TaskCommand", "TaskState",
    "dump_state", "load_state", "stream_for", "task_id_of", "view",
]  # fmt: skip

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


def stream_for(task_id: str) -> str:
    return STREAM_PREFIX + task_id


def task_id_of(stream: str) -> str:
    return stream[len(STREAM_PREFIX) :] if stream.startswith(STREAM_PREFIX) else stream


# -- state ---------------------------------------------------------------------


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


VIEW_FIELDS = (
    # SPEC §4's GET /tasks/{id} fields first, then the extras
    "id",
    "agent_name",
    "task_type",
    "status",
    "payload",
    "result",
    "error",
    "created_at",
    "updated_at",
    "version",
    "position",
    "priority",
    "worker",
    "lease_expires_at",
    "retryable",
    "approval_reason",
    "officer_comment",
    "reason",
    "attempts",
    "steps",
)


def view(state: TaskState) -> dict[str, Any]:
    """The ``GET /tasks/{id}`` document."""
    return {name: getattr(state, name) for name in VIEW_FIELDS}


def dump_state(state: TaskState) -> bytes:
    """How the task view stores a state (JSON bytes: jsonb would refuse U+0000)."""
    return orjson.dumps(state)


def load_state(raw: bytes | memoryview) -> TaskState:
    return TaskState(**orjson.loads(bytes(raw)))


def replace(state: TaskState, **changes: Any) -> TaskState:
    return dataclasses.replace(state, **changes)


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
