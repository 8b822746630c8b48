"""What the console shows, computed from events: pure, no I/O.

The same fold as replay (``ledger.tasks.evolve``) gives the task as it stood
after each event; :func:`node` says how a JSON value is drawn, so a value the
ledger later marks (protected, erased) needs one more kind here and one more
branch in ``templates/_value.html``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ledger import tasks
from ledger.privacy.fields import MARK

SHOWN_OF_PROTECTED = ("class", "subject", "field", "erased_by", "erased_at_position")
LONG_TEXT = 280  # characters: longer strings (or several lines) are folded
LONG_LINES = 4
BIG_CONTAINER = 12  # objects and arrays with more items are folded


@dataclass(frozen=True, slots=True)
class Node:
    """A JSON value as the templates draw it."""

    kind: str  # null | bool | number | text | long_text | object | array | protected
    text: str = ""
    items: tuple[tuple[str, Any], ...] = ()
    folded: bool = False
    size: int = 0


def node(value: Any) -> Node:
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get(MARK), dict):
        # a protected value the reader does not see in clear (docs/privacy.md)
        inner = value[MARK]
        status = str(inner.get("status", "protected"))
        shown = tuple((str(k), v) for k, v in inner.items() if k in SHOWN_OF_PROTECTED)
        return Node("protected", status, items=shown)
    if value is None:
        return Node("null", "null")
    if isinstance(value, bool):
        return Node("bool", "true" if value else "false")
    if isinstance(value, int | float):
        return Node("number", repr(value) if isinstance(value, float) else str(value))
    if isinstance(value, str):
        long = len(value) > LONG_TEXT or value.count("\n") >= LONG_LINES
        if long:
            first = value.strip().split("\n", 1)[0]
            preview = first[:120] + ("…" if len(first) > 120 or "\n" in value.strip() else "")
            return Node("long_text", value, items=(("preview", preview),), size=len(value))
        return Node("text", value, size=len(value))
    if isinstance(value, dict):
        items = tuple((str(k), v) for k, v in value.items())
        return Node("object", items=items, folded=len(items) > BIG_CONTAINER, size=len(items))
    if isinstance(value, list):
        items = tuple((str(i), v) for i, v in enumerate(value))
        return Node("array", items=items, folded=len(items) > BIG_CONTAINER, size=len(items))
    return Node("text", str(value))


@dataclass(frozen=True, slots=True)
class Change:
    field: str
    before: Any
    after: Any
    added: bool  # the field had no value before


@dataclass(frozen=True, slots=True)
class Step:
    """One event of the timeline with the task as it stood after it."""

    event: dict[str, Any]
    summary: str
    state: dict[str, Any]
    changes: list[Change]
    inside_checkpoint: bool


def diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[Change]:
    """The fields whose values differ between two task views (version and
    position move with every event and are left out)."""
    out = []
    for field, value in after.items():
        if field in ("version", "position", "updated_at"):
            continue
        old = before.get(field) if before else None
        if before is None or old != value:
            if before is None and value is None:
                continue
            out.append(Change(field, old, value, before is None or old is None))
    return out


def summary(event: dict[str, Any]) -> str:
    """What the event did, in a line."""
    data = event.get("data") or {}
    kind = event["type"]
    texts: dict[str, Callable[[], str]] = {
        "TaskSubmitted": lambda: f"Submitted a task of type {data.get('task_type')}",
        "TaskClaimed": lambda: f"Claimed by {data.get('worker')}",
        "TaskLeaseRenewed": lambda: f"Lease renewed until {data.get('lease_expires_at')}",
        "TaskStepRecorded": lambda: (
            f"Step recorded: {STEP_LABELS.get(str(data.get('kind')), str(data.get('kind')))}"
        ),
        "TaskApprovalRequested": lambda: "Approval requested",
        "TaskApproved": lambda: "Approved",
        "TaskRejected": lambda: "Rejected",
        "TaskCompleted": lambda: "Completed",
        "TaskFailed": lambda: "Failed" + (" (retryable)" if data.get("retryable") else ""),
        "TaskRequeued": lambda: "Requeued",
        "TaskCancelled": lambda: "Cancelled",
    }
    make = texts.get(kind)
    return make() if make else kind


STEP_LABELS = {
    "prompt": "prompt",
    "model_output": "model output",
    "tool_call": "tool call",
    "note": "note",
}
# Keys a tool call's content is read by, in the order they are looked for.
TOOL_NAME = ("tool", "name", "function")
TOOL_ARGS = ("arguments", "args", "input", "parameters")
TOOL_RESULT = ("result", "output", "response", "return")


def tool_call(content: Any) -> dict[str, Any] | None:
    """A tool call's name, arguments and result, when its content says them."""
    if not isinstance(content, dict):
        return None

    def pick(keys: tuple[str, ...]) -> tuple[str | None, Any]:
        for k in keys:
            if k in content:
                return k, content[k]
        return None, None

    name_key, name = pick(TOOL_NAME)
    args_key, args = pick(TOOL_ARGS)
    result_key, result = pick(TOOL_RESULT)
    if name_key is None and args_key is None:
        return None
    used = {name_key, args_key, result_key}
    rest = {k: v for k, v in content.items() if k not in used}
    return {
        "name": name,
        "arguments": args,
        "result": result,
        "has_result": result_key is not None,
        "rest": rest,
    }


def timeline(
    events: Sequence[Any],
    checkpoint_size: int | None,
    views: Sequence[dict[str, Any]] | None = None,
) -> list[Step]:
    """Each event with the task as it stood after it (the replay fold) and
    what changed from the state before. ``views``: those states as the reader
    may see them (``console.shown``), when already folded."""
    out: list[Step] = []
    state: tasks.TaskState | None = None
    before: dict[str, Any] | None = None
    for i, event in enumerate(events):
        if views is None:
            state = tasks.evolve(state, event)
            after = tasks.view(state)
        else:
            after = views[i]
        inside = checkpoint_size is not None and event["position"] <= checkpoint_size
        out.append(Step(event, summary(event), after, diff(before, after), inside))
        before = after
    return out
