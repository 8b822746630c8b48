"""A smoke run of the benchmark harness, so it cannot rot: a tiny
configuration of a few workloads end to end, on the test PostgreSQL. Not a
timed test: it checks that the table and its JSON have the expected rows
and sane numbers, never how fast anything was."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]


def test_a_tiny_bench_run_prints_the_table_and_writes_the_json(
    pg_server: dict[str, Any], tmp_path: Path
) -> None:
    env = {**os.environ, "LEDGER_BENCH_DATABASE_URL": pg_server["url"]}
    docs = tmp_path / "benchmarks.md"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--tiny",
            "--only",
            "http,appends,batch,verify,replay,proof,lag",
            "--out-dir",
            str(tmp_path),
            "--docs",
            str(docs),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "verify server side / read limit" in out.stdout

    report = orjson.loads((tmp_path / "latest.json").read_bytes())
    rows = {r["key"]: r for r in report["rows"]}
    expected = {
        "http.ledger",
        "http.original",
        "http.floor",
        "http.asgi",
        "append1.ledger",
        "append1.eventsourcing",
        "append1.plain",
        "append8.ledger",
        "append8.eventsourcing",
        "append8.plain",
        "batch.ledger",
        "batch.eventsourcing",
        "batch.copy",
        "verify.server",
        "verify.offline",
        "verify.readlimit",
        "replay.ledger",
        "replay.inprocess",
        "proof.ledger",
        "proof.consistency",
        "lag1000.ledger",
        "lag2000.ledger",
    }
    assert expected <= set(rows), sorted(expected - set(rows))
    for key, r in rows.items():
        if r["status"].startswith("n/a"):
            continue  # a feature not built yet is said so, never failed
        assert r["status"] == "ok", (key, r["status"])
        assert len(r["samples"]) == 3, key
        assert all(x > 0 and math.isfinite(x) for x in r["samples"]), (key, r["samples"])
        assert r["min"] <= r["median"] <= r["max"]
        if r["p99_ms_median"] is not None:
            assert 0 < r["p50_ms_median"] <= r["p99_ms_median"], key
    # ours commit in groups: never more than one commit per event
    assert 0 < rows["append8.ledger"]["commits_per_event"] <= 1
    assert rows["batch.ledger"]["commits_per_event"] <= 1 / 50 + 1e-9
    names = {x["name"] for x in report["ratios"]}
    assert "HTTP submit: ledger / original design" in names
    assert "batch appends: ledger / COPY limit" in names
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["postgresql"]["fsync"] in ("on", "off")
    text = docs.read_text()
    assert "| workload |" in text and "fsync=" in text
    # docs/benchmarks.md can be written again from the JSON alone, figures unchanged
    again = tmp_path / "again.md"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--render",
            str(tmp_path / "latest.json"),
            "--docs",
            str(again),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert again.read_text() == text
