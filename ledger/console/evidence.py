"""The regulator's report's contents, gathered once for HTML and PDF alike: the
full time-stamped trail, every interim state (the replay fold), and the
verification summary with the checkpoint it was checked against."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger import commands, errors
from ledger.audit.offline import Failed, check_audit_bundle, load_verifiers
from ledger.audit.stored import verify_stored
from ledger.canonical import compute_event_hash
from ledger.clock import format_time, now
from ledger.console import present
from ledger.console.pages import ChainStatus, chain_status
from ledger.console.shown import shown_task
from ledger.proofs import bundle

BUNDLE_WAIT = 3.0  # seconds a report waits for a checkpoint covering the task


@dataclass(slots=True)
class Verification:
    ok: bool
    lines: list[str] = field(default_factory=list)
    checkpoint_size: int | None = None
    checkpoint_root: str | None = None
    checkpoint_at: str | None = None
    checkpoint_note: str | None = None
    key: str | None = None


@dataclass(slots=True)
class TaskReport:
    task: dict[str, Any]
    steps: list[present.Step]
    verification: Verification
    actors: list[tuple[str, str]]


@dataclass(slots=True)
class Report:
    title: str
    generated_at: str
    generated_by: str
    chain: ChainStatus
    tasks: list[TaskReport]
    range_verification: Verification | None = None
    positions: tuple[int, int] | None = None
    truncated: bool = False


def _actors(events: Sequence[Any]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for e in events:
        meta = e.get("meta") or {}
        seen[(str(meta.get("actor")), str(meta.get("role")))] = None
    return list(seen)


def node_memo(ctx: Any) -> dict[tuple[int, int], bytes]:
    """The process's memo of Merkle subtree roots for the bundles it builds."""
    memo: dict[tuple[int, int], bytes] = ctx.extras.setdefault("console_tree_nodes", {})
    return memo


async def verify_task(
    ctx: Any, task_id: str, events: Sequence[Any]
) -> tuple[Verification, dict[str, Any] | None]:
    """Each event's hash recomputed, and the task's audit bundle (inclusion
    proofs against the latest signed checkpoint) checked as ``ledger verify``
    checks it, with the keys the service signs with."""
    v = Verification(ok=True)
    bad = [e["position"] for e in events if compute_event_hash(e) != e["hash"]]
    if bad:
        v.ok = False
        v.lines.append(f"FAILED: the events at positions {bad} do not hash to their hash field")
    else:
        v.lines.append(
            f"OK: all {len(events)} events recompute to their SHA-256 hashes (RFC 8785 canonical bytes)"
        )
    try:
        async with ctx.pool.connection() as conn:
            built = await bundle.build(conn, task_id, wait=BUNDLE_WAIT, nodes=node_memo(ctx))
    except errors.Unavailable as exc:
        v.ok = False
        v.lines.append(f"NOT YET: {exc.detail}")
        return v, None
    v.checkpoint_note = built["checkpoint"]
    v.key = built["public_key"]
    note_lines = built["checkpoint"].split("\n")
    if len(note_lines) >= 3:
        v.checkpoint_size = int(note_lines[1])
        v.checkpoint_root = note_lines[2]
    try:
        verifiers = load_verifiers([built["public_key"]]) if built["public_key"] else []
        v.lines.extend(check_audit_bundle(built, verifiers))
    except Failed as exc:
        v.ok = False
        v.lines.append(f"FAILED: {exc}")
    return v, built


async def task_report(ctx: Any, task_id: str, reader: Any) -> TaskReport:
    _state, events = await commands.load(ctx.pool, task_id)
    if not events:
        raise errors.NotFound(f"no task {task_id}")
    verification, _bundle = await verify_task(ctx, task_id, events)
    async with ctx.pool.connection() as conn:
        chain = await chain_status(conn)
    if chain.checkpoint_at and chain.checkpoint_size == verification.checkpoint_size:
        verification.checkpoint_at = format_time(chain.checkpoint_at)
    shown, views = await shown_task(ctx, reader, events)
    steps = present.timeline(shown, verification.checkpoint_size, views)
    return TaskReport(steps[-1].state, steps, verification, _actors(events))


async def range_verification(ctx: Any, lo: int, hi: int) -> Verification:
    """The stored chain re-checked over positions ``lo..hi`` (GET /audit/verify?from=&to=)."""
    if hi < lo:
        return Verification(True, ["No events in this range."])
    result, checked = await asyncio.to_thread(verify_stored, ctx.url, ctx.settings.db_role, lo, hi)
    if result.ok:
        return Verification(
            True, [f"OK: positions {lo}..{hi} verify ({checked} events hashed and chained)"]
        )
    return Verification(False, [f"FAILED at position {result.first_bad_position}: {result.reason}"])


def stamp(when: datetime | None = None) -> str:
    return format_time(when or now())
