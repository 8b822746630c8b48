"""Backpressure, for real: 2,000 commands arrive at once at a live ``ledger
serve``. The writer's queue is bounded, so what it cannot take is answered
503 with Retry-After at once; meanwhile ``/health`` keeps answering within
its bound, the process's memory stays bounded, and every acknowledged
command is in the ledger exactly once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from ledger import errors
from ledger.appender import Appender
from ledger.events import NewEvent, StreamAppend
from tests.support import ROOT, auth, create_key, ledger_process, wait_until

META = {"actor": "tester", "role": "agent", "request_id": "backpressure"}

BURST = 2000
HEALTH_BOUND_SECONDS = 1.0  # what a load balancer's probe gets
RSS_GROWTH_BOUND_MB = 200.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.timeout(240)
def test_a_burst_of_2000_commands_is_answered_and_health_stays_up(
    db_url: str, tmp_path: Path
) -> None:
    agent = create_key(db_url, "agent-1", "agent")
    with ledger_process("serve", db_url, tmp_path / "home") as (server, base):
        with httpx.Client(base_url=base, timeout=10) as c:  # warm: keys cached, pools full
            for _ in range(20):
                c.get("/health")
        before = rss_mb(server.pid)
        probes: list[tuple[float, int]] = []
        peak = [before]
        done = threading.Event()

        def watch() -> None:
            with httpx.Client(base_url=base, timeout=10) as c:
                while not done.is_set():
                    t0 = time.monotonic()
                    status = c.get("/health").status_code
                    probes.append((time.monotonic() - t0, status))
                    peak[0] = max(peak[0], rss_mb(server.pid))
                    done.wait(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            out = subprocess.run(
                [sys.executable, "-m", "bench.burst", base, agent, str(BURST)],
                cwd=ROOT,
                capture_output=True,
                timeout=180,
                check=True,
            )
        finally:
            done.set()
            watcher.join(timeout=30)
        after = rss_mb(server.pid)
        assert server.poll() is None

    result = orjson.loads(out.stdout)
    answers = result["answers"]
    statuses: dict[int, int] = {}
    for a in answers:
        statuses[a["status"]] = statuses.get(a["status"], 0) + 1
    print(
        f"\nburst of {BURST} in {result['seconds']} s: {statuses}; /health max "
        f"{max(p[0] for p in probes):.3f} s over {len(probes)} probes; RSS {before:.0f} -> "
        f"peak {peak[0]:.0f} -> {after:.0f} MB"
    )
    assert len(answers) == BURST
    assert set(statuses) <= {201, 503}, statuses  # no 500, no dropped connection
    assert statuses.get(201), "nothing got through"
    for a in answers:
        if a["status"] == 503:
            assert a["retry_after"] and int(a["retry_after"]) >= 1
            assert a["media"].startswith("application/problem+json")
    assert probes, "no /health probe ran during the burst"
    assert all(status == 200 for _, status in probes), probes
    assert max(took for took, _ in probes) < HEALTH_BOUND_SECONDS, probes
    assert peak[0] - before < RSS_GROWTH_BOUND_MB, (before, peak[0])

    acked = {a["id"] for a in answers if a["status"] == 201}
    with psycopg.connect(db_url) as conn:
        streams = [
            s
            for (s,) in conn.execute("SELECT stream FROM events_json WHERE type = 'TaskSubmitted'")
        ]
    assert len(streams) == len(set(streams))
    assert {f"task-{i}" for i in acked} <= set(streams)
    assert len(streams) == len(acked)  # a refused command wrote nothing


def _submit(c: httpx.Client, agent: str) -> httpx.Response:
    return c.post(
        "/tasks",
        json={"task_type": "position_check", "payload": {}},
        headers={**auth(agent), "Idempotency-Key": uuid.uuid4().hex},
    )


@pytest.mark.timeout(120)
def test_past_the_inflight_limit_a_request_is_refused_503_and_health_still_answers(
    db_url: str, tmp_path: Path
) -> None:
    """The writer is held up (the test holds the ledger's head row), so the
    admitted commands stay in flight: the ones past the limit wait their turn
    for the pool's timeout and get a 503 with Retry-After; /health answers."""
    agent = create_key(db_url, "agent-1", "agent")
    env = {"LEDGER_MAX_INFLIGHT_REQUESTS": "4", "LEDGER_POOL_TIMEOUT_SECONDS": "0.5"}
    with (
        ledger_process("serve", db_url, tmp_path / "home", **env) as (_server, base),
        httpx.Client(base_url=base, timeout=30) as c,
        psycopg.connect(db_url) as holder,
    ):
        assert _submit(c, agent).status_code == 201  # warm: the key is cached
        holder.execute("SELECT position FROM ledger_head FOR UPDATE")  # the writer waits
        answers: list[httpx.Response] = []

        def one() -> None:
            with httpx.Client(base_url=base, timeout=30) as mine:
                answers.append(_submit(mine, agent))

        threads = [threading.Thread(target=one) for _ in range(10)]
        for t in threads:
            t.start()
        wait_until(lambda: len(answers) >= 6, timeout=20, what="the 6 past the limit refused")
        refused = list(answers)
        t0 = time.monotonic()
        assert c.get("/health").status_code == 200
        assert time.monotonic() - t0 < HEALTH_BOUND_SECONDS
        holder.rollback()  # the writer goes on
        for t in threads:
            t.join(timeout=30)
    assert [r.status_code for r in refused] == [503] * 6
    for r in refused:
        assert r.headers["retry-after"] == "1"
        assert r.json()["type"].endswith("/overloaded")
    assert sorted(r.status_code for r in answers) == [201] * 4 + [503] * 6


def test_the_writers_queue_is_bounded(db_url: str) -> None:
    """Past ``queue_max`` waiting appends, an append is refused at once
    (Overloaded, nothing written); the ones queued are all written."""

    def cmd(i: int) -> StreamAppend:
        return StreamAppend(f"test-{i}", [NewEvent("Tested", {"i": i})], META)

    async def go() -> tuple[list[Any], BaseException]:
        app = Appender(db_url, queue_max=3)
        await app.start()
        try:
            with psycopg.connect(db_url) as holder:
                holder.execute("SELECT position FROM ledger_head FOR UPDATE")
                first = asyncio.create_task(app.append(cmd(0)))
                while app._queue.qsize() or not app.batches_started:
                    await asyncio.sleep(0.01)  # the writer took it and waits on the lock
                queued = [asyncio.create_task(app.append(cmd(i))) for i in (1, 2, 3)]
                await asyncio.sleep(0)
                t0 = time.monotonic()
                with pytest.raises(errors.Overloaded) as refused:
                    await app.append(cmd(4))
                assert time.monotonic() - t0 < 0.5  # at once, not after the wait
                holder.rollback()
            return await asyncio.gather(first, *queued), refused.value
        finally:
            await app.close()

    written, refusal = asyncio.run(go())
    assert [w[0]["position"] for w in written] == [1, 2, 3, 4]
    assert refusal.extra["retry_after"] == 1
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE stream = 'test-4'").fetchone()
    assert row == (0,)
