"""Request and response models of the view endpoints: task lists, counts, the
queue claim and the projections' status."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ledger.api.task_models import MAX_LEASE_SECONDS, TASK_TYPE_PATTERN, TaskOut


class ClaimNext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_types: list[Annotated[str, Field(pattern=TASK_TYPE_PATTERN)]] | None = Field(
        None,
        min_length=1,
        max_length=50,
        description="claim only tasks of these types (default: any type)",
        examples=[["position_check"]],
    )
    lease_seconds: StrictInt | None = Field(
        None, ge=1, le=MAX_LEASE_SECONDS, description="default: the service's default lease"
    )


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null when this page is the last"
    )


class TaskStats(BaseModel):
    position: int = Field(description="the counts include every event up to this position")
    by_agent: dict[str, dict[str, int]] = Field(
        description="submitting agent -> status -> tasks (statuses with none are left out)"
    )
    by_task_type: dict[str, dict[str, int]] = Field(description="task type -> status -> tasks")


class ProjectionOut(BaseModel):
    name: str
    position: int = Field(description="every event up to this position is folded into the view")
    hash: str = Field(description="the hash of the event at that position (64 zeros at 0)")
    applied: int = Field(description="events this view has applied in all (its types only)")
    lag_events: int = Field(description="head position minus position")
    lag_seconds: float = Field(
        description="how long ago the oldest event not yet folded was recorded (0 when none)"
    )
    leading: bool = Field(description="whether a runner holds the projection's lead now")
    holder: str | None = Field(description="the runner that last took the lead (host:pid)")
    updated_at: str | None
    rebuilt_at: str | None


class ProjectionsOut(BaseModel):
    head_position: int
    items: list[ProjectionOut]
