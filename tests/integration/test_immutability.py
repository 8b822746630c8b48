"""The database refuses to rewrite history (SPEC §1, Immutability): the
service role has no UPDATE, DELETE or TRUNCATE on events, and ENABLE ALWAYS
triggers refuse them to everyone else, replication mode included."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ledger import db
from ledger.appender import append_sync
from ledger.events import NewEvent, StreamAppend

META = {"actor": "tester", "role": "agent", "request_id": "immutability"}
STATEMENTS = {
    "update": "UPDATE events SET type = 'Rewritten' WHERE position = 1",
    "update-bytes": "UPDATE events SET canonical = canonical || '\\x20'::bytea",
    "delete": "DELETE FROM events WHERE position = 2",
    "delete-all": "DELETE FROM events",
    "truncate": "TRUNCATE events",
    "truncate-cascade": "TRUNCATE events CASCADE",
}


@pytest.fixture
def three_events(service_conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    cmds = [
        StreamAppend(stream="test-imm", events=[NewEvent("Tested", {"i": i})], meta=META)
        for i in range(3)
    ]
    assert all(isinstance(r, list) for r in append_sync(service_conn, cmds))
    return _snapshot(service_conn)


def _snapshot(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT position, stream, version, type, recorded_at, prev_hash, hash, canonical "
        "FROM events ORDER BY position"
    ).fetchall()


@pytest.mark.parametrize("statement", list(STATEMENTS))
def test_service_role_cannot_change_events(
    statement: str, three_events: Any, service_conn: psycopg.Connection[Any]
) -> None:
    assert service_conn.execute("SELECT current_user").fetchone() == ("ledger_service",)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        service_conn.execute(STATEMENTS[statement])
    assert "permission denied" in str(info.value)
    assert _snapshot(service_conn) == three_events


def test_service_role_cannot_drop_the_guards(
    three_events: Any, service_conn: psycopg.Connection[Any]
) -> None:
    for ddl in (
        "ALTER TABLE events DISABLE TRIGGER events_no_update_delete",
        "DROP TRIGGER events_no_truncate ON events",
        "SET session_replication_role = replica",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            service_conn.execute(ddl)


@pytest.mark.parametrize("replica", [False, True], ids=["origin", "replica"])
@pytest.mark.parametrize("statement", list(STATEMENTS))
def test_superuser_refused_while_triggers_stand(
    statement: str, replica: bool, three_events: Any, super_conn: psycopg.Connection[Any]
) -> None:
    (is_super,) = super_conn.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone() or (False,)
    assert is_super, "the test needs a superuser login"
    if replica:
        super_conn.execute("SET session_replication_role = replica")
        assert super_conn.execute("SHOW session_replication_role").fetchone() == ("replica",)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        super_conn.execute(STATEMENTS[statement])
    assert "events are immutable" in str(info.value)
    super_conn.execute("RESET session_replication_role")
    assert _snapshot(super_conn) == three_events


def test_triggers_are_enabled_always(super_conn: psycopg.Connection[Any]) -> None:
    rows = dict(
        super_conn.execute(
            "SELECT tgname, tgenabled FROM pg_trigger "
            "WHERE tgrelid = 'events'::regclass AND NOT tgisinternal"
        ).fetchall()
    )
    assert rows["events_no_update_delete"] == "A"
    assert rows["events_no_truncate"] == "A"


def test_service_role_grants_on_events(super_conn: psycopg.Connection[Any]) -> None:
    granted = {
        p
        for (p,) in super_conn.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE grantee = 'ledger_service' AND table_name = 'events'"
        )
    }
    assert granted == {"SELECT", "INSERT"}


APPEND_ONLY = {
    "events": "events are immutable",
    "checkpoints": "checkpoints are kept forever",
    "checkpoint_cosignatures": "cosignatures are kept forever",
}


@pytest.mark.parametrize("table", list(APPEND_ONLY))
def test_every_append_only_table_refuses_through_the_one_function(
    table: str, super_conn: psycopg.Connection[Any]
) -> None:
    rows = super_conn.execute(
        "SELECT t.tgname, t.tgenabled, p.proname FROM pg_trigger t "
        "JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE t.tgrelid = %s::regclass AND t.tgname = ANY(%s)",
        (table, [f"{table}_no_truncate", f"{table}_no_update_delete"]),
    ).fetchall()
    assert sorted(rows) == [
        (f"{table}_no_truncate", "A", "ledger_refuse_change"),
        (f"{table}_no_update_delete", "A", "ledger_refuse_change"),
    ]
    super_conn.execute("SET session_replication_role = replica")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        super_conn.execute(f"TRUNCATE {table} CASCADE")
    assert f"{APPEND_ONLY[table]}: TRUNCATE refused" in str(info.value)
    assert info.value.diag.message_hint


def test_reapplying_the_schema_moves_older_triggers_onto_the_one_function(
    db_url: str, super_conn: psycopg.Connection[Any]
) -> None:
    """A database made before the refusals were shared (one function per
    table) keeps its guards and loses the old functions."""
    super_conn.execute(
        "CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'old'; END $$"
    )
    super_conn.execute(
        "CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
        "FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change()"
    )
    db.apply_schema(db_url)
    assert super_conn.execute(
        "SELECT count(*) FROM pg_proc WHERE proname = 'events_refuse_change'"
    ).fetchone() == (0,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
        super_conn.execute("TRUNCATE events")
    assert "events are immutable: TRUNCATE refused" in str(info.value)
