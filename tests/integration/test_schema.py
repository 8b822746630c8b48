"""schema.sql is applied on every start, idempotently, also by ledgers in
other databases of the same server starting at the same moment."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
from psycopg import sql

from ledger import db
from tests.support import url_for


def test_schema_applies_concurrently_in_several_databases(pg_server: dict[str, Any]) -> None:
    names = [f"ledger_s_{uuid.uuid4().hex[:10]}" for _ in range(3)]
    with psycopg.connect(pg_server["url"], autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    failures: list[str] = []

    def start(name: str) -> None:
        for _ in range(4):
            try:
                db.apply_schema(url_for(pg_server["url"], name))
            except psycopg.Error as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    try:
        threads = [threading.Thread(target=start, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert failures == []
        for name in names:
            with psycopg.connect(url_for(pg_server["url"], name)) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'events'::regclass "
                    "AND tgenabled = 'A'"
                ).fetchone()
                assert row is not None and row[0] >= 2
        with psycopg.connect(pg_server["url"]) as conn:
            (config,) = conn.execute(
                "SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                "WHERE r.rolname = 'ledger_service' AND s.setdatabase = 0"
            ).fetchone() or ([],)
        assert {"lock_timeout=5s", "idle_in_transaction_session_timeout=15s"} <= set(config)
    finally:
        with psycopg.connect(pg_server["url"], autocommit=True) as conn:
            for name in names:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
