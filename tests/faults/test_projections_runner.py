"""The projection runner as real processes (``python -m projections``) on a
real PostgreSQL: SIGKILL in the middle of a batch, a hot standby taking
over, and events committed while no runner was up."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import ledgerdata
from projections.rebuild import check
from tests.projection_support import (
    NAMES,
    applied_matches_ledger,
    head,
    kill9,
    positions,
    start_runner,
    stop,
    submit_tasks,
    wait_caught_up,
)
from tests.support import wait_until


def assert_views_equal_a_fold(db_url: str, *, filled: bool = True) -> None:
    for name in NAMES:
        result = check(db_url, "ledger_service", name)
        assert result.ok, (name, result.hash_ok, result.differences[:5])
        assert result.rows > 0 or not filled


def open_batch(conn: psycopg.Connection[Any]) -> int | None:
    """The pid of the task-view runner's session while it is inside a batch
    transaction that has taken its checkpoint row (so holds an xid)."""
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'ledger-projection:tasks'"
        " AND backend_xid IS NOT NULL AND state IN ('active', 'idle in transaction')"
    ).fetchone()
    return int(row[0]) if row else None


def test_sigkill_in_the_middle_of_a_batch_then_restart_applies_each_event_once(
    db_url: str, super_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    ledgerdata.build(db_url, 40_000)
    env = {"LEDGER_PROJECTION_BATCH_SIZE": "4000"}
    with (tmp_path / "first.log").open("wb") as log:
        runner = start_runner(db_url, log, **env)
        deadline = time.monotonic() + 60
        killed_in_batch = None
        try:
            while time.monotonic() < deadline:
                pos = positions(super_conn).get("tasks", 0)
                pid = open_batch(super_conn) if pos > 0 else None
                if pid is not None:
                    kill9(runner)
                    killed_in_batch = pid
                    break
                time.sleep(0.005)
        finally:
            stop(runner)
    assert killed_in_batch is not None, "never saw the runner inside a batch"
    # the killed session's transaction rolls back (its backend goes): the view stopped part way
    wait_until(
        lambda: super_conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)", (killed_in_batch,)
        ).fetchone()[0],
        what="the killed runner's session ended",
    )
    at_kill = positions(super_conn)
    assert 0 < at_kill["tasks"] < head(super_conn), at_kill
    applied_matches_ledger(super_conn)
    # what was committed is a fold of its prefix (the counts may not have begun)
    assert_views_equal_a_fold(db_url, filled=False)

    with (tmp_path / "second.log").open("wb") as log:
        runner = start_runner(db_url, log, **env)
        try:
            wait_caught_up(db_url, timeout=120)
        finally:
            stop(runner)
    assert positions(super_conn)["tasks"] == head(super_conn) == 40_000
    applied_matches_ledger(super_conn)
    assert_views_equal_a_fold(db_url)
    (n,) = super_conn.execute("SELECT count(*) FROM task_view").fetchone() or (0,)
    assert n == 40_000 // 10 + 1  # the histories' tasks, and the long replay task
    (done,) = super_conn.execute(
        "SELECT n FROM task_counts WHERE dimension = 'task_type' AND key = 'position_check'"
        " AND status = 'done'"
    ).fetchone() or (0,)
    (completed,) = super_conn.execute(
        "SELECT count(*) FROM events WHERE type = 'TaskCompleted'"
    ).fetchone() or (0,)
    assert done == completed > 3000


def test_two_runners_one_leads_the_other_takes_over_when_it_is_killed(
    db_url: str, super_conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    ledgerdata.build(db_url, 3_000)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with logs[0].open("wb") as la, logs[1].open("wb") as lb:
        a = start_runner(db_url, la)
        try:
            wait_caught_up(db_url)
            b = start_runner(db_url, lb)
            try:
                deadline = time.monotonic() + 30
                # b is up and has tried each projection's lock, and found it held
                while logs[1].read_bytes().count(b"projection_standing_by") < len(NAMES):
                    assert time.monotonic() < deadline and b.poll() is None, "b never stood by"
                    time.sleep(0.1)
                submit_tasks(db_url, 50)
                wait_caught_up(db_url)
                holders = dict(
                    super_conn.execute("SELECT name, holder FROM projection_checkpoints")
                )
                assert all(h.endswith(f":{a.pid}") for h in holders.values()), holders
                assert b"projection_lead_taken" not in logs[1].read_bytes()
                applied_matches_ledger(super_conn)

                kill9(a)
                t0 = time.monotonic()
                submit_tasks(db_url, 50)
                h = wait_caught_up(db_url, timeout=30)
                took = time.monotonic() - t0
                assert took < 10, f"the standby took {took:.1f} s to take over"
                holders = dict(
                    super_conn.execute("SELECT name, holder FROM projection_checkpoints")
                )
                assert all(h.endswith(f":{b.pid}") for h in holders.values()), holders
                assert positions(super_conn)["tasks"] == h == 3_100
            finally:
                stop(b)
        finally:
            stop(a)
    assert b"projection_lead_taken" in logs[1].read_bytes()
    applied_matches_ledger(super_conn)
    assert_views_equal_a_fold(db_url)


def test_events_committed_while_the_runner_is_down_are_folded_when_it_is_back(
    db_url: str, super_conn: psycopg.Connection[Any]
) -> None:
    submit_tasks(db_url, 20)
    runner = start_runner(db_url)
    try:
        wait_caught_up(db_url)
    finally:
        stop(runner)
    before = positions(super_conn)
    submit_tasks(db_url, 30, task_type="pricing_check")
    submit_tasks(db_url, 10, actor="agent-2")
    assert positions(super_conn) == before  # nobody folds them meanwhile
    runner = start_runner(db_url)
    try:
        h = wait_caught_up(db_url)
    finally:
        stop(runner)
    assert h == 60
    applied_matches_ledger(super_conn)
    assert_views_equal_a_fold(db_url)
    counts = dict(
        ((d, k), n)
        for d, k, n in super_conn.execute(
            "SELECT dimension, key, n FROM task_counts WHERE status = 'queued'"
        )
    )
    assert counts == {
        ("agent", "agent-1"): 50,
        ("agent", "agent-2"): 10,
        ("task_type", "position_check"): 30,
        ("task_type", "pricing_check"): 30,
    }


def test_positions_become_visible_in_order_under_concurrent_appends(db_url: str) -> None:
    """What the runner relies on: whenever an event is visible, every event
    before it is too (ledger_append holds the head row lock until it commits),
    so reading 'after the checkpoint, up to the head' never skips one."""
    stop = threading.Event()
    failures: list[str] = []
    checks = 0

    def append() -> None:
        while not stop.is_set():
            submit_tasks(db_url, 3)

    def watch() -> None:
        nonlocal checks
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not stop.is_set():
                (top,) = conn.execute(
                    "SELECT coalesce(max(position), 0) FROM events"
                ).fetchone() or (0,)
                (n,) = conn.execute(
                    "SELECT count(*) FROM events WHERE position <= %s", (top,)
                ).fetchone() or (0,)
                if n != top:
                    failures.append(f"{n} events visible at or below {top}")
                h = head(conn)
                (m,) = conn.execute(
                    "SELECT count(*) FROM events WHERE position <= %s", (h,)
                ).fetchone() or (0,)
                if m != h:
                    failures.append(f"head {h} but {m} events visible below it")
                checks += 1

    threads = [threading.Thread(target=append) for _ in range(4)]
    threads.append(threading.Thread(target=watch))
    for t in threads:
        t.start()
    try:  # a few hundred checks while four writers append
        wait_until(lambda: checks >= 300 or failures, timeout=60, what="300 visibility checks")
    finally:
        stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    assert checks > 50


def _children(parent: int, needle: str) -> list[int]:
    """Live child processes of ``parent`` whose command line mentions ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z" and needle in cmdline:
            found.append(int(entry.name))
    return found


def test_ledger_run_starts_a_runner_beside_the_api(db_url: str, tmp_path: Path) -> None:
    import os
    import signal

    import httpx

    from tests.support import create_key, ledger_process

    key = create_key(db_url, "agent-1", "agent")
    with ledger_process("run", db_url, tmp_path) as (proc, base):
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as c:
            sub = c.post("/tasks", json={"task_type": "position_check", "payload": {}}).json()
            r = c.get(f"/tasks/{sub['id']}", params={"min_position": sub["position"]})
            assert r.status_code == 200 and r.json()["status"] == "queued"

            # kill -9 the runner: ledger run starts another, and the views move on
            (runner,) = _children(proc.pid, "projections")
            os.kill(runner, signal.SIGKILL)
            sub = c.post("/tasks", json={"task_type": "position_check", "payload": {}}).json()
            r = c.get(f"/tasks/{sub['id']}")  # view behind or not: never a false 404
            assert r.status_code == 200 and r.json()["status"] == "queued", r.text
            deadline = time.monotonic() + 30
            while not (again := _children(proc.pid, "projections")) or again == [runner]:
                assert time.monotonic() < deadline, "the runner was not restarted"
                time.sleep(0.2)
            r = c.get(f"/tasks/{sub['id']}", params={"min_position": sub["position"]})
            while r.status_code == 503 and time.monotonic() < deadline:
                r = c.get(f"/tasks/{sub['id']}", params={"min_position": sub["position"]})
            assert r.status_code == 200 and "x-read-from" not in r.headers, r.text
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, f"ledger run asked to stop exited with {code}"
    deadline = time.monotonic() + 10
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:  # the runner went with the API (its sessions close soon after)
            (runners,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'ledger-projection:%'"
            ).fetchone() or (0,)
            if runners == 0:
                break
            assert time.monotonic() < deadline, f"{runners} runner sessions left"
            time.sleep(0.1)


def test_with_a_gather_time_the_commits_of_that_moment_share_one_batch(
    db_url: str, super_conn: psycopg.Connection[Any]
) -> None:
    """LEDGER_PROJECTION_GATHER_SECONDS: a caught-up runner woken by a commit
    waits that long, then folds everything committed meanwhile in one batch
    (the checkpoint moves once, not once per commit), and no later than that."""
    submit_tasks(db_url, 1)
    runner = start_runner(db_url, LEDGER_PROJECTION_GATHER_SECONDS="2.0")
    try:
        start = wait_caught_up(db_url)
        t0 = time.monotonic()
        for _ in range(5):  # five commits, five NOTIFYs, well inside the gather time
            submit_tasks(db_url, 2)
        submitted = time.monotonic() - t0
        seen: list[tuple[float, int]] = []
        while time.monotonic() - t0 < 10:
            pos = positions(super_conn)["tasks"]
            if not seen or seen[-1][1] != pos:
                seen.append((time.monotonic() - t0, pos))
            if pos == start + 10:
                break
            time.sleep(0.005)
    finally:
        stop(runner)
    assert submitted < 1.6, f"the submits took {submitted:.2f} s: too slow to tell"
    assert [pos for _, pos in seen] == [start, start + 10], seen
    assert seen[-1][0] >= 1.9, seen  # folded after the gather time, not at the first commit
    applied_matches_ledger(super_conn)
