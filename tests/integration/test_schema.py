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


def test_events_carry_two_full_indexes_and_a_partial_one_for_reads_by_type(
    super_conn: psycopg.Connection[Any],
) -> None:
    """Every append pays for each index on events: the position key and
    (stream, version) for everyone, and type only for the administrative
    events read by type, whose look-ups still go through an index. A ledger
    made with the full (type, position) index loses it on the next start."""
    super_conn.execute("CREATE INDEX events_type_position_idx ON events (type, position)")
    super_conn.commit()
    db.apply_schema(super_conn.info.dsn)
    rows = super_conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events' ORDER BY 1"
    ).fetchall()
    names = [name for name, _ in rows]
    assert names == ["events_admin_type_position_idx", "events_pkey", "events_stream_version_key"]
    assert "WHERE" in dict(rows)["events_admin_type_position_idx"]
    super_conn.execute("SET enable_seqscan = off")
    for query in (db.q("events", "principal_events"), db.q("proofs", "key_announcements")):
        plan = "\n".join(r[0] for r in super_conn.execute("EXPLAIN " + query))
        assert "events_admin_type_position_idx" in plan, plan
    super_conn.rollback()
