"""Big ledgers, fast: task histories chained in Python and loaded with COPY.

The rows are exactly what ``ledger_append`` would have written (the same
canonical bytes, hashes and columns; ``verify_rows`` and ``ledger verify``
accept them), but building them skips the plpgsql loop: Python computes the
RFC 8785 bytes and SHA-256 chain (a few microseconds an event) and one COPY
streams them in, about as fast as PostgreSQL takes rows with their indexes.
The head row is moved to the last event afterwards, and the table vacuumed.

History shape: tasks of 10 events (submitted, claimed, 7 steps, completed),
100 tasks interleaved at a time, plus one task of 100 events spread evenly
over the whole ledger (the replay target, ``REPLAY_TASK``).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ledger.canonical import ZERO_HASH, canonical_bytes

REPLAY_TASK = "00000000-0000-4000-8000-00000000beef"
TASK_EVENTS = 10
INTERLEAVE = 100
BASE_TIME = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
EVENT_COLUMNS = "position, stream, version, type, recorded_at, prev_hash, hash, canonical"


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _task_event(k: int, agent: str, step: int, at: datetime) -> tuple[str, dict[str, Any]]:
    """Event ``k`` (0-based) of a task of TASK_EVENTS: type and data."""
    if k == 0:
        return "TaskSubmitted", {
            "task_type": "position_check",
            "payload": {"symbol": "AAPL", "quantity": 250 + step % 1000},
            "priority": 0,
        }
    if k == 1:
        return "TaskClaimed", {"worker": agent, "lease_expires_at": _ts(at + timedelta(minutes=1))}
    if k == TASK_EVENTS - 1:
        return "TaskCompleted", {
            "result": {
                "symbol": "AAPL",
                "quantity": 250,
                "status": "processed",
                "notional_estimate": "25062.5",
            }
        }
    return "TaskStepRecorded", {"kind": "note", "content": f"step {k - 1} of check {step}"}


def _replay_event(k: int, total: int, at: datetime) -> tuple[str, dict[str, Any]]:
    if k == 0:
        return _task_event(0, "agent-1", 0, at)
    if k == 1:
        return _task_event(1, "agent-1", 0, at)
    if k == total - 1:
        return _task_event(TASK_EVENTS - 1, "agent-1", 0, at)
    return "TaskStepRecorded", {"kind": "tool_call", "content": {"tool": "price", "call": k}}


def histories(n: int, replay_events: int = 100) -> Iterator[tuple[str, int, str, bytes]]:
    """(stream, version, type, canonical body prefix) for ``n`` events in order."""
    replay_events = min(replay_events, n)
    every = max(1, n // replay_events) if replay_events else n + 1
    replay_stream = "task-" + REPLAY_TASK
    emitted = 0
    replayed = 0
    block = 0
    while emitted < n:
        tasks = [str(uuid.UUID(int=(block * INTERLEAVE + i + 1) << 64)) for i in range(INTERLEAVE)]
        for k in range(TASK_EVENTS):
            for i, tid in enumerate(tasks):
                if emitted >= n:
                    return
                at = BASE_TIME + timedelta(microseconds=emitted * 50)
                if replayed < replay_events and emitted % every == 0:
                    etype, data = _replay_event(replayed, replay_events, at)
                    meta = {"actor": "agent-1", "role": "agent", "request_id": f"r{emitted}"}
                    replayed += 1
                    emitted += 1
                    body = canonical_bytes({"data": data, "meta": meta})[:-1]
                    yield replay_stream, replayed, etype, body
                    if emitted >= n:
                        return
                agent = f"agent-{1 + (block + i) % 8}"
                etype, data = _task_event(k, agent, block * INTERLEAVE + i, at)
                meta = {"actor": agent, "role": "agent", "request_id": f"r{emitted}"}
                emitted += 1
                yield (
                    "task-" + tid,
                    k + 1,
                    etype,
                    canonical_bytes({"data": data, "meta": meta})[:-1],
                )
        block += 1


@dataclass(slots=True)
class Head:
    position: int
    hash: str
    recorded_at: str


def chained_rows(n: int, *, chunk: int = 20_000) -> Iterator[tuple[bytes, Head]]:
    """COPY text chunks of ``n`` chained events, each with the head after it."""
    sha = hashlib.sha256
    prev = ZERO_HASH
    out: list[bytes] = []
    ts_text = ""
    pos = 0
    for stream, version, etype, body in histories(n):
        pos += 1
        if pos % 50 == 1:  # one timestamp per 50 events, like a group commit
            ts_text = _ts(BASE_TIME + timedelta(microseconds=pos * 20))
        canonical = (
            body
            + (
                f',"position":{pos},"prev_hash":"{prev}","recorded_at":"{ts_text}",'
                f'"stream":"{stream}","type":"{etype}","version":{version}}}'
            ).encode()
        )
        h = sha(canonical).hexdigest()
        out.append(
            f"{pos}\t{stream}\t{version}\t{etype}\t{ts_text}\t\\\\x{prev}\t\\\\x{h}\t\\\\x".encode()
            + canonical.hex().encode()
            + b"\n"
        )
        prev = h
        if len(out) >= chunk:
            yield b"".join(out), Head(pos, prev, ts_text)
            out = []
    if out:
        yield b"".join(out), Head(pos, prev, ts_text)


def _produce(n: int, queue: Any) -> None:
    """Child process: every chunk of ``chained_rows(n)`` into ``queue``, then None."""
    try:
        for item in chained_rows(n):
            queue.put(item)
        queue.put(None)
    except BaseException as exc:  # the parent reports it
        queue.put(exc)
        raise


def _chunks(n: int, *, background: bool) -> Iterator[tuple[bytes, Head]]:
    """``chained_rows(n)``; with ``background``, made in a child process so that
    hashing here overlaps the server parsing and indexing the COPY."""
    if not background:
        yield from chained_rows(n)
        return
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue(maxsize=4)
    proc = ctx.Process(target=_produce, args=(n, queue), daemon=True)
    proc.start()
    try:
        while True:
            item = queue.get(timeout=600)
            if item is None:
                break
            if isinstance(item, BaseException):
                raise RuntimeError(f"building the ledger failed: {item!r}")
            yield item
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(timeout=10)


def build(url: str, n: int, *, table: str = "events") -> Head:
    """Load ``n`` chained task events into an empty ledger; move its head."""
    head = Head(0, ZERO_HASH, "")
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            with conn.cursor().copy(f"COPY {table} ({EVENT_COLUMNS}) FROM STDIN") as copy:
                for data, last in _chunks(n, background=n >= 200_000):
                    copy.write(data)
                    head = last
            if table == "events":
                conn.execute(
                    "UPDATE ledger_head SET position = %s, hash = %s, recorded_at = %s WHERE id",
                    (head.position, bytes.fromhex(head.hash), head.recorded_at),
                )
        # Hint bits, the visibility map and statistics now, not from whichever
        # workload reads first or from an autovacuum in the middle of a measurement.
        conn.execute(f"VACUUM (ANALYZE) {table}")
    return head
