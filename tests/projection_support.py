"""Helpers for the projection tests: runner processes, ledgers, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import IO, Any

import psycopg

from ledger import db, errors
from ledger.appender import append_sync
from ledger.clock import uuid7
from ledger.events import NewEvent, StreamAppend

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("task_counts", "tasks")


def start_runner(url: str, log: IO[bytes] | None = None, **env: str) -> subprocess.Popen[bytes]:
    """``python -m projections`` against ``url``, as a real process."""
    full = {
        **os.environ,
        "LEDGER_DATABASE_URL": url,
        "LEDGER_LOG_FORMAT": "json",
        "LEDGER_LOG_LEVEL": "info",
        "LEDGER_PROJECTION_POLL_SECONDS": "0.1",
        "LEDGER_PROJECTION_STANDBY_SECONDS": "0.3",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "projections"],
        cwd=ROOT,
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=log if log is not None else subprocess.DEVNULL,
    )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill9(proc)


def positions(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT name, position FROM projection_checkpoints").fetchall()
    return {name: int(pos) for name, pos in rows}


def head(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT position FROM ledger_head").fetchone()
    assert row is not None
    return int(row[0])


def wait_caught_up(url: str, timeout: float = 60.0, names: tuple[str, ...] = NAMES) -> int:
    """Wait until every projection has folded the head; returns the head."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            h = head(conn)
            pos = positions(conn)
            if all(pos.get(n, -1) >= h for n in names):
                return h
            if time.monotonic() > deadline:
                raise AssertionError(f"projections at {pos}, head {h}, after {timeout} s")
            time.sleep(0.05)


def meta(actor: str = "agent-1") -> dict[str, Any]:
    return {"actor": actor, "role": "agent", "request_id": f"test-{uuid.uuid4().hex[:8]}"}


def submit_tasks(
    url: str,
    n: int,
    *,
    task_type: str = "position_check",
    priority: int = 0,
    actor: str = "agent-1",
) -> list[str]:
    """``n`` TaskSubmitted events appended in one batch; the new task ids."""
    ids = [str(uuid7()) for _ in range(n)]
    cmds = [
        StreamAppend(
            f"task-{tid}",
            [
                NewEvent(
                    "TaskSubmitted",
                    {"task_type": task_type, "payload": {"n": i}, "priority": priority},
                )
            ],
            meta(actor),
            expected_version=0,
        )
        for i, tid in enumerate(ids)
    ]
    with psycopg.connect(db.service_conninfo(url), autocommit=True) as conn:
        for res in append_sync(conn, cmds):
            assert not isinstance(res, errors.LedgerError), res
    return ids


def applied_matches_ledger(conn: psycopg.Connection[Any]) -> None:
    """Each projection's applied count is exactly the events of its types it has
    passed: an event applied twice (or skipped) would show here."""
    from projections import registry

    for name, p in registry().items():
        row = conn.execute(
            "SELECT position, applied FROM projection_checkpoints WHERE name = %s", (name,)
        ).fetchone()
        assert row is not None, name
        (expected,) = conn.execute(
            "SELECT count(*) FROM events WHERE position <= %s AND type = ANY(%s)",
            (row[0], list(p.event_types)),
        ).fetchone() or (0,)
        assert row[1] == expected, (name, row, expected)
