"""Helpers the tests share: keys and headers, databases, apps with a runner
beside them, a live server, the proofs' settings and appends. Every one
talks to a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from fastapi import FastAPI
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ledger import db, errors, keys
from ledger.api.app import create_app
from ledger.appender import append_sync
from ledger.events import NewEvent, StreamAppend
from ledger.proofs import note
from ledger.settings import Settings
from projections.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "ledger.example/test"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def url_for(base: str, dbname: str) -> str:
    return make_conninfo(base, dbname=dbname)


def fresh_db(server_url: str, template: str) -> str:
    """A new database cloned from ``template``; its name."""
    import uuid

    name = f"ledger_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return name


def drop_db(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def service_connect(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection acting as the service role (what the API uses)."""
    return psycopg.connect(db.service_conninfo(url), autocommit=True)


def append(url_or_conn: str | psycopg.Connection[Any], *appends: StreamAppend) -> list[Any]:
    """Append as the service does; every append must succeed."""
    if isinstance(url_or_conn, str):
        with service_connect(url_or_conn) as conn:
            return append(conn, *appends)
    results = append_sync(url_or_conn, list(appends))
    for res in results:
        assert not isinstance(res, errors.LedgerError), res
    return results


def create_key(url: str, name: str, role: str) -> str:
    """Make a principal the way `ledger keys create` does; returns the key."""
    key, cmd = keys.create_command(
        name, role, {"actor": "operator", "role": "admin", "request_id": "test"}
    )
    append(url, cmd)
    return key


def app_with_runner(settings: Settings) -> FastAPI:
    """The app as ``ledger run`` serves it: the API, a projection runner and
    the tree builder beside it (threads here, started and stopped with the
    app, where ``ledger run`` runs processes), so the views and the tree
    follow the writes."""
    app = create_app(settings, tree=True)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        runner = Runner(db.resolve_url(settings), settings)
        runner.start()
        try:
            async with inner(a) as state:
                yield state
        finally:
            await asyncio.to_thread(runner.stop)

    app.router.lifespan_context = lifespan
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def ledger_process(
    command: str, db_url: str, home: Path, output: Path | None = None, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``ledger serve`` or ``ledger run`` as a real process (its own session,
    so its children can be signalled with it) on a free port, once
    ``/health`` answers; yields the process and its base URL. Stopped with
    SIGTERM (killed if it will not go) on the way out, unless a test did it.
    ``output``: a file for its stdout and stderr (its logs), else discarded."""
    port = free_port()
    full = {
        **os.environ,
        "LEDGER_DATABASE_URL": db_url,
        "LEDGER_LOG_LEVEL": "warning",
        "LEDGER_HOME": str(home),
        **env,
    }
    sink = output.open("ab") if output is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger", command, "--port", str(port)],
        cwd=ROOT,
        env=full,
        stdout=sink,
        stderr=sink,
        start_new_session=True,
    )
    if output is not None:
        sink.close()  # type: ignore[union-attr]  # the process holds its own copy
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, f"ledger {command} exited with {proc.returncode}"
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, timeout=60, what=f"ledger {command} answering /health")
        yield proc, base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), timeout=60, what="uvicorn")
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def ledger_verify(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The real ``ledger verify`` command on a file, as an auditor runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ledger", "verify", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def failed_at(proc: subprocess.CompletedProcess[str]) -> int | None:
    """The position a ``ledger verify`` run reported as the first bad one."""
    m = re.search(r"^FAILED at position (\d+)", proc.stdout, re.M)
    return int(m.group(1)) if m else None


def wait_until(condition: Any, timeout: float = 30.0, what: str = "the condition") -> Any:
    """Poll ``condition()`` until it is truthy (returned), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} did not hold within {timeout} s"
        time.sleep(0.02)


# -- proofs ------------------------------------------------------------------------------


def proof_settings(db_url: str, key_file: Path) -> Settings:
    """The shared settings, plus a signing key of the test's own and fast checkpoints."""
    return Settings(
        database_url=db_url,
        home=key_file.parent,
        log_format="json",
        log_level="warning",
        origin=ORIGIN,
        signing_key_file=key_file,
        checkpoint_interval_seconds=0.1,
        tree_poll_seconds=0.05,
    )


def append_events(conn: psycopg.Connection[Any], n: int, stream: str = "bulk-1") -> None:
    meta = {"actor": "tester", "role": "admin", "request_id": "test"}
    done = 0
    while done < n:
        k = min(500, n - done)
        cmd = StreamAppend(stream, [NewEvent("Noted", {"i": done + j}) for j in range(k)], meta)
        (res,) = append_sync(conn, [cmd])
        assert isinstance(res, list), res
        done += k


def wait_for_checkpoint(client: Any, key: str, size: int) -> str:
    """The latest signed note once it covers ``size`` events (bounded wait)."""
    deadline = time.monotonic() + 30
    while True:
        r = client.get("/audit/checkpoint", headers=auth(key))
        if r.status_code == 200 and int(r.headers["x-ledger-tree-size"]) >= size:
            return str(r.text)
        assert time.monotonic() < deadline, f"no checkpoint of size {size}: {r.status_code}"
        time.sleep(0.05)


def vkey(client: Any, key: str) -> note.Verifier:
    r = client.get("/audit/public-key", headers=auth(key))
    assert r.status_code == 200
    return note.Verifier.parse(r.text)
