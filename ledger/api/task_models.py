"""Request and response models of the task endpoints (SPEC §4)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from ledger.api.models import EventOut

# A name, not free text: letters, digits and _ . : / - (no spaces), up to 128.
TASK_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
PRIORITY_LIMIT = 2**31 - 1
Status = Literal[
    "queued", "running", "awaiting_approval", "done", "failed", "rejected", "cancelled"
]
StepKind = Literal["prompt", "model_output", "tool_call", "note"]
MAX_LEASE_SECONDS = 3600


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _text(description: str) -> Any:
    return Field(min_length=1, max_length=4000, description=description)


class TaskSubmit(_Body):
    task_type: str = Field(
        pattern=TASK_TYPE_PATTERN,
        description="1-128 characters: letters, digits, '_', '.', ':', '/', '-'; no spaces",
        examples=["position_check"],
    )
    payload: dict[str, Any] = Field(
        description="a JSON object", examples=[{"symbol": "AAPL", "quantity": 250}]
    )
    priority: StrictInt = Field(
        0, ge=-PRIORITY_LIMIT, le=PRIORITY_LIMIT, description="higher is claimed first"
    )


class LeaseRequest(_Body):
    lease_seconds: StrictInt | None = Field(
        None, ge=1, le=MAX_LEASE_SECONDS, description="default: the service's default lease"
    )


class StepRequest(_Body):
    kind: StepKind
    content: str | dict[str, Any] | list[Any] = Field(
        description="the prompt, model output, tool call or note: text or JSON"
    )


class ReasonRequest(_Body):
    reason: str = _text("why")


class CommentRequest(_Body):
    comment: str = _text("the officer's comment")


class CompleteRequest(_Body):
    result: dict[str, Any] = Field(description="a JSON object")


class FailRequest(_Body):
    error: str = _text("what went wrong")
    retryable: StrictBool = Field(description="whether the task may be requeued")


class TaskOut(BaseModel):
    id: str
    agent_name: str = Field(description="the agent that submitted the task")
    task_type: str
    status: Status
    payload: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    created_at: str
    updated_at: str
    version: int = Field(description="the task stream's version: send as If-Match")
    position: int = Field(description="the ledger position of the task's last event")
    priority: int
    worker: str | None = Field(description="the agent holding the claim")
    lease_expires_at: str | None
    retryable: bool | None
    approval_reason: str | None
    officer_comment: str | None
    reason: str | None = Field(description="the last requeue or cancel reason")
    attempts: int = Field(description="how many times the task was claimed")
    steps: int = Field(description="how many steps were recorded")


class TaskSubmitted(BaseModel):
    id: str
    status: Status
    version: int
    position: int


class Written(BaseModel):
    version: int
    position: int


class Replay(BaseModel):
    state: TaskOut | None = Field(description="the task as it stood then; null before it existed")
    events: list[EventOut] = Field(description="the events that made that state")
