"""What the operator's commands print on stdout is their data alone (a key, an
export, a verdict, a bundle): ``ledger signing-key show > ledger.vkey`` and
``ledger export > FILE`` take exactly that. Logs go to stderr."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from ledger.settings import Settings
from tests.support import auth, wait_for_checkpoint


def _ledger(db_url: str, home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LEDGER_") and k not in ("DATABASE_URL", "PYTEST_CURRENT_TEST")
    }
    env.update(DATABASE_URL=db_url, LEDGER_HOME=str(home))
    done = subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        env=env,
        capture_output=True,
        timeout=120,
        cwd=home.parent,
    )
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    return done


def test_signing_key_show_prints_the_key_alone_when_it_creates_it(
    db_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = _ledger(db_url, home, "signing-key", "show")
    assert re.fullmatch(rb"[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*\n", first.stdout), first.stdout
    assert b"signing_key_created" in first.stderr  # the log line, where logs go
    again = _ledger(db_url, home, "signing-key", "show")
    assert again.stdout == first.stdout
    assert b"signing_key_created" not in again.stderr


def test_export_verify_and_audit_bundle_print_only_their_data(
    client: Any, keyring: dict[str, str], db_url: str, settings: Settings, tmp_path: Path
) -> None:
    made = client.post(
        "/tasks",
        json={"task_type": "position_check", "payload": {"symbol": "AAPL", "quantity": 1}},
        headers=auth(keyring["agent"]),
    )
    assert made.status_code == 201, made.text
    wait_for_checkpoint(client, keyring["auditor"], made.json()["position"])

    exported = _ledger(db_url, settings.home, "export")
    events = [orjson.loads(line) for line in exported.stdout.splitlines()]
    assert [e["position"] for e in events] == list(range(1, len(events) + 1))
    bundle_file = tmp_path / "ledger.ndjson"
    bundle_file.write_bytes(exported.stdout)

    checked = _ledger(db_url, settings.home, "verify", str(bundle_file))
    assert checked.stdout.decode().splitlines() == [
        f"OK: positions 1..{len(events)} verify ({len(events)} events); "
        f"head {len(events)}:{events[-1]['hash']}"
    ]

    evidence = _ledger(db_url, settings.home, "audit-bundle", "--task", made.json()["id"])
    assert orjson.loads(evidence.stdout)["stream"] == f"task-{made.json()['id']}"
    assert b"audit bundle for" in evidence.stderr
