"""Rebuild and check: a from-scratch fold swapped in while the API answers,
``ledger projections check`` finding a tampered view, and hypothesis: for
random task histories folded in random batch sizes, the incrementally kept
views equal the rebuilt ones and a plain fold."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import errors, tasks
from ledger.appender import append_sync
from ledger.clock import uuid7
from ledger.events import StreamAppend
from projections import registry
from projections.rebuild import check, rebuild
from projections.runner import connect, ensure_checkpoint, run_batch
from tests.projection_support import ROOT, applied_matches_ledger, submit_tasks, wait_caught_up
from tests.support import auth, drop_db, fresh_db, url_for


def ledger_cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEDGER_DATABASE_URL": db_url, "LEDGER_LOG_LEVEL": "warning"}
    return subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rebuild_swaps_while_the_api_answers_and_check_finds_a_tampered_view(
    client: Any, keyring: dict[str, str], db_url: str, super_conn: psycopg.Connection[Any]
) -> None:
    agent = keyring["agent"]
    ids = submit_tasks(db_url, 300)
    for tid in ids[:40]:
        client.post(f"/tasks/{tid}/claim", headers=auth(keyring["agent2"]))
    wait_caught_up(db_url)
    r = ledger_cli(db_url, "projections", "check", "tasks")
    assert r.returncode == 0 and r.stdout.startswith("OK: tasks at position"), r.stdout + r.stderr

    super_conn.execute("UPDATE task_view SET status = 'done' WHERE id = %s", (ids[7],))
    r = client.get("/tasks", params={"status": "done"}, headers=auth(agent))
    assert [t["id"] for t in r.json()["items"]] == [ids[7]]
    super_conn.execute(
        "UPDATE task_counts SET n = n + 1 WHERE dimension = 'agent' AND status = 'queued'"
    )
    r = ledger_cli(db_url, "projections", "check", "tasks")
    assert r.returncode == 1
    assert f"{ids[7]}: columns: view" in r.stdout and "DIFFERENT" in r.stdout
    r = ledger_cli(db_url, "projections", "check", "task_counts")
    assert r.returncode == 1 and "agent/agent-1/queued: view 261 != fold 260" in r.stdout

    stop = threading.Event()
    answers: list[int] = []

    def read() -> None:
        while not stop.is_set():
            answers.append(client.get(f"/tasks/{ids[0]}", headers=auth(agent)).status_code)
            answers.append(client.get("/tasks", headers=auth(agent)).status_code)
            answers.append(client.get("/tasks/stats", headers=auth(agent)).status_code)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        submit_tasks(db_url, 20)  # the runner keeps applying while the rebuild folds
        out = rebuild(db_url, "tasks")
        submit_tasks(db_url, 5)
        r = ledger_cli(db_url, "projections", "rebuild", "task_counts")
        assert r.returncode == 0 and r.stdout.startswith("rebuilt task_counts"), r.stderr
    finally:
        stop.set()
        reader.join()
    assert answers and set(answers) == {200}
    assert out.applied == 300 + 40 + 20 and out.position == 5 + 360  # 5 keys
    wait_caught_up(db_url)
    for name in registry():
        assert check(db_url, "ledger_service", name).ok, name
    applied_matches_ledger(super_conn)
    r = client.get("/tasks", params={"status": "done"}, headers=auth(agent))
    assert r.json()["items"] == []  # the tampered row is gone with the old table
    r = ledger_cli(db_url, "projections", "list")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("name\tposition") and len(lines) == 3


def test_a_long_reader_delays_the_swap_not_the_other_readers(
    client: Any, keyring: dict[str, str], db_url: str
) -> None:
    """A transaction reading the view for seconds (a long report, a check) holds
    its lock: the swap gives way and retries instead of queueing every other
    reader behind its lock request, so reads stay quick and never fail."""
    agent = keyring["agent"]
    ids = submit_tasks(db_url, 50)
    wait_caught_up(db_url)
    holding = threading.Event()

    def long_reader() -> None:
        with psycopg.connect(db_url) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SELECT count(*) FROM task_view").fetchone()
            holding.set()
            time.sleep(4.0)
            conn.rollback()

    slowest = 0.0
    answers: list[int] = []
    held = threading.Thread(target=long_reader)
    held.start()
    assert holding.wait(10)
    done: list[Any] = []
    rebuilder = threading.Thread(target=lambda: done.append(rebuild(db_url, "tasks")))
    rebuilder.start()
    while rebuilder.is_alive():
        t0 = time.perf_counter()
        answers.append(client.get(f"/tasks/{ids[0]}", headers=auth(agent)).status_code)
        slowest = max(slowest, time.perf_counter() - t0)
        time.sleep(0.02)
    held.join()
    rebuilder.join()
    assert done and done[0].position >= 55, done
    assert answers and set(answers) == {200}, answers
    assert slowest < 2.0, f"a read waited {slowest:.2f} s behind the swap"
    assert check(db_url, "ledger_service", "tasks").ok


# -- hypothesis: incremental == rebuilt == fold -----------------------------------------

# names and types that need quoting in a text array: the views take their
# columns in binary arrays, and these must come back as written
AGENTS = [("agent-1", "agent"), ('agent "2", {b}\\', "agent"), ("officer-1", "officer")]
TASK_TYPES = ["check0", 'chéck,1 {"NULL"}']
COMMANDS = ["claim", "step", "renew", "ask", "approve", "reject", "complete", "fail", "requeue"]


class Who:
    def __init__(self, name: str, role: str) -> None:
        self.name = name
        self.role = role


def command_for(kind: str, flag: bool) -> tasks.TaskCommand:
    lease = "2026-12-01T00:00:00.000000Z"
    return {
        "claim": tasks.Claim(lease),
        "step": tasks.RecordStep("note", {"n": 1.5, "z": "\u0000"}),
        "renew": tasks.RenewLease(lease),
        "ask": tasks.RequestApproval("size"),
        "approve": tasks.Approve("ok"),
        "reject": tasks.Reject("no"),
        "complete": tasks.Complete({"v": 1e21, "ok": flag}),
        "fail": tasks.Fail("boom", flag),
        "requeue": tasks.Requeue("again", "2027-01-01T00:00:00.000000Z"),
        "cancel": tasks.Cancel("stop"),
    }[kind]


ops = st.lists(
    st.tuples(
        st.integers(0, 5),  # which task (submitted when the slot is empty or finished)
        st.integers(0, 1000),  # which of the moves legal now (and by whom)
        st.integers(0, 3),  # runner batch size to run after it (0: none)
    ),
    min_size=20,
    max_size=80,
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=ops)
def test_incremental_views_equal_rebuilt_ones_for_random_histories(
    pg_server: dict[str, Any], template_db: str, history: list[tuple[Any, ...]]
) -> None:
    name = fresh_db(pg_server["url"], template_db)
    url = url_for(pg_server["url"], name)
    try:
        _run_history(url, history)
    finally:
        drop_db(pg_server["url"], name)


def _legal(state: tasks.TaskState, flag: bool) -> list[tuple[tasks.TaskCommand, Who]]:
    out = []
    for kind in [*COMMANDS, "cancel"]:
        cmd = command_for(kind, flag)
        for who in (Who(*a) for a in AGENTS):
            try:
                tasks.decide(state, cmd, who)
            except errors.LedgerError:
                continue
            out.append((cmd, who))
    return out


def _run_history(url: str, history: list[tuple[Any, ...]]) -> None:
    states: dict[int, tuple[str, tasks.TaskState]] = {}
    views = registry()
    with (
        connect(url, "ledger_service", "test-append") as app_conn,
        connect(url, "ledger_service", "test-runner", autocommit=False) as work,
    ):
        for p in views.values():
            ensure_checkpoint(work, p.name)
        for slot, pick, batch in history:
            legal = _legal(states[slot][1], pick % 2 == 0) if slot in states else []
            if legal:
                tid, state = states[slot]
                cmd, who = legal[pick % len(legal)]
            else:  # an empty slot, or a final task: a new task takes the slot
                tid, state = str(uuid7()), None
                cmd, who = (
                    tasks.Submit(TASK_TYPES[slot % 2], {"slot": slot}, slot - 2),
                    Who(*AGENTS[pick % 2]),
                )
            new = tasks.decide(state, cmd, who)
            meta = {"actor": who.name, "role": who.role, "request_id": "h"}
            version = state.version if state else 0
            (res,) = append_sync(
                app_conn, [StreamAppend(tasks.stream_for(tid), new, meta, version)]
            )
            assert not isinstance(res, errors.LedgerError), res
            after = tasks.fold(res, state)
            assert after is not None
            states[slot] = (tid, after)
            if batch:
                for p in views.values():
                    run_batch(work, p, batch)
        for p in views.values():
            while run_batch(work, p, 3).full:
                pass
        live = {n: p.read(work) for n, p in views.items()}
        work.rollback()
    for n in views:
        assert check(url, "ledger_service", n).ok, n
        rebuild(url, n, chunk=7, settle=5)
    with connect(url, "ledger_service", "test-read", autocommit=False) as conn:
        rebuilt = {n: p.read(conn) for n, p in views.items()}
        applied_matches_ledger(conn)
    assert rebuilt == live


def test_a_view_locked_past_the_lock_timeout_is_a_503_to_retry(
    client: Any, keyring: dict[str, str], db_url: str, super_conn: psycopg.Connection[Any]
) -> None:
    (tid,) = submit_tasks(db_url, 1)
    wait_caught_up(db_url)
    super_conn.autocommit = False
    super_conn.execute("LOCK TABLE task_view IN ACCESS EXCLUSIVE MODE")
    try:
        r = client.get(f"/tasks/{tid}", headers=auth(keyring["agent"]))
    finally:
        super_conn.rollback()
        super_conn.autocommit = True
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "1" and "retry" in r.json()["detail"]
    assert client.get(f"/tasks/{tid}", headers=auth(keyring["agent"])).status_code == 200
