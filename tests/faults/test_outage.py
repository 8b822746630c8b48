"""PostgreSQL outages, for real: a server of the test's own is stopped
(``-m fast``), crashed (``-m immediate``) or has every session ended while
clients keep sending commands and reads to a live ``ledger serve``. Every
answer is a success or a 503 problem with ``Retry-After``, none takes more
than the bound, the service heals by itself, and every acknowledged command
is in the ledger exactly once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from bench.pgctl import OwnPostgres
from ledger import db
from tests.support import auth, create_key, ledger_process, wait_until

# Settings: a turn and a pooled connection are waited for 2.5 s each, a
# connection attempt 3 s, a statement 5 s; the bar is ~5 s.
BOUND_SECONDS = 5.5


@dataclass(slots=True)
class Seen:
    """What the clients saw: (sent at, seconds taken, status, Retry-After, media type)."""

    answers: list[tuple[float, float, int, str | None, str]] = field(default_factory=list)
    acked: dict[int, str] = field(default_factory=dict)  # logical submit n -> task id
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, t0: float, r: httpx.Response) -> None:
        with self.lock:
            self.answers.append(
                (
                    t0,
                    time.monotonic() - t0,
                    r.status_code,
                    r.headers.get("retry-after"),
                    r.headers.get("content-type", ""),
                )
            )

    def successes_after(self, t: float) -> int:
        with self.lock:
            return sum(1 for t0, _, s, _, _ in self.answers if t0 > t and s < 300)


def _load(base: str, key: str, seen: Seen, stop: threading.Event, w: int) -> None:
    """Submit tasks (a retry keeps its Idempotency-Key until it is answered) and read."""
    n = w * 1_000_000
    with httpx.Client(base_url=base, headers=auth(key), timeout=30) as c:
        while not stop.is_set():
            n += 1
            idem = uuid.uuid4().hex
            body = {"task_type": "position_check", "payload": {"n": n}}
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = c.post("/tasks", json=body, headers={"Idempotency-Key": idem})
                except httpx.HTTPError as exc:
                    seen.errors.append(repr(exc))
                    break
                seen.note(t0, r)
                if r.status_code in (200, 201):
                    with seen.lock:
                        seen.acked[n] = r.json()["id"]
                    break
                if r.status_code != 503:
                    break
                time.sleep(0.05)
            t0 = time.monotonic()
            try:
                r = c.get("/audit/head")
            except httpx.HTTPError as exc:
                seen.errors.append(repr(exc))
                continue
            seen.note(t0, r)


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    with OwnPostgres() as pg:
        yield pg


def _ledger(pg: OwnPostgres) -> tuple[str, str]:
    """A database on the test's server with the schema and an agent key."""
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE ledger")
    url = pg.url.replace("/postgres?", "/ledger?")
    db.apply_schema(url)
    return url, create_key(url, "agent-1", "agent")


def _outage(pg: OwnPostgres, kind: str, seconds: float) -> None:
    if kind == "terminate":
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # every session, again and again
            pg.terminate_sessions()
            time.sleep(0.2)
        return
    pg.stop(kind)
    time.sleep(seconds)  # the outage itself: the clients keep sending meanwhile
    pg.start()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["fast", "immediate", "terminate"])
def test_an_outage_is_answered_503_with_retry_after_and_heals(
    own_pg: OwnPostgres, tmp_path: Path, kind: str
) -> None:
    url, key = _ledger(own_pg)
    seen = Seen()
    stop = threading.Event()
    with ledger_process("serve", url, tmp_path / "home") as (_server, base):
        threads = [
            threading.Thread(target=_load, args=(base, key, seen, stop, w)) for w in range(6)
        ]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(seen.acked) >= 30, timeout=30, what="30 acknowledged submits")
            began = time.monotonic()
            _outage(own_pg, kind, 3.0)
            back = time.monotonic()
            # /health says what is going on at once, in its bound, and heals too
            wait_until(
                lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200,
                timeout=15,
                what="/health answering 200 again",
            )
            healed = wait_until(
                lambda: seen.successes_after(back) >= 20,
                timeout=20,
                what="commands succeeding again after the outage",
            )
            assert healed
            recovered_in = time.monotonic() - back
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)

    during = [a for a in seen.answers if a[0] >= began]
    statuses = {s for _, _, s, _, _ in seen.answers}
    assert statuses <= {200, 201, 503}, statuses  # never a 500, never anything else
    refused = [a for a in seen.answers if a[2] == 503]
    assert kind == "terminate" or refused, "the outage was never seen: it tested nothing"
    for _t0, _took, _s, retry_after, media in refused:
        assert retry_after is not None and int(retry_after) >= 1
        assert media.startswith("application/problem+json")
    slowest = max(took for _, took, _, _, _ in seen.answers)
    assert slowest < BOUND_SECONDS, f"a request took {slowest:.1f} s"
    assert not seen.errors, seen.errors[:3]  # the API itself never went away
    print(
        f"\n{kind}: {len(seen.answers)} answers, {len(refused)} 503, slowest {slowest:.2f} s, recovered in {recovered_in:.2f} s, acked {len(seen.acked)}"
    )
    assert during and recovered_in < 20

    # every acknowledged submit is in the ledger, and no logical submit twice
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT (body->'data'->'payload'->>'n')::bigint, stream FROM events_json "
            "WHERE type = 'TaskSubmitted'"
        ).fetchall()
    written: dict[int, list[str]] = {}
    for n, stream in rows:
        written.setdefault(n, []).append(stream)
    assert all(len(s) == 1 for s in written.values()), "a submit was applied twice"
    for n, task_id in seen.acked.items():
        assert written.get(n) == [f"task-{task_id}"], n


def _health(base: str) -> tuple[float, int, str | None]:
    t0 = time.monotonic()
    r = httpx.get(f"{base}/health", timeout=5)
    return time.monotonic() - t0, r.status_code, r.headers.get("retry-after")


@pytest.mark.timeout(120)
def test_health_while_postgres_is_down(own_pg: OwnPostgres, tmp_path: Path) -> None:
    url, _key = _ledger(own_pg)
    with ledger_process("serve", url, tmp_path / "home") as (_server, base):
        assert _health(base)[1] == 200
        own_pg.stop("immediate")
        try:
            for _ in range(3):
                took, status, retry_after = _health(base)
                assert (status, retry_after is not None) == (503, True)
                assert took < 2.0, took
        finally:
            own_pg.start()
        wait_until(lambda: _health(base)[1] == 200, timeout=15, what="/health healed")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["fast", "immediate"])
def test_the_runner_and_the_tree_builder_resume_after_an_outage(
    own_pg: OwnPostgres, tmp_path: Path, kind: str
) -> None:
    """``ledger run``: the projection runner (its own process) and the tree
    builder (in the API process) ride out a PostgreSQL stop or crash without
    dying, and fold and sign what is written after it."""
    import psutil

    url, agent = _ledger(own_pg)
    auditor = create_key(url, "auditor-1", "auditor")
    env = {"LEDGER_CHECKPOINT_INTERVAL_SECONDS": "0.2"}
    with (
        ledger_process("run", url, tmp_path / "home", **env) as (server, base),
        httpx.Client(base_url=base, timeout=10) as c,
    ):

        def submit() -> tuple[str, int] | None:
            r = c.post(
                "/tasks",
                json={"task_type": "position_check", "payload": {}},
                headers={**auth(agent), "Idempotency-Key": uuid.uuid4().hex},
            )
            return (r.json()["id"], r.json()["position"]) if r.status_code == 201 else None

        def folded(task_id: str, position: int) -> bool:
            r = c.get(f"/tasks/{task_id}", params={"min_position": position}, headers=auth(agent))
            return r.status_code == 200

        def signed(size: int) -> bool:
            r = c.get("/audit/checkpoint", headers=auth(auditor))
            return r.status_code == 200 and int(r.headers["x-ledger-tree-size"]) >= size

        task_id, pos = wait_until(submit, timeout=15, what="a first submit")
        wait_until(lambda: folded(task_id, pos) and signed(pos), timeout=15, what="caught up")
        companions = {p.pid for p in psutil.Process(server.pid).children(recursive=True)}
        own_pg.stop(kind)
        time.sleep(2.0)  # both keep trying meanwhile
        own_pg.start()
        task_id, pos = wait_until(submit, timeout=20, what="a submit after the outage")
        wait_until(lambda: folded(task_id, pos), timeout=30, what="the view folding it")
        wait_until(lambda: signed(pos), timeout=30, what="a checkpoint covering it")
        after = {p.pid for p in psutil.Process(server.pid).children(recursive=True)}
        assert companions <= after, "a companion process died in the outage"
        assert server.poll() is None
