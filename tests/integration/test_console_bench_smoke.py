"""A smoke run of the console's bench rows, so that the harness cannot rot:
every page answers 200 to the signed-in load generator on a small ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.support import ROOT


def test_a_tiny_console_bench_run_measures_every_page(
    pg_server: dict[str, Any], tmp_path: Path
) -> None:
    env = {**os.environ, "LEDGER_BENCH_DATABASE_URL": pg_server["url"]}
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--only", "console", "--no-docs",
         "--out-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r["key"]: r for r in orjson.loads((tmp_path / "latest.json").read_bytes())["rows"]}
    pages = {"search", "filtered", "text", "textmiss", "timeline", "report"}
    assert {f"console.{p}" for p in pages} <= set(rows)
    for p in pages:
        row = rows[f"console.{p}"]
        assert row["status"] == "ok" and row["samples"], row
        assert all(ms > 0 for ms in row["p99_ms"])
    assert "console page p99, slowest page (ms)" in out.stdout
