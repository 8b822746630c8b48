"""A task as the signed-in principal may see it: protected fields opened for
their readers, and for everyone else a marker saying withheld or erased
(docs/privacy.md), the same rule as the API's reads. The fold runs on the
events as stored (as replay does); what is shown of them is revealed after."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger import tasks
from ledger.privacy import service as privacy
from ledger.privacy.reveal import readable


async def shown_task(
    ctx: Any, caller: tasks.Actor, events: Sequence[Any]
) -> tuple[list[Any], list[dict[str, Any]]]:
    """The task's events and its state after each, as ``caller`` sees them."""
    states: list[tasks.TaskState] = []
    state: tasks.TaskState | None = None
    for e in events:
        state = tasks.evolve(state, e)
        states.append(state)
    views = [tasks.view(s) for s in states]
    if state is None or privacy.of(ctx).registry.get(state.task_type) is None:
        return list(events), views
    classes = readable(
        caller.role, caller.name, (state.agent_name, state.worker, state.last_worker)
    )
    stream = events[0]["stream"]
    items = [(classes, stream, e["data"]) for e in events] + [(classes, stream, v) for v in views]
    out = await privacy.of(ctx).reveal(items)
    n = len(events)
    shown = [
        e if d is e["data"] else {**e, "data": d} for e, d in zip(events, out[:n], strict=True)
    ]
    return shown, [dict(v) for v in out[n:]]


async def shown_states(
    ctx: Any, caller: tasks.Actor, states: Sequence[tasks.TaskState]
) -> list[dict[str, Any]]:
    return await privacy.of(ctx).reveal_states(caller, states)
