"""The data keys' table keeps its own invariants (schema.sql, privacy): a key
is made once per (subject, stream), never for a forgotten subject, and is
only ever destroyed, by the event that says so."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ledger.appender import append_sync
from ledger.db import q
from ledger.events import NewEvent, StreamAppend
from ledger.privacy import crypto, keystore

STREAM = "task-00000000-0000-7000-8000-000000000001"
META = {"actor": "admin-1", "role": "admin", "request_id": "test"}


def make_key(conn: psycopg.Connection[Any], subject: str, stream: str = STREAM) -> tuple[Any, ...]:
    kek = crypto.Kek(crypto.kek_id(b"k" * 32), b"k" * 32)
    row = conn.execute(
        q("privacy", "data_key"),
        {"subject": subject, "stream": stream, "task_type": "kyc_review",
         "key_id": keystore.new_kid(), "kek_id": kek.id, "wrapped": kek.wrap(bytes(32))},
    ).fetchone()  # fmt: skip
    assert row is not None
    return tuple(row)


def test_keys_are_made_once_only_destroyed_and_never_for_the_forgotten(
    service_conn: psycopg.Connection[Any],
) -> None:
    first = make_key(service_conn, "client:C-1")
    assert first[0].startswith("dk-") and first[2] is not None and first[4] is None
    assert make_key(service_conn, "client:C-1")[0] == first[0]  # the same key again
    other = make_key(service_conn, "client:C-2")
    assert other[0] != first[0]

    # the service cannot swap, restore or delete a key...
    for stmt in (
        "UPDATE data_keys SET wrapped = %s WHERE key_id = %s",
        "UPDATE data_keys SET subject = 'client:C-9' WHERE key_id = %s",
        "DELETE FROM data_keys WHERE key_id = %s",
    ):
        params = (bytes(40), first[0]) if stmt.count("%s") == 2 else (first[0],)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            service_conn.execute(stmt, params)  # type: ignore[arg-type]

    # ...only the erasure event destroys it, and then it stays destroyed
    forgotten = StreamAppend(
        "erasure-00000000-0000-7000-8000-000000000001",
        [NewEvent("SubjectForgotten", {"subject": "client:C-1", "keys": [first[0]]})],
        META,
        0,
    )
    ((rec,),) = append_sync(service_conn, [forgotten])
    row = service_conn.execute(
        "SELECT wrapped, destroyed_position, destroyed_by FROM data_keys WHERE key_id = %s",
        (first[0],),
    ).fetchone()
    assert row == (None, rec["position"], "SubjectForgotten")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        service_conn.execute(
            "UPDATE data_keys SET wrapped = %s, destroyed_position = NULL WHERE key_id = %s",
            (bytes(40), first[0]),
        )
    # a forgotten subject gets no key, on any stream
    again = make_key(service_conn, "client:C-1", "task-00000000-0000-7000-8000-000000000002")
    assert again[0] is None and again[4] == rec["position"]
    assert make_key(service_conn, "client:C-2")[2] is not None  # the other subject is untouched
    # the same event type on another stream does nothing
    stray = StreamAppend(
        "notes-1", [NewEvent("SubjectForgotten", {"subject": "client:C-2"})], META, 0
    )
    append_sync(service_conn, [stray])
    assert make_key(service_conn, "client:C-2")[2] is not None
