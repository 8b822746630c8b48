"""Signed checkpoints and proofs served by the running service (SPEC §5)."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ledger.proofs import checkpointer, merkle, note
from ledger.settings import Settings
from tests.support import ORIGIN, append_events, auth, proof_settings, vkey, wait_for_checkpoint


@pytest.fixture
def settings(db_url: str, key_file: Path) -> Settings:  # fast checkpoints, the test's own key
    return proof_settings(db_url, key_file)


def event_hashes(conn: psycopg.Connection[Any]) -> list[bytes]:
    return [bytes(h) for (h,) in conn.execute("SELECT hash FROM events ORDER BY position")]


def test_checkpoint_is_a_signed_note_over_the_events(
    client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]
) -> None:
    append_events(service_conn, 20)
    hashes = event_hashes(service_conn)
    text = wait_for_checkpoint(client, keyring["agent"], len(hashes))
    v = vkey(client, keyring["agent"])
    assert v.name == ORIGIN
    cp, good = note.open_checkpoint(text, [v], origin=ORIGIN)
    assert good == [v]
    assert cp.size == len(hashes) == 25
    assert cp.root == merkle.root(hashes)
    lines = text.split("\n")
    assert lines[:3] == [ORIGIN, "25", base64.b64encode(cp.root).decode()]
    assert lines[3] == "" and lines[4].startswith(f"— {ORIGIN} ")
    # every checkpoint is kept, oldest first, paged by tree size
    r = client.get("/audit/checkpoints", params={"limit": 1000}, headers=auth(keyring["agent"]))
    items = r.json()["items"]
    assert items[-1]["tree_size"] == 25 and items[-1]["note"] == text
    sizes = [i["tree_size"] for i in items]
    assert sizes == sorted(set(sizes))
    r = client.get(
        "/audit/checkpoints", params={"after": sizes[-1]}, headers=auth(keyring["agent"])
    )
    assert r.json() == {"items": [], "next_after": sizes[-1]}
    for item in items:
        old, _ = note.open_checkpoint(item["note"], [v])
        assert old.root == merkle.root(hashes[: old.size])


def test_proof_endpoints_refuse_out_of_range_sizes(
    client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]
) -> None:
    wait_for_checkpoint(client, keyring["auditor"], 5)
    a = auth(keyring["auditor"])
    cases = [
        ("/audit/proof/inclusion", {"position": 6, "tree_size": 5}),
        ("/audit/proof/inclusion", {"position": 0, "tree_size": 5}),
        ("/audit/proof/inclusion", {"position": 1, "tree_size": 99}),
        ("/audit/proof/consistency", {"from": 4, "to": 3}),
        ("/audit/proof/consistency", {"from": 1, "to": 99}),
        ("/audit/proof/consistency", {"from": -1, "to": 3}),
    ]
    for path, params in cases:
        r = client.get(path, params=params, headers=a)
        assert r.status_code == 422, (path, params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = client.get("/audit/proof/inclusion", params={"position": 1, "tree_size": 99}, headers=a)
    assert r.json()["tree_size"] == 5  # says how far the tree is built
    # agents may not ask for proofs; officers may
    params = {"position": 1, "tree_size": 5}
    r = client.get("/audit/proof/inclusion", params=params, headers=auth(keyring["agent"]))
    assert r.status_code == 403
    r = client.get("/audit/proof/inclusion", params=params, headers=auth(keyring["officer"]))
    assert r.status_code == 200


def test_a_proof_up_to_the_head_waits_for_the_tree_instead_of_refusing(
    client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]
) -> None:
    """The tree is built off the append path, a few milliseconds behind: a size
    within the ledger's head is answered once the tree gets there, never
    refused as out of range."""
    a = auth(keyring["auditor"])
    for _ in range(10):
        append_events(service_conn, 3)
        head = client.get("/audit/head", headers=a).json()["position"]
        r = client.get(
            "/audit/proof/inclusion", params={"position": head, "tree_size": head}, headers=a
        )
        assert r.status_code == 200, r.text
        r = client.get("/audit/proof/consistency", params={"from": 1, "to": head}, headers=a)
        assert r.status_code == 200, r.text


def test_a_proof_the_tree_cannot_reach_in_time_is_a_503_to_retry(
    settings: Settings, keyring: dict[str, str], service_conn: psycopg.Connection[Any], db_url: str
) -> None:
    from fastapi.testclient import TestClient

    from ledger.api.app import create_app

    append_events(service_conn, 4)
    with psycopg.connect(db_url, autocommit=True) as holder:
        # another process holds the tree builder's lead and builds nothing
        assert holder.execute(
            "SELECT pg_try_advisory_lock(%s)", (checkpointer.LEADER_LOCK,)
        ).fetchone() == (True,)
        for wait in (0.3, 0.0):
            fast = settings.model_copy(update={"checkpoint_wait_seconds": wait})
            with TestClient(create_app(fast, tree=True), raise_server_exceptions=False) as client:
                a = auth(keyring["auditor"])
                head = client.get("/audit/head", headers=a).json()["position"]
                r = client.get(
                    "/audit/proof/inclusion", params={"position": 1, "tree_size": head}, headers=a
                )
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1"
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["type"].endswith("/tree-catching-up")
                # beyond the head is out of range at once, whatever the tree
                r = client.get(
                    "/audit/proof/consistency", params={"from": 1, "to": head + 1}, headers=a
                )
                assert r.status_code == 422, r.text
                # and so is a request that is wrong in itself, without waiting
                t0 = time.monotonic()
                r = client.get(
                    "/audit/proof/consistency", params={"from": head, "to": 1}, headers=a
                )
                assert r.status_code == 422 and time.monotonic() - t0 < 0.25, r.text


def _flip(proof: list[bytes], j: int, bit: int) -> list[bytes]:
    out = list(proof)
    b = bytearray(out[j])
    b[bit // 8] ^= 1 << (bit % 8)
    out[j] = bytes(b)
    return out


def test_service_proofs_verify_and_any_flipped_hash_fails(
    client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]
) -> None:
    append_events(service_conn, 595)  # 600 leaves: tiles of level 0 and 1, partial ones
    leaves = [merkle.leaf_hash(h) for h in event_hashes(service_conn)]
    n_max = len(leaves)
    wait_for_checkpoint(client, keyring["auditor"], n_max)
    a = auth(keyring["auditor"])
    roots: dict[int, bytes] = {}

    def root(n: int) -> bytes:
        if n not in roots:
            roots[n] = merkle.root_of_leaf_hashes(leaves[:n])
        return roots[n]

    @hsettings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        n = data.draw(st.integers(1, n_max), label="n")
        m = data.draw(st.integers(1, n), label="m")
        pos = data.draw(st.integers(1, m), label="position")
        r = client.get(
            "/audit/proof/inclusion", params={"position": pos, "tree_size": m}, headers=a
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["leaf_index"] == pos - 1 and body["tree_size"] == m
        inc = [bytes.fromhex(h) for h in body["hashes"]]
        merkle.verify_inclusion(pos - 1, m, leaves[pos - 1], inc, root(m))
        r = client.get("/audit/proof/consistency", params={"from": m, "to": n}, headers=a)
        assert r.status_code == 200, r.text
        assert r.json()["from"] == m and r.json()["to"] == n
        con = [bytes.fromhex(h) for h in r.json()["hashes"]]
        merkle.verify_consistency(m, n, root(m), root(n), con)
        for j in range(len(inc)):
            bad = _flip(inc, j, data.draw(st.integers(0, 255)))
            with pytest.raises(merkle.ProofError):
                merkle.verify_inclusion(pos - 1, m, leaves[pos - 1], bad, root(m))
        for j in range(len(con)):
            bad = _flip(con, j, data.draw(st.integers(0, 255)))
            with pytest.raises(merkle.ProofError):
                merkle.verify_consistency(m, n, root(m), root(n), bad)

    check()


def test_a_fresh_checkpoint_on_demand_when_the_head_is_ahead(
    db_url: str, key_file: Path, keyring: dict[str, str], service_conn: psycopg.Connection[Any]
) -> None:
    from fastapi.testclient import TestClient

    from ledger.api.app import create_app

    slow = proof_settings(db_url, key_file).model_copy(
        update={"checkpoint_interval_seconds": 3600.0, "checkpoint_wait_seconds": 10.0}
    )
    with TestClient(create_app(slow, tree=True)) as client:
        first = wait_for_checkpoint(client, keyring["agent"], 5)
        append_events(service_conn, 3)
        # the interval is an hour: only the request itself can have it signed
        r = client.get("/audit/checkpoint", headers=auth(keyring["agent"]))
        assert r.status_code == 200
        assert r.headers["x-ledger-tree-size"] == "8"
        assert r.text != first


def test_one_leader_across_processes_and_a_standby_takes_over(
    db_url: str, key_file: Path, service_conn: psycopg.Connection[Any]
) -> None:
    from ledger.proofs.checkpointer import CheckpointService
    from ledger.proofs.signing import load_keys

    s = proof_settings(db_url, key_file)
    a = CheckpointService(db_url, s, load_keys(s))
    b = CheckpointService(db_url, s, load_keys(s))
    a.start()
    b.start()
    try:
        deadline = time.monotonic() + 30
        while not (a.is_leader or b.is_leader):
            assert time.monotonic() < deadline, "nobody leads"
            time.sleep(0.02)
        while not (a.attempts and b.attempts):  # both have tried the lock
            assert time.monotonic() < deadline, "a service never tried to lead"
            time.sleep(0.02)
        assert a.is_leader != b.is_leader
        leader, standby = (a, b) if a.is_leader else (b, a)
        leader.stop()
        append_events(service_conn, 7)
        while not standby.is_leader:
            assert time.monotonic() < deadline, "the standby never took over"
            time.sleep(0.02)
        while service_conn.execute("SELECT max(size) FROM checkpoints").fetchone()[0] != 7:
            assert time.monotonic() < deadline, "the new leader signed nothing"
            time.sleep(0.02)
    finally:
        a.stop()
        b.stop()
