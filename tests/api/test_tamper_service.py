"""Tampering the service notices by itself: the default (incremental)
GET /audit/verify re-hashes a rolling slice of what it verified before and
holds its anchors (the watermark's event, the tree's and the signed
checkpoint's last leaf) to the events; a halted tree builder shows in /health
and every tree answer."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ledger.events import NewEvent, StreamAppend
from ledger.settings import Settings
from tests.support import app_with_runner, append, auth, wait_until
from tests.tamper_support import META, bytes_edit, flip_data_digit, make_ledger10


@pytest.fixture
def ledger10(client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]) -> Any:
    """Ten events (five keys, five test events), verified once (watermark at 10)."""
    return make_ledger10(client, keyring, service_conn)


def test_the_rolling_recheck_finds_an_old_edit_within_a_few_calls(
    settings: Settings,
    keyring: dict[str, str],
    service_conn: psycopg.Connection[Any],
    super_conn: psycopg.Connection[Any],
) -> None:
    """With a sweep of 3 events on a ledger of 10, an edit at position 2 after
    everything was verified is found by the third incremental call at most."""
    from fastapi.testclient import TestClient

    for i in range(5):
        append(service_conn, StreamAppend(f"test-{i}", [NewEvent("Tested", {"i": i})], META))
    key = auth(keyring["auditor"])
    with TestClient(app_with_runner(settings.model_copy(update={"verify_sweep_events": 3}))) as c:
        first = c.get("/audit/verify", headers=key).json()
        assert first["ok"] and first["verified_to"] == 10
        super_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
        bytes_edit(super_conn, 2, lambda b: b.replace(b'"agent-2"', b'"agent-9"', 1))
        answers = [c.get("/audit/verify", headers=key).json() for _ in range(4)]
    bad = [a for a in answers if not a["ok"]]
    assert bad, answers
    assert answers.index(bad[0]) <= 3, answers
    assert all(a["rechecked"] <= 3 for a in answers if a["ok"]), answers
    assert bad[0]["first_bad_position"] == 2, bad[0]


def test_a_halted_tree_builder_shows_in_health_and_every_audit_answer(
    ledger10: dict[str, Any],
    client: Any,
    keyring: dict[str, str],
    super_conn: psycopg.Connection[Any],
    service_conn: psycopg.Connection[Any],
) -> None:
    """The last event and the head are rewritten (hashes recomputed, as a
    careful forger would); the next append then does not extend the signed
    tree, the builder halts, and the service says so everywhere."""
    auditor = auth(keyring["auditor"])
    wait_until(lambda: client.get("/health").json().get("tree_size") == 10, what="the tree at 10")
    assert client.get("/health").status_code == 200
    super_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    bytes_edit(super_conn, 10, flip_data_digit)
    super_conn.execute(
        "UPDATE events SET hash = sha256(canonical) WHERE position = 10;"
        "UPDATE ledger_head SET hash = (SELECT hash FROM events WHERE position = 10)"
    )
    append(service_conn, StreamAppend("test-9", [NewEvent("Tested", {"i": 99})], META))

    health = wait_until(
        lambda: (r := client.get("/health")).status_code == 503 and r, what="/health 503"
    )
    body = health.json()
    assert body["status"] == "halted" and body["tree"] == "halted", body
    assert "events under the tree were rewritten" in body["reason"], body
    for path, params in (
        ("/audit/checkpoint", {}),
        ("/audit/checkpoints", {}),
        ("/audit/public-key", {}),
        ("/audit/proof/inclusion", {"position": 1, "tree_size": 10}),
        ("/audit/proof/consistency", {"from": 1, "to": 10}),
        ("/audit/receipt", {"position": 1}),
        ("/log/checkpoint", {}),
        ("/log/tile/0/000.p/10", {}),
    ):
        r = client.get(path, params=params, headers=auditor)
        assert r.status_code == 503, (path, r.text)
        problem = r.json()
        assert problem["type"].endswith("/tree-halted"), problem
        assert "events under the tree were rewritten" in problem["detail"], problem
        assert "retry-after" not in r.headers
    # unauthenticated callers learn nothing more than before
    assert client.get("/audit/checkpoint").status_code == 401
    verify = client.get("/audit/verify", headers=auditor).json()
    assert verify["ok"] is False
    assert verify["first_bad_position"] == 10, verify  # its hash no longer the signed leaf
    assert "the tree builder halted" in verify["reason"], verify


def test_a_rewrite_that_moves_every_table_but_the_signed_tree_is_caught(
    ledger10: dict[str, Any],
    client: Any,
    keyring: dict[str, str],
    super_conn: psycopg.Connection[Any],
) -> None:
    """The forger rewrites the last event with its hash, and moves the head,
    the watermark and the tree's state to match; the leaf the signed
    checkpoint covers still names the old event."""
    auditor = auth(keyring["auditor"])
    wait_until(
        lambda: (
            (r := client.get("/audit/checkpoint", headers=auditor)).status_code == 200
            and r.headers["x-ledger-tree-size"] == "10"
        ),
        what="a checkpoint of size 10",
    )
    super_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    bytes_edit(super_conn, 10, flip_data_digit)
    super_conn.execute(
        "UPDATE events SET hash = sha256(canonical) WHERE position = 10;"
        "UPDATE ledger_head SET hash = (SELECT hash FROM events WHERE position = 10);"
        "UPDATE verify_watermark SET hash = (SELECT hash FROM events WHERE position = 10);"
        "UPDATE merkle_state SET last_hash = (SELECT hash FROM events WHERE position = 10)"
    )
    body = client.get("/audit/verify", headers=auditor).json()
    assert body["ok"] is False, body
    assert body["first_bad_position"] == 10, body
    assert "signed checkpoint of size 10" in body["reason"], body
