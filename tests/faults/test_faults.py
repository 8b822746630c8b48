"""Faults, for real: the appender's database session is killed, and the API
process is killed with SIGKILL in the middle of a load. Every acknowledged
append survives exactly once and the chain still verifies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ledger import db, errors
from ledger.appender import Appender
from ledger.audit.chain import ChainVerifier
from ledger.audit.stored import verify_rows
from ledger.events import NewEvent, StreamAppend
from tests.support import auth, ledger_process, wait_until

META = {"actor": "tester", "role": "agent", "request_id": "faults"}


def _chain(conn: psycopg.Connection[Any]) -> int:
    """Verify the whole stored chain; returns its length."""
    (head,) = conn.execute("SELECT position FROM ledger_head").fetchone() or (0,)
    rows = conn.execute(db.q("events", "verify_range"), {"from": 1, "to": head}).fetchall()
    result = verify_rows(rows, ChainVerifier(start=1))
    assert result.ok, result
    assert result.count == head
    return int(head)


def _wait_gone(conn: psycopg.Connection[Any], pid: int) -> None:
    for _ in range(200):
        if not conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            return
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} did not go away")


def test_appender_recovers_when_its_session_is_killed(
    db_url: str, super_conn: psycopg.Connection[Any]
) -> None:
    def cmd(i: int) -> StreamAppend:
        return StreamAppend(stream=f"test-{i}", events=[NewEvent("Tested", {"i": i})], meta=META)

    async def go() -> list[Any]:
        app = Appender(db_url)
        await app.start()
        try:
            out: list[Any] = [await app.append(cmd(0))]
            assert app._conn is not None
            pid = app._conn.info.backend_pid
            super_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            _wait_gone(super_conn, pid)
            try:
                out.append(await app.append(cmd(1)))
            except errors.OutcomeUnknown as exc:  # the session died under it
                out.append(exc)
            out.append(await app.append(cmd(2)))
            out.append(await app.append(cmd(3)))
            return out
        finally:
            await app.close()

    first, second, third, fourth = asyncio.run(go())
    assert isinstance(second, errors.OutcomeUnknown)
    assert [first[0]["position"], third[0]["position"], fourth[0]["position"]] == [1, 2, 3]
    assert _chain(super_conn) == 3


@pytest.mark.timeout(120)
def test_sigkill_of_the_api_under_load_loses_no_acknowledged_append(
    db_url: str, keyring: dict[str, str], super_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    acked: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    with ledger_process("serve", db_url, tmp_path) as (server, base):

        def load(w: int) -> None:
            with httpx.Client(base_url=base, headers=auth(keyring["admin"]), timeout=10) as c:
                i = 0
                while not stop.is_set():
                    name = f"k{w}-{i}"
                    i += 1
                    try:
                        r = c.post("/admin/keys", json={"name": name, "role": "agent"})
                    except httpx.HTTPError:
                        return  # the server is gone
                    if r.status_code == 201:
                        with lock:
                            acked.append((name, r.json()["position"]))

        threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(acked) >= 150, timeout=12, what="150 acknowledged appends")
        finally:
            os.kill(server.pid, signal.SIGKILL)  # mid-load: requests are in flight
            server.wait(timeout=10)
            stop.set()
            for t in threads:
                t.join(timeout=30)

    assert server.returncode == -signal.SIGKILL
    assert len(acked) >= 150
    length = _chain(super_conn)
    stored = dict(
        super_conn.execute(
            "SELECT body->'data'->>'name', position FROM events_json "
            "WHERE type = 'PrincipalKeyCreated'"
        ).fetchall()
    )
    names = [
        n
        for (n,) in super_conn.execute(
            "SELECT body->'data'->>'name' FROM events_json WHERE type = 'PrincipalKeyCreated'"
        )
    ]
    assert len(names) == len(set(names))  # nothing twice
    for name, position in acked:
        assert stored.get(name) == position, name
    assert length >= 5 + len(acked)


@pytest.mark.timeout(120)
def test_ledger_run_restarts_its_api_after_a_sigkill(db_url: str, tmp_path: Path) -> None:
    """The API killed once it has served: ``ledger run`` starts it again, and its
    projection runner goes on as it was."""
    import psutil

    from ledger.cli.serve import API_SETTLE_SECONDS

    def child(run: subprocess.Popen[bytes], *words: str) -> psutil.Process | None:
        for p in psutil.Process(run.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if all(w in " ".join(p.cmdline()) for w in words):
                    return p
        return None

    with ledger_process("run", db_url, tmp_path) as (run, base):
        api = child(run, "ledger", "serve")
        runner = child(run, "-m", "projections")
        assert api is not None and runner is not None
        # psutil's create_time counts from the boot time, which /proc gives in
        # whole seconds: a process can read up to a second older than it is
        wait_until(
            lambda: time.time() - api.create_time() > API_SETTLE_SECONDS + 1.5,
            timeout=API_SETTLE_SECONDS + 12,
            what="the API serving for longer than it takes to start",
        )
        os.kill(api.pid, signal.SIGKILL)

        def healed() -> bool:
            again = child(run, "ledger", "serve")
            if again is None or again.pid == api.pid:
                return False
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healed, timeout=60, what="a new API answering /health")
        assert run.poll() is None
        assert child(run, "-m", "projections") == runner  # the same process, not restarted
