"""The tree builder and checkpoint signer run off the API process: ``ledger
run`` starts ``ledger tree`` beside the API (and again when it dies);
``ledger serve`` alone builds no tree, and everything it tells about the tree
comes from the database, whoever builds it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from ledger.proofs import note
from ledger.proofs.checkpointer import APP_NAME
from tests.support import ROOT, auth, create_key, ledger_process, wait_until

FAST = {
    "LEDGER_CHECKPOINT_INTERVAL_SECONDS": "0.1",
    "LEDGER_TREE_POLL_SECONDS": "0.05",
    "LEDGER_CHECKPOINT_WAIT_SECONDS": "0.5",
}


def _tree_sessions(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s",
            [APP_NAME],
        ).fetchone() or (0,)
    return int(n)


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


def _tree_size(c: httpx.Client) -> int:
    r = c.get("/audit/checkpoint")
    return int(r.headers["x-ledger-tree-size"]) if r.status_code == 200 else -1


def _submit(c: httpx.Client) -> int:
    r = c.post("/tasks", json={"task_type": "position_check", "payload": {}})
    assert r.status_code == 201, r.text
    return int(r.json()["position"])


def test_ledger_run_builds_the_tree_in_a_process_of_its_own(db_url: str, tmp_path: Path) -> None:
    agent = create_key(db_url, "agent-1", "agent")
    auditor = create_key(db_url, "auditor-1", "auditor")
    with (
        ledger_process("run", db_url, tmp_path, **FAST) as (proc, base),
        httpx.Client(base_url=base, headers=auth(agent)) as c,
        httpx.Client(base_url=base, headers=auth(auditor)) as a,
    ):
        position = _submit(c)
        wait_until(lambda: _tree_size(a) >= position, what="a checkpoint covering the submit")
        (tree,) = _children(proc.pid, "ledger tree")
        assert _tree_sessions(db_url) >= 1
        # the API process builds nothing: kill the tree's process and the tree stops
        os.kill(tree, signal.SIGKILL)
        position = _submit(c)
        # ...until ledger run starts it again (at most every 5 s)
        wait_until(
            lambda: _tree_size(a) >= position, timeout=40, what="the restarted tree's checkpoint"
        )
        assert _children(proc.pid, "ledger tree") not in ([], [tree])


def test_serve_alone_builds_no_tree_and_reads_it_from_the_database(
    db_url: str, tmp_path: Path
) -> None:
    agent = create_key(db_url, "agent-1", "agent")
    auditor = create_key(db_url, "auditor-1", "auditor")
    env = {
        **os.environ,
        **FAST,
        "LEDGER_DATABASE_URL": db_url,
        "LEDGER_HOME": str(tmp_path),
        "LEDGER_LOG_LEVEL": "warning",
    }
    with (
        ledger_process("serve", db_url, tmp_path, **FAST) as (_proc, base),
        httpx.Client(base_url=base, headers=auth(agent)) as c,
        httpx.Client(base_url=base, headers=auth(auditor)) as a,
    ):
        position = _submit(c)
        # nothing builds the tree: no checkpoint, no key to serve, a bounded wait then 503
        for path in ("/audit/checkpoint", "/audit/public-key"):
            r = a.get(path)
            assert r.status_code == 503 and r.headers.get("retry-after"), (path, r.text)
        time.sleep(0.3)
        assert _tree_sessions(db_url) == 0
        # `ledger tree` in another process: the API serves what it stored
        tree = subprocess.Popen(
            [sys.executable, "-m", "ledger", "tree"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: _tree_size(a) >= position, what="the tree process's checkpoint")
            r = a.get("/audit/public-key")
            assert r.status_code == 200, r.text
            note.Verifier.parse(r.text)  # a C2SP verifier key
            params = {"position": position, "tree_size": position}
            r = a.get("/audit/proof/inclusion", params=params)
            assert r.status_code == 200, r.text
        finally:
            tree.send_signal(signal.SIGTERM)
            assert tree.wait(timeout=30) == 0  # asked to stop, and stopped
