"""The workloads: ours and the comparators, each in the same run.

Every function takes the :class:`Bench` (server, sizes, the shared big
ledger) and returns rows, one per system, with one sample per repetition.
A feature that has not been built yet gives a row marked ``n/a (not
built)``; a workload that fails gives a row marked with the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import ledgerdata, servers
from bench.pg import Server, libpq_params
from bench.results import NOT_BUILT, Row, percentile
from ledger import db, errors, keys
from ledger.appender import Appender, append_sync
from ledger.clock import uuid7
from ledger.events import NewEvent, StreamAppend

PAYLOAD = {"symbol": "AAPL", "quantity": 250}
SUBMIT_BODY = '{"task_type": "position_check", "payload": {"symbol": "AAPL", "quantity": 250}}'


@dataclass(slots=True)
class Config:
    mode: str  # full | quick | tiny
    reps: int = 3
    http_seconds: float = 5.0
    http_warmup: float = 1.0
    append_seconds: float = 3.0
    append_warmup: float = 0.3
    writers: tuple[int, ...] = (1, 8, 64)
    batch_writers: int = 8
    batch_size: int = 50
    connections: int = 64
    workers: int = 1
    scale_workers: tuple[int, ...] = (2, 4)  # HTTP rows again with this many workers
    big_events: int = 1_000_000
    copy_rows: int = 200_000
    scale_events: int = 10_000_000
    scale: bool = False
    replay_requests: int = 200
    read_seconds: float = 3.0

    @classmethod
    def for_mode(cls, mode: str, *, scale: bool = False) -> Config:
        if mode == "quick":
            return cls(
                mode,
                http_seconds=1.0,
                http_warmup=0.4,
                append_seconds=0.7,
                append_warmup=0.15,
                big_events=100_000,
                copy_rows=50_000,
                scale_events=1_000_000,
                scale=scale,
                replay_requests=100,
                read_seconds=1.0,
            )
        if mode == "tiny":
            return cls(
                mode,
                http_seconds=0.3,
                http_warmup=0.1,
                append_seconds=0.3,
                append_warmup=0.05,
                writers=(1, 8),
                scale_workers=(),
                batch_writers=2,
                connections=8,
                big_events=3_000,
                copy_rows=3_000,
                scale_events=5_000,
                scale=scale,
                replay_requests=20,
                read_seconds=0.3,
            )
        return cls(mode, scale=scale)


class Bench:
    def __init__(self, server: Server, config: Config) -> None:
        self.server = server
        self.config = config
        self._stack = contextlib.ExitStack()
        self._big: str | None = None
        self.notes: list[str] = []
        self.keys: dict[str, str] = {}
        self.tree_note = ""

    def close(self) -> None:
        self._stack.close()

    def big_ledger(self) -> str:
        """The ledger of ``big_events`` task events shared by the read workloads."""
        if self._big is None:
            url = self._stack.enter_context(self.server.database("big"))
            t0 = time.perf_counter()
            ledgerdata.build(url, self.config.big_events)
            took = time.perf_counter() - t0
            self.notes.append(
                f"The {self.config.big_events:,}-event ledger was built in {took:.1f} s "
                f"({self.config.big_events / took:,.0f} events/s): task histories chained in "
                "Python (RFC 8785 bytes, SHA-256) and loaded with one COPY, then the head row moved."
            )
            self._big = url
        return self._big


def _meta(n: int) -> dict[str, Any]:
    return {"actor": "agent-1", "role": "agent", "request_id": f"bench-{n}"}


def make_key(url: str, name: str, role: str) -> str:
    with psycopg.connect(db.service_conninfo(url), autocommit=True) as conn:
        key, cmd = keys.create_command(
            name, role, {"actor": "operator", "role": "admin", "request_id": "bench"}
        )
        (res,) = append_sync(conn, [cmd])
        if isinstance(res, errors.LedgerError):
            raise res
    return key


def xact_commits(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return int(row[0]) if row else 0


# ---------------------------------------------------------------- HTTP submit


def _http_rows(
    b: Bench,
    key: str,
    system: str,
    serve: Callable[[int], contextlib.AbstractContextManager[int]],
    url: str | None,
    workers: int,
) -> Row:
    """Serve with ``serve(workers)`` (yields the port) and drive it with the load generator."""
    c = b.config
    row = Row(key, "HTTP submit, 64 connections", system, "req/s")
    with serve(workers) as port:
        spec: dict[str, Any] = {
            "port": port,
            "method": "POST",
            "path": "/tasks",
            "body": SUBMIT_BODY,
            "headers": {},
            "connections": c.connections,
            "seconds": c.http_seconds,
            "warmup": c.http_warmup,
        }
        # ours (bench/witnessing.py's too): an agent's key, POST /tasks
        if key.startswith(("http.ledger", "http.serve", "scale.http", "witness.")):
            assert url is not None
            spec["headers"] = {"Authorization": f"Bearer {make_key(url, 'bench-agent', 'agent')}"}
            row.note = "POST /tasks"
        before = xact_commits(url) if url else 0
        total = 0
        for _ in range(c.reps):
            r = servers.load(spec)
            if r["requests"] == 0:
                raise RuntimeError(f"no request succeeded: {r['statuses']} {r['errors']}")
            if r["non_2xx"]:
                row.note += f" ({r['non_2xx']} non-2xx: {r['statuses']})"
            row.samples.append(r["per_second"])
            row.p50_ms.append(r["p50_ms"])
            row.p99_ms.append(r["p99_ms"])
            total += r["total"]
    if url:
        time.sleep(0.6)  # closed connections flush their statistics
        row.commits_per_event = (xact_commits(url) - before - 1) / max(1, total)
    row.workload = f"HTTP submit, {c.connections} conns, {workers} worker(s)"
    return row


def _ledger(command: str, url: str) -> Callable[[int], contextlib.AbstractContextManager[int]]:
    env = {"LEDGER_LOG_LEVEL": "warning", "LEDGER_LOG_FORMAT": "json", "LEDGER_DATABASE_URL": url}
    return lambda workers: servers.ledger(command, env, workers)


def _factory(
    name: str, env: dict[str, str]
) -> Callable[[int], contextlib.AbstractContextManager[int]]:
    return lambda workers: servers.uvicorn(name, env, workers)


# (key suffix, `ledger` command, system): the deployed topology first
LEDGER_HTTP = [
    ("ledger", "run", "ledger run (API + projection runner + tree builder)"),
    ("serve", "serve", "ledger serve alone (API only)"),
]
FLOOR = "HTTP floor (no database)"
ASGI_FLOOR = "HTTP floor without FastAPI (uvicorn, the same model, no database)"


def http_submit(b: Bench) -> list[Row]:
    c = b.config
    rows: list[Row] = []
    for suffix, command, system in LEDGER_HTTP:
        key = f"http.{suffix}"
        with b.server.database(f"http_{suffix}") as url:
            rows.append(
                _guard(
                    key,
                    "HTTP submit",
                    system,
                    partial(_http_rows, b, key, system, _ledger(command, url), url, c.workers),
                )
            )
    orig = "original design (SQLAlchemy, commit per request)"
    with b.server.database("http_orch", schema=False) as url:
        serve = _factory("bench.apps:orchestrator_app", {"BENCH_DATABASE_URL": url})
        rows.append(
            _guard(
                "http.original",
                "HTTP submit",
                orig,
                partial(_http_rows, b, "http.original", orig, serve, url, c.workers),
            )
        )
    floor = _factory("bench.apps:floor_app", {})
    rows.append(
        _guard(
            "http.floor",
            "HTTP submit",
            FLOOR,
            partial(_http_rows, b, "http.floor", FLOOR, floor, None, c.workers),
        )
    )
    bare = _factory("bench.apps:asgi_floor_app", {})
    rows.append(
        _guard(
            "http.asgi",
            "HTTP submit",
            ASGI_FLOOR,
            partial(_http_rows, b, "http.asgi", ASGI_FLOOR, bare, None, c.workers),
        )
    )
    # what more cores buy: the deployed topology and the floor with N uvicorn workers
    for n in c.scale_workers:
        with b.server.database(f"http_w{n}") as url:
            key, system = f"http.ledger.w{n}", LEDGER_HTTP[0][2]
            rows.append(
                _guard(
                    key,
                    "HTTP submit",
                    system,
                    partial(_http_rows, b, key, system, _ledger("run", url), url, n),
                )
            )
        key = f"http.floor.w{n}"
        rows.append(
            _guard(key, "HTTP submit", FLOOR, partial(_http_rows, b, key, FLOOR, floor, None, n))
        )
    return rows


# ------------------------------------------------------- in-process appends


def _task_command(n: int, size: int) -> StreamAppend:
    events = [NewEvent("TaskSubmitted", {"task_type": "position_check", "payload": PAYLOAD})]
    events += [
        NewEvent("TaskStepRecorded", {"kind": "note", "content": f"step {i}"})
        for i in range(1, size)
    ]
    return StreamAppend(f"task-{uuid7()}", events, _meta(n), expected_version=0)


async def _ours(url: str, writers: int, size: int, seconds: float, warmup: float) -> dict[str, Any]:
    appender = Appender(url)
    await appender.start()
    lat: list[float] = []
    done = 0
    start = time.perf_counter()
    warm_until = start + warmup
    deadline = warm_until + seconds
    last = warm_until
    batches0 = appended0 = 0

    async def writer(w: int) -> None:
        nonlocal done, last, batches0, appended0
        n = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            if t0 >= warm_until and not batches0:
                batches0, appended0 = appender.batches or -1, appender.appended
            n += 1
            await appender.append(_task_command(w * 1_000_000 + n, size))
            t1 = time.perf_counter()
            if t0 >= warm_until:
                lat.append(t1 - t0)
                done += size
                last = max(last, t1)

    try:
        await asyncio.gather(*(writer(w) for w in range(writers)))
    finally:
        await appender.close()
    elapsed = last - warm_until
    lat.sort()
    batches = appender.batches - max(0, batches0)
    appended = appender.appended - appended0
    return {
        "per_second": done / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(lat, 0.5) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "commits_per_event": batches / appended if appended else None,
    }


async def _plain_insert(url: str, writers: int, seconds: float, warmup: float) -> dict[str, Any]:
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(writers)]
    lat: list[float] = []
    done = 0
    start = time.perf_counter()
    warm_until = start + warmup
    deadline = warm_until + seconds
    last = warm_until
    body = (
        '{"data": {"task_type": "position_check", "payload": {"symbol": "AAPL", "quantity": 250}}}'
    )

    async def writer(conn: psycopg.AsyncConnection[Any]) -> None:
        nonlocal done, last
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            await conn.execute(
                "INSERT INTO plain_events (stream, type, body) VALUES (%s, %s, %s)",
                (f"task-{uuid7()}", "TaskSubmitted", body),
            )
            t1 = time.perf_counter()
            if t0 >= warm_until:
                lat.append(t1 - t0)
                done += 1
                last = max(last, t1)

    try:
        await asyncio.gather(*(writer(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    elapsed = last - warm_until
    lat.sort()
    return {
        "per_second": done / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(lat, 0.5) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
    }


PLAIN_TABLE = """
CREATE TABLE IF NOT EXISTS plain_events (
    id          bigserial PRIMARY KEY,
    stream      text NOT NULL,
    type        text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    body        jsonb NOT NULL
)"""


def _eventsourcing_app(url: str, threads: int) -> Any:
    from eventsourcing.application import Application

    from bench.es_model import BenchTask

    p = libpq_params(url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": p["dbname"],
        "POSTGRES_HOST": p["host"],
        "POSTGRES_PORT": str(p["port"]),
        "POSTGRES_USER": p["user"],
        "POSTGRES_PASSWORD": p["password"],
        "POSTGRES_POOL_SIZE": str(threads),
        "POSTGRES_MAX_OVERFLOW": "0",
        "POSTGRES_MAX_WAITING": "0",
    }
    app = Application(env=env)
    return app, BenchTask


def _eventsourcing(
    url: str, threads: int, size: int, seconds: float, warmup: float
) -> dict[str, Any]:
    app, task_cls = _eventsourcing_app(url, threads)
    lat: list[list[float]] = [[] for _ in range(threads)]
    done = [0] * threads
    lasts = [0.0] * threads
    start = time.perf_counter()
    warm_until = start + warmup
    deadline = warm_until + seconds
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= deadline:
                    return
                agg = task_cls("position_check", PAYLOAD)
                for k in range(1, size):
                    agg.record_step("note", f"step {k}")
                app.save(agg)
                t1 = time.perf_counter()
                if t0 >= warm_until:
                    lat[i].append(t1 - t0)
                    done[i] += size
                    lasts[i] = max(lasts[i], t1)
        except BaseException as exc:  # report it from the main thread
            failures.append(exc)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    app.close()
    if failures:
        raise failures[0]
    elapsed = max(max(lasts), warm_until) - warm_until
    all_lat = sorted(x for part in lat for x in part)
    return {
        "per_second": sum(done) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(all_lat, 0.5) * 1000,
        "p99_ms": percentile(all_lat, 0.99) * 1000,
    }


def _reps(row: Row, reps: int, once: Callable[[], dict[str, Any]]) -> Row:
    cpe: list[float] = []
    for _ in range(reps):
        r = once()
        row.samples.append(r["per_second"])
        if "p50_ms" in r:
            row.p50_ms.append(r["p50_ms"])
            row.p99_ms.append(r["p99_ms"])
        if r.get("commits_per_event") is not None:
            cpe.append(r["commits_per_event"])
    if cpe:
        row.commits_per_event = sum(cpe) / len(cpe)
    return row


def appends(b: Bench) -> list[Row]:
    c = b.config
    rows: list[Row] = []
    for w in c.writers:
        wl = f"append 1 event, {w} writer{'s' if w > 1 else ''}"
        with b.server.database(f"app{w}") as url:
            rows.append(
                _guard(
                    f"append{w}.ledger",
                    wl,
                    "ledger (Appender, group commit)",
                    lambda url=url, w=w, wl=wl: _reps(
                        Row(f"append{w}.ledger", wl, "ledger (Appender, group commit)", "events/s"),
                        c.reps,
                        lambda: asyncio.run(_ours(url, w, 1, c.append_seconds, c.append_warmup)),
                    ),
                )
            )
        with b.server.database(f"es{w}", schema=False) as url:
            rows.append(
                _guard(
                    f"append{w}.eventsourcing",
                    wl,
                    "eventsourcing (one aggregate per save)",
                    lambda url=url, w=w, wl=wl: _reps(
                        Row(
                            f"append{w}.eventsourcing",
                            wl,
                            "eventsourcing (one aggregate per save)",
                            "events/s",
                            commits_per_event=1.0,
                        ),
                        c.reps,
                        lambda: _eventsourcing(url, w, 1, c.append_seconds, c.append_warmup),
                    ),
                )
            )
        with b.server.database(f"plain{w}", schema=False) as url:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(PLAIN_TABLE)
            rows.append(
                _guard(
                    f"append{w}.plain",
                    wl,
                    "plain INSERT + commit (no chain)",
                    lambda url=url, w=w, wl=wl: _reps(
                        Row(
                            f"append{w}.plain",
                            wl,
                            "plain INSERT + commit (no chain)",
                            "events/s",
                            commits_per_event=1.0,
                        ),
                        c.reps,
                        lambda: asyncio.run(
                            _plain_insert(url, w, c.append_seconds, c.append_warmup)
                        ),
                    ),
                )
            )
    return rows


def _copy_limit(
    url: str, chunks: list[bytes], n: int, table: str = "bare_events"
) -> dict[str, Any]:
    """One COPY of ``n`` chained rows in one transaction: into a bare table of
    the events' columns (no key, index, CHECK or trigger: the write limit), or
    into the ledger's own ``events`` table of a fresh schema (its unique
    indexes, the CHECKs and the triggers that follow events: what the table
    costs before any appender work; a new database for every repetition)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if table == "bare_events":
            conn.execute("DROP TABLE IF EXISTS bare_events")
            conn.execute(
                "CREATE TABLE bare_events (position bigint, stream text, version bigint, type text,"
                " recorded_at timestamptz, prev_hash bytea, hash bytea, canonical bytea)"
            )
        conn.execute("CHECKPOINT")
        t0 = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor().copy(f"COPY {table} ({ledgerdata.EVENT_COLUMNS}) FROM STDIN") as copy,
        ):
            for chunk in chunks:
                copy.write(chunk)
        elapsed = time.perf_counter() - t0
    return {"per_second": n / elapsed}


def batches(b: Bench) -> list[Row]:
    c = b.config
    k = c.batch_size
    wl = f"append {k} events/command, {c.batch_writers} writers"
    rows: list[Row] = []
    with b.server.database("batch") as url:
        rows.append(
            _guard(
                "batch.ledger",
                wl,
                "ledger (Appender, group commit)",
                lambda: _reps(
                    Row("batch.ledger", wl, "ledger (Appender, group commit)", "events/s"),
                    c.reps,
                    lambda: asyncio.run(
                        _ours(url, c.batch_writers, k, c.append_seconds, c.append_warmup)
                    ),
                ),
            )
        )
    with b.server.database("esbatch", schema=False) as url:
        rows.append(
            _guard(
                "batch.eventsourcing",
                wl,
                f"eventsourcing ({k} events per save)",
                lambda: _reps(
                    Row(
                        "batch.eventsourcing",
                        wl,
                        f"eventsourcing ({k} events per save)",
                        "events/s",
                        commits_per_event=1 / k,
                    ),
                    c.reps,
                    lambda: _eventsourcing(
                        url, c.batch_writers, k, c.append_seconds, c.append_warmup
                    ),
                ),
            )
        )
    chunks = [data for data, _ in ledgerdata.chained_rows(c.copy_rows)]
    with b.server.database("copy", schema=False) as url:
        rows.append(
            _guard(
                "batch.copy",
                wl,
                f"COPY into a bare table ({c.copy_rows:,} rows, write limit)",
                lambda: _reps(
                    Row(
                        "batch.copy",
                        wl,
                        f"COPY into a bare table ({c.copy_rows:,} rows, write limit)",
                        "events/s",
                        commits_per_event=1 / c.copy_rows,
                    ),
                    c.reps,
                    lambda: _copy_limit(url, chunks, c.copy_rows),
                ),
            )
        )

    def copy_events() -> dict[str, Any]:
        with b.server.database("copyevents") as url:
            return _copy_limit(url, chunks, c.copy_rows, table="events")

    what = f"COPY into the ledger's events table ({c.copy_rows:,} rows, its indexes and CHECKs)"
    rows.append(
        _guard(
            "batch.copy_events",
            wl,
            what,
            lambda: _reps(
                Row("batch.copy_events", wl, what, "events/s", commits_per_event=1 / c.copy_rows),
                c.reps,
                copy_events,
            ),
        )
    )
    return rows


# ---------------------------------------------------------------- verification


def _verify_server(url: str, n: int) -> dict[str, Any]:
    """What GET /audit/verify?from=1 runs, without HTTP: the route's own
    worker-thread function (verify_rows over the events read in position order)."""
    from ledger.audit.stored import verify_stored

    t0 = time.perf_counter()
    result, checked = verify_stored(url, "ledger_service", 1, None)
    elapsed = time.perf_counter() - t0
    if not result.ok or checked != n:
        raise RuntimeError(f"verification failed: {result} ({checked} checked)")
    return {"per_second": n / elapsed}


def _export(url: str, path: Path) -> int:
    from ledger import store

    with psycopg.connect(url) as conn, path.open("wb") as out:
        with conn.cursor(name="export") as cur:
            cur.itersize = 5000
            cur.execute(db.q("events", "events_range"), {"from": 1, "to": 2**62})
            n = 0
            for canonical, h in cur:
                out.write(store.export_line(canonical, h))
                n += 1
        conn.rollback()
    return n


# `ledger verify FILE [--jobs N]` as an auditor runs it, under a parent that
# reports the peak resident set of the largest of its processes (KiB on Linux)
_RSS_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t0 = time.perf_counter()\n"
    "p = subprocess.run([sys.executable, '-m', 'ledger', 'verify', *sys.argv[1:]],"
    " capture_output=True, text=True)\n"
    "took = time.perf_counter() - t0\n"
    "print(p.returncode, took, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.stderr.write(p.stdout + p.stderr)\n"
)


def _verify_offline(path: Path, n: int, jobs: int | None, rss: list[float]) -> dict[str, Any]:
    import subprocess
    import sys

    argv = [str(path), *(["--jobs", str(jobs)] if jobs else [])]
    out = subprocess.run(
        [sys.executable, "-c", _RSS_WRAPPER, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=servers.ROOT,
    )
    code, took, maxrss = out.stdout.split()
    if code != "0" or f"({n} events)" not in out.stderr:
        raise RuntimeError(f"offline verification failed: {out.stderr.strip()[:200]}")
    rss.append(int(maxrss) / 1024)
    return {"per_second": n / float(took)}


def _read_limit(url: str, n: int) -> dict[str, Any]:
    """COPY the same rows out and SHA-256 each event's bytes: nothing else."""
    sha = hashlib.sha256
    fromhex = bytes.fromhex
    t0 = time.perf_counter()
    count = 0
    with psycopg.connect(url) as conn:
        with conn.cursor().copy(
            "COPY (SELECT position, stream, version, type, prev_hash, hash, canonical"
            " FROM events ORDER BY position) TO STDOUT"
        ) as copy:
            for line in copy:
                sha(fromhex(bytes(line).rsplit(b"\t", 1)[1][3:-1].decode())).digest()
                count += 1
        conn.rollback()
    elapsed = time.perf_counter() - t0
    if count != n:
        raise RuntimeError(f"read {count} rows, expected {n}")
    return {"per_second": n / elapsed}


OFFLINE = "ledger, offline (the ledger verify command on the export, every core)"


def verification(b: Bench) -> list[Row]:
    c = b.config
    n = c.big_events
    url = b.big_ledger()
    wl = f"verify {n:,} events"
    rows = [
        _guard(
            "verify.server",
            wl,
            "ledger, server side (GET /audit/verify?from=1 without HTTP)",
            lambda: _reps(
                Row(
                    "verify.server",
                    wl,
                    "ledger, server side (GET /audit/verify?from=1 without HTTP)",
                    "events/s",
                ),
                c.reps,
                lambda: _verify_server(url, n),
            ),
        )
    ]
    with tempfile.TemporaryDirectory(prefix="ledger-bench-export-") as tmp:
        path = Path(tmp) / "ledger.ndjson"
        exported: dict[str, int] = {}

        def offline() -> Row:
            t0 = time.perf_counter()
            count = exported["count"] = _export(url, path)
            took = time.perf_counter() - t0
            row = Row("verify.offline", wl, OFFLINE, "events/s")
            rss: list[float] = []
            _reps(row, c.reps, lambda: _verify_offline(path, count, None, rss))
            mib = path.stat().st_size / 2**20
            row.note = (
                f"export took {took:.1f} s ({count / took:,.0f} events/s), {mib:,.0f} MiB;"
                f" peak RSS {max(rss):,.0f} MiB (largest of its processes)"
            )
            return row

        def offline_one() -> Row:
            row = Row("verify.offline1", wl, OFFLINE + ", --jobs 1", "events/s")
            rss: list[float] = []
            _reps(row, c.reps, lambda: _verify_offline(path, exported["count"], 1, rss))
            row.note = f"one process; peak RSS {max(rss):,.0f} MiB"
            return row

        rows.append(_guard("verify.offline", wl, OFFLINE, offline))
        rows.append(_guard("verify.offline1", wl, OFFLINE + ", --jobs 1", offline_one))
    rows.append(
        _guard(
            "verify.readlimit",
            wl,
            "COPY out + hashlib.sha256 (read limit)",
            lambda: _reps(
                Row("verify.readlimit", wl, "COPY out + hashlib.sha256 (read limit)", "events/s"),
                c.reps,
                lambda: _read_limit(url, n),
            ),
        )
    )
    return rows


# --------------------------------------------- replay, rebuild, lag, proofs


def _has(module: str, *names: str) -> Any:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    for name in names:
        if not hasattr(mod, name):
            return None
    return mod


async def _replay_once(url: str, stream: str, at: int, requests: int) -> dict[str, Any]:
    from ledger import store

    tasks = _has("ledger.tasks", "fold")
    lat: list[float] = []
    conn = await psycopg.AsyncConnection.connect(db.service_conninfo(url), autocommit=True)
    try:
        t_start = time.perf_counter()
        for _ in range(requests):
            t0 = time.perf_counter()
            events = await store.read_stream(conn, stream, upto_position=at)
            state = tasks.fold(events) if tasks else events
            lat.append(time.perf_counter() - t0)
            if not events or state is None:
                raise RuntimeError("the replay target has no events")
        elapsed = time.perf_counter() - t_start
    finally:
        await conn.close()
    lat.sort()
    return {
        "per_second": requests / elapsed,
        "p50_ms": percentile(lat, 0.5) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "events": len(events),
    }


@dataclass(slots=True)
class Served:
    """``ledger serve`` (one uvicorn worker) on the big ledger, its tree built."""

    port: int
    key: str  # an auditor's
    tree_size: int
    note: str  # the latest signed checkpoint
    vkey: str


def _auditor_key(b: Bench, url: str) -> str:
    key = b.keys.get(url)
    if key is None:
        key = b.keys[url] = make_key(url, "bench-auditor", "auditor")
    return key


@contextlib.contextmanager
def served_big_ledger(b: Bench) -> Iterator[Served]:
    """Serve the big ledger and wait until a signed checkpoint covers its head,
    so that the tree builder is idle while the reads are measured."""
    url = b.big_ledger()
    key = _auditor_key(b, url)
    with tempfile.TemporaryDirectory(prefix="ledger-bench-home-") as home:
        env = {
            "LEDGER_DATABASE_URL": url,
            "LEDGER_HOME": home,
            "LEDGER_LOG_LEVEL": "warning",
            "LEDGER_LOG_FORMAT": "json",
        }
        t0 = time.perf_counter()
        # the API with the tree builder beside it (ledger serve --tree): one process to start
        with servers.uvicorn("ledger.api.app:create_app_with_tree", env, 1) as port:
            with psycopg.connect(url) as conn:
                head_row = conn.execute("SELECT position FROM ledger_head WHERE id").fetchone()
            head = int(head_row[0]) if head_row else 0
            auth = {"Authorization": f"Bearer {key}"}
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 300
            while True:
                r = httpx.get(f"{base}/audit/checkpoint", headers=auth, timeout=30)
                size = int(r.headers.get("X-Ledger-Tree-Size", "0")) if r.is_success else 0
                if size >= head:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no checkpoint covers the head {head} after 300 s")
                time.sleep(0.2)
            took = time.perf_counter() - t0
            if not b.tree_note:
                b.tree_note = (
                    f"The service started on the {b.config.big_events:,}-event ledger built its"
                    f" Merkle tree and signed a checkpoint of size {size:,} in {took:.1f} s (start"
                    " of uvicorn included); the reads below start once it has."
                )
                b.notes.append(b.tree_note)
            vkey = httpx.get(f"{base}/audit/public-key", headers=auth, timeout=30).text.strip()
            yield Served(port, key, size, r.text, vkey)


def _http_latency(
    b: Bench, row: Row, served: Served, path: str, rand_max: int | None = None
) -> Row:
    """Requests one after the other on one keep-alive connection (latency, not
    throughput), from the load generator's own process."""
    c = b.config
    spec: dict[str, Any] = {
        "port": served.port,
        "method": "GET",
        "path": path,
        "headers": {"Authorization": f"Bearer {served.key}"},
        "connections": 1,
        "seconds": c.read_seconds,
        "warmup": c.http_warmup,
    }
    if rand_max is not None:
        spec["rand_max"] = rand_max
    for rep in range(c.reps):
        spec["seed"] = rep
        r = servers.load(spec)
        if r["requests"] == 0 or r["non_2xx"]:
            raise RuntimeError(f"{path}: {r['statuses']} {r['errors']}")
        row.samples.append(r["per_second"])
        row.p50_ms.append(r["p50_ms"])
        row.p99_ms.append(r["p99_ms"])
    return row


def _replay_target(url: str, n: int) -> tuple[str, int, int]:
    stream = "task-" + ledgerdata.REPLAY_TASK
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT max(position), count(*) FROM events WHERE stream = %s", (stream,)
        ).fetchone()
    at = int(row[0]) if row and row[0] else n
    count = int(row[1]) if row else 0
    return stream, at, count


def replay(b: Bench) -> list[Row]:
    c = b.config
    n = c.big_events
    wl = f"replay one task (100 events) among {n:,}"
    if _has("ledger.tasks", "fold") is None:
        return [Row("replay.ledger", wl, "ledger", "replays/s", status=NOT_BUILT)]
    url = b.big_ledger()
    stream, at, count = _replay_target(url, n)
    wl = f"replay one task ({count} events) among {n:,}"

    def over_http() -> Row:
        r = Row("replay.ledger", wl, "ledger, GET /tasks/{id}/replay?position=", "replays/s")
        r.note = "HTTP, one request at a time"
        with served_big_ledger(b) as served:
            task = ledgerdata.REPLAY_TASK
            return _http_latency(b, r, served, f"/tasks/{task}/replay?position={at}")

    def in_process() -> Row:
        r = Row(
            "replay.inprocess",
            wl,
            "ledger in process (read_stream up to a position + tasks.fold)",
            "replays/s",
        )
        r.note = "no HTTP: the read and the fold alone"
        return _reps(
            r, c.reps, lambda: asyncio.run(_replay_once(url, stream, at, c.replay_requests))
        )

    return [
        _guard("replay.ledger", wl, "ledger, GET /tasks/{id}/replay", over_http),
        _guard("replay.inprocess", wl, "ledger in process", in_process),
    ]


def _check_proofs(url: str, served: Served, count: int) -> None:
    """Verify ``count`` inclusion proofs for random positions against the signed
    checkpoint, as an auditor would: a benchmark of wrong answers is no benchmark."""
    import random

    from ledger.proofs import merkle, note

    verifier = note.Verifier.parse(served.vkey)
    cp, _good = note.open_checkpoint(served.note, [verifier])
    rng = random.Random(7)
    base = f"http://127.0.0.1:{served.port}"
    auth = {"Authorization": f"Bearer {served.key}"}
    with (
        httpx.Client(base_url=base, headers=auth, timeout=30) as client,
        psycopg.connect(url) as conn,
    ):
        for _ in range(count):
            pos = rng.randint(1, cp.size)
            proof = client.get(
                "/audit/proof/inclusion", params={"position": pos, "tree_size": cp.size}
            ).json()
            row = conn.execute("SELECT hash FROM events WHERE position = %s", (pos,)).fetchone()
            assert row is not None
            merkle.verify_inclusion(
                pos - 1,
                cp.size,
                merkle.leaf_hash(bytes(row[0])),
                [bytes.fromhex(h) for h in proof["hashes"]],
                cp.root,
            )


def proofs(b: Bench) -> list[Row]:
    n = b.config.big_events
    wl = f"inclusion proof at {n:,} events"
    if _has("ledger.proofs.store", "inclusion") is None:
        return [Row("proof.ledger", wl, "ledger", "proofs/s", status=NOT_BUILT)]
    url = b.big_ledger()
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        try:
            served = stack.enter_context(served_big_ledger(b))
        except Exception as exc:
            status = f"error: {type(exc).__name__}: {exc}"[:200]
            return [Row("proof.ledger", wl, "ledger", "proofs/s", status=status)]
        size = served.tree_size

        def inclusion() -> Row:
            r = Row(
                "proof.ledger",
                wl,
                "ledger, GET /audit/proof/inclusion (random positions)",
                "proofs/s",
            )
            _http_latency(
                b,
                r,
                served,
                f"/audit/proof/inclusion?position={{rand}}&tree_size={size}",
                rand_max=size,
            )
            checked = 50 if n >= 100_000 else 10
            _check_proofs(url, served, checked)
            r.note = (
                f"HTTP, one request at a time, tree size {size:,}; {checked} proofs"
                " verified against the signed checkpoint"
            )
            return r

        def consistency() -> Row:
            r = Row(
                "proof.consistency",
                f"consistency proof at {n:,} events",
                "ledger, GET /audit/proof/consistency (random old sizes)",
                "proofs/s",
            )
            r.note = f"HTTP, one request at a time, from a random size to {size:,}"
            return _http_latency(
                b, r, served, f"/audit/proof/consistency?from={{rand}}&to={size}", rand_max=size
            )

        rows.append(_guard("proof.ledger", wl, "ledger", inclusion))
        rows.append(_guard("proof.consistency", wl, "ledger", consistency))
    return rows


LAG_SYSTEM = "ledger (commit to visible in the task view)"


@contextlib.contextmanager
def _runner(url: str) -> Iterator[None]:
    """``python -m projections`` on ``url`` as its own process, once it leads."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LEDGER_DATABASE_URL": url, "LEDGER_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "projections"], env=env)
    try:
        deadline = time.monotonic() + 30
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*) FROM projection_checkpoints WHERE holder IS NOT NULL"
                ).fetchone()
                if row and row[0] >= 2:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the projection runner did not start")
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


_LIFECYCLE = ["TaskSubmitted", "TaskClaimed"] + ["TaskStepRecorded"] * 7 + ["TaskCompleted"]


def _lifecycle_event(k: int, worker: str) -> NewEvent:
    """Event ``k`` of a 10-event task history (the shape of bench.ledgerdata)."""
    etype = _LIFECYCLE[k]
    if etype == "TaskSubmitted":
        return NewEvent(etype, {"task_type": "position_check", "payload": PAYLOAD, "priority": 0})
    if etype == "TaskClaimed":
        return NewEvent(
            etype, {"worker": worker, "lease_expires_at": "2030-01-01T00:00:00.000000Z"}
        )
    if etype == "TaskCompleted":
        return NewEvent(etype, {"result": {"status": "processed"}})
    return NewEvent(etype, {"kind": "note", "content": f"step {k - 1}"})


async def _lag_once(url: str, rate: int, seconds: float, warmup: float) -> dict[str, Any]:
    """Append single-event commands at a steady ``rate`` for ``seconds`` (after
    ``warmup``): 200 task histories at a time, each event on the next task in
    turn. Each event's lag is from its append returning (committed) to the
    first ``ledger_projections`` notification of the task view at or past its
    position (the runner sends it as it commits the batch)."""
    import bisect

    seen: list[tuple[int, float]] = []  # (position, when), as the runner announced them
    listener = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await listener.execute("LISTEN ledger_projections")

    async def listen() -> None:
        async for n in listener.notifies():
            name, _, pos = n.payload.rpartition(":")
            if name == "tasks":
                seen.append((int(pos), time.perf_counter()))

    listening = asyncio.create_task(listen())
    appender = Appender(url)
    await appender.start()
    committed: list[tuple[int, float]] = []
    streams = [f"task-{uuid.uuid4()}" for _ in range(200)]
    steps = [0] * len(streams)
    tick = 0.005
    per_tick = rate * tick
    owed = 0.0
    sent = 0
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, measure: bool) -> None:
        k = steps[i]
        steps[i] += 1
        cmd = StreamAppend(streams[i], [_lifecycle_event(k, "agent-1")], _meta(i))
        if k == len(_LIFECYCLE) - 1:
            streams[i], steps[i] = f"task-{uuid.uuid4()}", 0
        (rec,) = await appender.append(cmd)
        if measure:
            committed.append((rec["position"], time.perf_counter()))

    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + seconds
    try:
        n = 0
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            owed += per_tick
            while owed >= 1:
                owed -= 1
                t = asyncio.create_task(one(sent % len(streams), now >= measure_from))
                pending.add(t)
                t.add_done_callback(pending.discard)
                sent += 1
            n += 1
            await asyncio.sleep(max(0.0, start + n * tick - time.perf_counter()))
        if pending:
            await asyncio.gather(*pending)
        achieved = len(committed) / seconds
        last = max(p for p, _ in committed)
        deadline = time.perf_counter() + 30
        while not seen or seen[-1][0] < last:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the task view did not reach {last} in 30 s")
            await asyncio.sleep(0.01)
    finally:
        await appender.close()
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await listener.close()
    positions = [p for p, _ in seen]
    lags = []
    for pos, t_commit in committed:
        i = bisect.bisect_left(positions, pos)
        lags.append(max(0.0, seen[i][1] - t_commit))
    lags.sort()
    return {
        "p50_ms": percentile(lags, 0.5) * 1000,
        "p99_ms": percentile(lags, 0.99) * 1000,
        "achieved": achieved,
    }


def _lag_row(b: Bench, rate: int) -> Row:
    c = b.config
    seconds = {"full": 10.0, "quick": 2.0}.get(c.mode, 1.0)
    warmup = {"full": 1.0, "quick": 0.3}.get(c.mode, 0.2)
    row = Row(f"lag{rate}.ledger", f"projection lag at {rate:,} events/s", LAG_SYSTEM, "ms")
    achieved = []
    for _ in range(c.reps):
        with b.server.database(f"lag{rate}") as url, _runner(url):
            r = asyncio.run(_lag_once(url, rate, seconds, warmup))
        row.samples.append(r["p50_ms"])
        row.p50_ms.append(r["p50_ms"])
        row.p99_ms.append(r["p99_ms"])
        achieved.append(r["achieved"])
    row.note = (
        f"median of p50 per run; {seconds:g} s runs at {min(achieved):,.0f}-"
        f"{max(achieved):,.0f} events/s achieved; runner: python -m projections"
    )
    return row


def projection_lag(b: Bench) -> list[Row]:
    """Commit-to-visible lag of the task view under a steady append rate."""
    return [
        _guard(
            f"lag{rate}.ledger",
            f"projection lag at {rate:,} events/s",
            LAG_SYSTEM,
            lambda rate=rate: _lag_row(b, rate),
        )
        for rate in (1000, 2000)
    ]


def _rebuild_key(name: str) -> str:
    return "rebuild.ledger" if name == "tasks" else f"rebuild.{name}"  # the ratio reads the former


def _rebuild_row(b: Bench, name: str) -> Row:
    from projections.rebuild import rebuild as rebuild_projection

    c = b.config
    url = b.big_ledger()
    wl = f"rebuild a view from {c.big_events:,} events"
    row = Row(_rebuild_key(name), wl, f"ledger projections rebuild {name}", "s")
    swaps = []
    for _ in range(c.reps):
        out = rebuild_projection(url, name)
        row.samples.append(out.seconds)
        swaps.append(out.swap_seconds * 1000)
    best = min(row.samples)
    row.note = (
        f"{c.big_events / best:,.0f} events/s at best; the swap held the view "
        f"{min(swaps):.0f}-{max(swaps):.0f} ms"
    )
    return row


def rebuild(b: Bench) -> list[Row]:
    """``ledger projections rebuild`` on the shared big ledger, each view."""
    wl = f"rebuild a view from {b.config.big_events:,} events"
    return [
        _guard(
            _rebuild_key(name),
            wl,
            f"ledger projections rebuild {name}",
            lambda name=name: _rebuild_row(b, name),
        )
        for name in ("tasks", "task_counts")
    ]


def scale(b: Bench) -> list[Row]:
    """Appends at 64 writers on an empty ledger and on one of scale_events.

    The big ledger is built first; then the two are measured in turns (empty,
    full, empty, full, ...), so that a machine that gets busier or quieter
    during the run weighs on both alike."""
    c = b.config
    if not c.scale:
        return []
    w = max(c.writers)
    wl = f"append 1 event, {w} writers: empty vs {c.scale_events:,} stored"
    reps = c.reps if c.mode == "tiny" else max(c.reps, 5)
    empty = Row("scale.empty", wl, "ledger, empty", "events/s")
    full = Row("scale.full", wl, f"ledger, {c.scale_events:,} events stored", "events/s")
    with b.server.database("scale_full") as full_url, b.server.database("scale_empty") as url:

        def run() -> Row:
            t0 = time.perf_counter()
            ledgerdata.build(full_url, c.scale_events)
            took = time.perf_counter() - t0
            full.note = (
                f"built in {took:.0f} s ({c.scale_events / took:,.0f} events/s: COPY, then"
                " VACUUM ANALYZE); measured in turns with the empty one"
            )
            cpe: dict[str, list[float]] = {empty.key: [], full.key: []}
            for _ in range(reps):
                for row, u in ((empty, url), (full, full_url)):
                    r = asyncio.run(_ours(u, w, 1, c.append_seconds, c.append_warmup))
                    row.samples.append(r["per_second"])
                    row.p50_ms.append(r["p50_ms"])
                    row.p99_ms.append(r["p99_ms"])
                    if r["commits_per_event"] is not None:
                        cpe[row.key].append(r["commits_per_event"])
            for row in (empty, full):
                if cpe[row.key]:
                    row.commits_per_event = statistics.fmean(cpe[row.key])
            # HTTP submit on both, with `ledger serve` alone: the runner and the tree
            # builder would spend the run catching up with a ledger built by COPY
            for key, system, u in (
                ("scale.http.empty", "ledger serve alone, empty", url),
                ("scale.http.full", f"ledger serve alone, {c.scale_events:,} stored", full_url),
            ):
                http.append(
                    _guard(
                        key,
                        "HTTP submit",
                        system,
                        partial(_http_rows, b, key, system, _ledger("serve", u), u, c.workers),
                    )
                )
            return full

        http: list[Row] = []
        got = _guard("scale.full", wl, full.system, run)
    if not got.ok:
        empty.status = "error: see the row below"
    return [empty, got, *http]


def _guard(key: str, workload: str, system: str, run: Callable[[], Row]) -> Row:
    """Run one row; a failure becomes a row that says so, not a crash."""
    try:
        return run()
    except Exception as exc:
        import structlog

        structlog.get_logger("bench").warning("workload_failed", key=key, error=repr(exc))
        return Row(key, workload, system, "", status=f"error: {type(exc).__name__}: {exc}"[:200])


def console(b: Bench) -> list[Row]:
    from bench.console import console_pages  # it builds on this module's helpers

    return console_pages(b)


WORKLOADS: dict[str, Callable[[Bench], list[Row]]] = {
    "http": http_submit,
    "appends": appends,
    "batch": batches,
    "verify": verification,
    "lag": projection_lag,
    "rebuild": rebuild,
    "replay": replay,
    "proof": proofs,
    "scale": scale,
    "console": console,
}


@contextlib.contextmanager
def bench(server: Server, config: Config) -> Iterator[Bench]:
    b = Bench(server, config)
    try:
        yield b
    finally:
        b.close()
