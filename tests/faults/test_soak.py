"""The soak, short: every fault of the schedule injected once (SIGKILL of the
API, of the projection runner and of the tree builder, PostgreSQL stopped and
crashed, every session ended, connections cut mid-request) under the whole
task lifecycle, and every verdict holds. ``make soak`` runs it for longer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak.faults import FAULTS
from tests.support import ROOT


@pytest.mark.timeout(420)
def test_a_short_soak_with_every_fault_once(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--seconds", "40", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    fig = json.loads(out.read_text())
    assert fig["acknowledged"] > 100
    for verdict in ("acknowledged_lost", "applied_twice", "claimed_twice", "stranded"):
        assert fig[verdict] == 0, (verdict, fig["examples"])
    assert fig["illegal_moves"] == 0
    assert fig["audit"]["chain_verify_api"] and fig["audit"]["chain_verify_offline"]
    assert fig["audit"]["checkpoints_consistent"], fig["audit"]
    assert fig["audit"]["auditor_verify_failures"] == 0
    assert all(fig["views_check"].values()), fig["views_check"]
    assert fig["clients"]["server_errors"] == 0, fig["clients"]["statuses_seen"]
    assert fig["clients"]["unexpected_answers"] == 0, fig["clients"]["unexpected_examples"]
    assert fig["proxy_cuts"] > 0  # connections really were cut mid-request
    for kind in FAULTS:
        r = fig["recovery_after_fault_ended"][kind]
        assert r["injected"] >= 1 and not r["not_injected"], kind  # e.g. a process to kill
        for what in ("write", "view", "checkpoint"):
            assert r[what]["missing"] == 0, (kind, what)
    # a database outage is answered, never a 500: 503s were seen, and only those failed
    for kind in ("pg-stop", "pg-crash"):
        seen = fig["statuses_during_outages"][kind]
        assert seen.get("503"), (kind, seen)
        assert set(seen) <= {"200", "201", "204", "409", "503"}, (kind, seen)
    assert fig["verdict"] == "ok", fig["verdict"]
    assert proc.returncode == 0
