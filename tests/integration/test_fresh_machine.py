"""The fresh-machine path: with no database configured, the suite and the
``ledger`` commands run on an embedded PostgreSQL (real binaries) of their own."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.audit.chain import verify_file


@pytest.mark.skipif(
    bool(os.environ.get("LEDGER_TEST_DATABASE_URL")),
    reason="LEDGER_TEST_DATABASE_URL names a server; the embedded one is not in use",
)
def test_suite_runs_on_the_embedded_server(pg_server: dict[str, Any]) -> None:
    assert pg_server["embedded"] is True
    with psycopg.connect(pg_server["url"]) as conn:
        (data_dir,) = conn.execute("SHOW data_directory").fetchone() or ("",)
        (version,) = conn.execute("SHOW server_version_num").fetchone() or ("0",)
    assert Path(data_dir).resolve() == Path(pg_server["pgdata"]).resolve()
    assert int(version) >= 140000


def _ledger(home: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "LEDGER_DATABASE_URL", "LEDGER_TEST_DATABASE_URL")
    }
    env["LEDGER_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        env=env,
        capture_output=True,
        timeout=120,
        cwd=home.parent,
        **kw,
    )


def _stop_leftover(pgdata: Path) -> bool:
    """Stop an embedded server the commands left running; True if one was."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return False
    with contextlib.suppress(ValueError, ProcessLookupError):
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)
    return True


@pytest.fixture
def home() -> Iterator[Path]:
    """LEDGER_HOME outside pytest's basetemp, as conftest's pg_server does. Run
    as root, pgserver runs PostgreSQL as another user and opens the folders
    above the data directory to it; every pytest session that starts meanwhile
    closes its own root (pytest-of-<user>) to 0700 again, shutting that
    user out of a data directory below it."""
    top = Path(tempfile.mkdtemp(prefix="ledger-test-home-"))
    yield top / "ledger-home"
    shutil.rmtree(top, ignore_errors=True)


def test_cli_keys_export_verify_on_its_own_embedded_server(home: Path, tmp_path: Path) -> None:
    try:
        made = _ledger(home, "keys", "create", "--name", "first-admin", "--role", "admin")
        assert made.returncode == 0, made.stderr.decode()[-4000:]
        key_lines = made.stdout.decode().splitlines()
        assert len(key_lines) == 1 and key_lines[0].startswith("lk_")  # the key, alone

        made = _ledger(home, "keys", "create", "--name", "auditor-1", "--role", "auditor")
        assert made.returncode == 0, made.stderr.decode()[-4000:]
        assert (home / "pgdata" / "PG_VERSION").exists()  # the server lives under LEDGER_HOME
        again = _ledger(home, "keys", "create", "--name", "auditor-1", "--role", "auditor")
        assert again.returncode == 1 and not again.stdout  # an active key is not replaced silently
        assert b"add --replace" in again.stderr, again.stderr

        exported = _ledger(home, "export")
        assert exported.returncode == 0, exported.stderr.decode()[-4000:]
        bundle = tmp_path / "ledger.ndjson"
        bundle.write_bytes(exported.stdout)
        lines = exported.stdout.splitlines()
        assert len(lines) == 2  # the refused re-creation wrote nothing
        assert b'"type":"PrincipalKeyCreated"' in lines[0]

        checked = _ledger(home, "verify", str(bundle))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.decode().startswith("OK: positions 1..2")
        with bundle.open("rb") as f:
            assert verify_file(f).ok
    finally:
        leftover = _stop_leftover(home / "pgdata")
    assert not leftover, "the last ledger command should stop the embedded server"
