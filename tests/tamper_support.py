"""What the tamper tests share: a verified ten-event ledger and the edits a
superuser makes to it behind the service's back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from ledger.appender import append_sync
from ledger.events import NewEvent, StreamAppend
from tests.support import auth

META = {"actor": "tester", "role": "agent", "request_id": "tamper"}


def make_ledger10(
    client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]
) -> dict[str, Any]:
    """Ten events (five keys, five test events), verified once (watermark at 10)."""
    cmds = [
        StreamAppend(
            stream=f"test-{i % 2}",
            events=[NewEvent("Tested", {"i": i, "f": 0.5, "s": "é😀"})],
            meta=META,
        )
        for i in range(5)
    ]
    for res in append_sync(service_conn, cmds):
        assert isinstance(res, list)
    head = client.get("/audit/head", headers=auth(keyring["auditor"])).json()
    assert head["position"] == 10
    first = client.get("/audit/verify", headers=auth(keyring["auditor"])).json()
    assert first["ok"] and first["verified_to"] == 10
    return head


def export(client: Any, key: str, path: Path) -> Path:
    r = client.get("/audit/export", headers=auth(key))
    assert r.status_code == 200
    path.write_bytes(r.content)
    return path


def bytes_edit(
    conn: psycopg.Connection[Any], position: int, edit: Callable[[bytes], bytes]
) -> None:
    (canonical,) = conn.execute(
        "SELECT canonical FROM events WHERE position = %s", (position,)
    ).fetchone() or (None,)
    assert canonical is not None
    new = edit(bytes(canonical))
    assert new != canonical
    conn.execute("UPDATE events SET canonical = %s WHERE position = %s", (new, position))


def flip_data_digit(b: bytes) -> bytes:
    i = b.index(b'"i":') + 4
    return b[:i] + (b"9" if b[i : i + 1] != b"9" else b"8") + b[i + 1 :]
