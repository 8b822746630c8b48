"""What the console draws from events (pure): the value kinds, the fold per
event (the replay fold), the differences, and tool calls read from steps."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ledger import tasks
from ledger.console import present
from ledger.console.pdf import latin


def _event(
    version: int, type_: str, data: dict[str, Any], actor: str = "agent-1"
) -> dict[str, Any]:
    return {
        "position": version * 3,
        "stream": "task-0193f5c2-0000-7000-8000-000000000001",
        "version": version,
        "type": type_,
        "data": data,
        "meta": {"actor": actor, "role": "agent", "request_id": "r"},
        "recorded_at": f"2026-11-25T09:00:0{version}.000000Z",
        "prev_hash": "0" * 64,
        "hash": "1" * 64,
    }


HISTORY = [
    _event(1, "TaskSubmitted", {"task_type": "pricing_check", "payload": {"isin": "XS1"}}),
    _event(
        2, "TaskClaimed", {"worker": "agent-1", "lease_expires_at": "2026-11-25T09:01:00.000000Z"}
    ),
    _event(
        3,
        "TaskStepRecorded",
        {"kind": "tool_call", "content": {"tool": "px", "args": {"isin": "XS1"}, "output": 101.5}},
    ),
    _event(4, "TaskApprovalRequested", {"reason": "price moved 4%"}),
    _event(5, "TaskApproved", {"comment": "ok"}, actor="officer-1"),
]


def test_each_step_is_the_replay_fold_up_to_that_event() -> None:
    steps = present.timeline(HISTORY, checkpoint_size=9)
    for k, step in enumerate(steps, 1):
        folded = tasks.fold(HISTORY[:k])
        assert folded is not None
        assert step.state == tasks.view(folded)
    assert [s.inside_checkpoint for s in steps] == [True, True, True, False, False]
    assert [s.state["status"] for s in steps] == [
        "queued", "running", "running", "awaiting_approval", "running",
    ]  # fmt: skip


def test_the_difference_names_what_the_event_changed() -> None:
    steps = present.timeline(HISTORY, None)
    claimed = {c.field: c for c in steps[1].changes}
    assert claimed["status"].before == "queued" and claimed["status"].after == "running"
    assert claimed["worker"].added and claimed["worker"].after == "agent-1"
    assert "version" not in claimed and "position" not in claimed
    approved = {c.field for c in steps[4].changes}
    assert {"status", "officer_comment"} <= approved


def test_a_tool_call_is_read_by_its_usual_keys() -> None:
    tc = present.tool_call(HISTORY[2]["data"]["content"])
    assert tc == {
        "name": "px",
        "arguments": {"isin": "XS1"},
        "result": 101.5,
        "has_result": True,
        "rest": {},
    }
    assert present.tool_call("free text") is None
    assert present.tool_call({"unrelated": 1}) is None


def test_long_text_and_big_containers_are_folded() -> None:
    assert present.node("short").kind == "text"
    assert present.node("x" * (present.LONG_TEXT + 1)).kind == "long_text"
    assert present.node("a\nb\nc\nd\ne").kind == "long_text"
    assert not present.node({"a": 1}).folded
    assert present.node({str(i): i for i in range(present.BIG_CONTAINER + 1)}).folded
    assert present.node(None).kind == "null" and present.node(True).text == "true"
    assert present.node(1.5).kind == "number"


@given(st.text())
def test_the_pdf_text_is_latin1_and_keeps_what_latin1_can_hold(text: str) -> None:
    out = latin(text)
    out.encode("latin-1")
    if all(ord(c) < 256 for c in text):
        assert out == text
