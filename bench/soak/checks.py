"""The soak's verdicts, read from the ledger itself once the load has drained.

- acknowledged lost: an answer said an event was written at a position, and
  that position holds another event (or none);
- applied twice: a command's ``op-`` token is in more than one event;
- claimed twice: a task claimed while it was already claimed (running or
  awaiting approval); stranded: a task not in a final status after the drain;
- chain: ``GET /audit/verify`` over the whole ledger, and ``ledger verify``
  of an export against the latest signed checkpoint, offline;
- checkpoints: ``ledger verify`` of a consistency proof from the first
  checkpoint the auditor kept to the last;
- views: ``python -m projections check`` of every view.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.soak.load import TERMINAL, Record
from tests.support import ROOT

TOKEN = re.compile(r"op-[0-9a-f]{32}")
MOVES = {  # event type -> (statuses it may follow, status after); None: no change
    "TaskSubmitted": ({None}, "queued"),
    "TaskClaimed": ({"queued"}, "running"),
    "TaskApprovalRequested": ({"running"}, "awaiting_approval"),
    "TaskApproved": ({"awaiting_approval"}, "running"),
    "TaskRejected": ({"awaiting_approval"}, "rejected"),
    "TaskCompleted": ({"running"}, "done"),
    "TaskFailed": ({"running"}, "failed"),
    "TaskRequeued": ({"running", "failed"}, "queued"),
    "TaskCancelled": ({"queued", "running", "awaiting_approval"}, "cancelled"),
}


def ledger_facts(db_url: str, record: Record) -> dict[str, Any]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT position, stream, version, type, body->'data' FROM events_json "
            "ORDER BY position"
        ).fetchall()
    by_position = {r[0]: r for r in rows}
    lost = [
        a
        for a in record.acks
        if (got := by_position.get(a.position)) is None
        or (got[1], got[2], got[3]) != (a.stream, a.version, a.kind)
    ]
    tokens = Counter(t for r in rows for t in set(TOKEN.findall(json.dumps(r[4]))))
    twice = sorted(t for t, n in tokens.items() if n > 1)
    status: dict[str, str | None] = {}
    history: dict[str, list[str]] = {}
    claimed_twice: list[str] = []
    illegal: list[str] = []
    for _pos, stream, _v, etype, _data in rows:
        if not stream.startswith("task-") or etype not in MOVES:
            continue
        before, after = MOVES[etype]
        history.setdefault(stream, []).append(f"{etype.removeprefix('Task')}@{_pos}")
        now = status.get(stream)
        if now not in before:
            (claimed_twice if etype == "TaskClaimed" else illegal).append(f"{stream} {etype}")
        status[stream] = after
    stranded = sorted(s for s, st in status.items() if st not in TERMINAL)
    return {
        "events": len(rows),
        "tasks": len(status),
        "acknowledged": len(record.acks),
        "acknowledged_lost": len(lost),
        "applied_twice": len(twice),
        "claimed_twice": len(claimed_twice),
        "illegal_moves": len(illegal),
        "stranded": len(stranded),
        "examples": {
            "lost": [dataclasses.asdict(a) for a in lost[:3]],
            "twice": twice[:3],
            "claimed_twice": claimed_twice[:3],
            "stranded": {s: history[s] for s in stranded[:3]},
            # a task whose worker was told 403/409 mid-way: its whole story
            "claims_lost": {
                f"task-{t}": history.get(f"task-{t}") for t in record.claims_lost_tasks[:3]
            },
        },
    }


def _ledger_verify(*args: str) -> tuple[bool, str]:
    p = subprocess.run(
        [sys.executable, "-m", "ledger", "verify", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return p.returncode == 0, (p.stdout + p.stderr).strip().splitlines()[0:2].__str__()


def audit(base: str, auditor_key: str, record: Record, workdir: Path) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {auditor_key}"}
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, headers=headers, timeout=300) as c:
        head = c.get("/audit/head").json()["position"]
        v = c.get("/audit/verify", params={"from": 1, "to": head}).json()
        out["chain_verify_api"] = bool(v["ok"])
        latest = c.get("/audit/checkpoint").text
        vkey = c.get("/audit/public-key").text.strip()
        bundle = workdir / "ledger.ndjson"
        with bundle.open("wb") as f, c.stream("GET", "/audit/export") as r:
            for chunk in r.iter_bytes():
                f.write(chunk)
        cp = workdir / "checkpoint.txt"
        cp.write_text(latest)
        ok, said = _ledger_verify(str(bundle), "--checkpoint", str(cp), "--key", vkey)
        out["chain_verify_offline"], out["offline_said"] = ok, said
        kept = [n for n in record.checkpoints if n.strip()] or [latest]
        first = kept[0]
        old_size, new_size = int(first.split("\n")[1]), int(latest.split("\n")[1])
        proof = c.get("/audit/proof/consistency", params={"from": old_size, "to": new_size})
        old = workdir / "checkpoint-first.txt"
        old.write_text(first)
        proof_file = workdir / "consistency.json"
        proof_file.write_text(proof.text)
        ok, said = _ledger_verify(
            "--old-checkpoint",
            str(old),
            "--checkpoint",
            str(cp),
            "--proof",
            str(proof_file),
            "--key",
            vkey,
        )
        out["checkpoints_consistent"], out["checkpoints_said"] = ok, said
        out["checkpoints_kept"] = len(kept)
        out["checkpoint_sizes"] = [old_size, new_size]
    out["auditor_verify_failures"] = len(record.verify_failures)
    return out


def views_check(db_url: str) -> dict[str, bool]:
    out = {}
    env = {**os.environ, "LEDGER_DATABASE_URL": db_url, "LEDGER_LOG_LEVEL": "warning"}
    for name in ("tasks", "task_counts"):
        p = subprocess.run(
            [sys.executable, "-m", "projections", "check", name],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        out[name] = p.returncode == 0
    return out
