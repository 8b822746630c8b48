"""/log/: the log as C2SP tlog-tiles resources, read by a client written here
from the C2SP texts alone (it imports none of the project's tree code)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient

from ledger.settings import Settings
from tests.support import (
    ORIGIN,
    app_with_runner,
    append_events,
    proof_settings,
    vkey,
    wait_for_checkpoint,
)


@pytest.fixture
def settings(db_url: str, key_file: Path) -> Settings:
    return proof_settings(db_url, key_file)


# -- a tlog-tiles client from the text ------------------------------------------------


def tile_index(n: int) -> str:
    """<N> as zero-padded 3-digit elements, all but the last prefixed with x."""
    parts = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        parts.insert(0, f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(parts)


def tile_url(level: str | int, n: int, width: int = 256) -> str:
    return f"/log/tile/{level}/{tile_index(n)}" + (f".p/{width}" if width < 256 else "")


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def mth(hs: list[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash over leaf hashes already computed."""
    if len(hs) == 1:
        return hs[0]
    k = 1
    while k * 2 < len(hs):
        k *= 2
    return sha(b"\x01" + mth(hs[:k]) + mth(hs[k:]))


def path(m: int, hs: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n]) over leaf hashes."""
    if len(hs) == 1:
        return []
    k = 1
    while k * 2 < len(hs):
        k *= 2
    if m < k:
        return [*path(m, hs[:k]), mth(hs[k:])]
    return [*path(m - k, hs[k:]), mth(hs[:k])]


def root_from_path(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2 verification of an inclusion path."""
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = sha(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    assert sn == 0
    return r


def read_checkpoint(text: str, vkey_text: str) -> tuple[int, bytes]:
    """tlog-checkpoint body and one Ed25519 signed-note signature by the log."""
    body, _, sigs = text.partition("\n\n")
    origin, size, root = body.split("\n")
    name, kid, key = vkey_text.strip().split("+", 2)
    raw_key = base64.b64decode(key)
    assert raw_key[0] == 1
    ok = False
    for line in sigs.splitlines():
        sig_name, sig = line.removeprefix("— ").split(" ")
        raw = base64.b64decode(sig)
        if sig_name == name and raw[:4].hex() == kid:
            Ed25519PublicKey.from_public_bytes(raw_key[1:]).verify(raw[4:], (body + "\n").encode())
            ok = True
    assert ok and origin == ORIGIN
    return int(size), base64.b64decode(root)


def fetch_leaves(client: Any, size: int) -> tuple[list[bytes], list[bytes]]:
    """(entries, leaf hashes) of the tree of ``size``: level-0 tiles and entry
    bundles, full ones and the partial one the size needs, checked against
    each other."""
    entries: list[bytes] = []
    leaves: list[bytes] = []
    for n in range((size + 255) // 256):
        width = min(256, size - n * 256)
        t = client.get(tile_url(0, n, width))
        b = client.get(tile_url("entries", n, width))
        assert t.status_code == b.status_code == 200, (n, width, t.text)
        assert t.headers["content-type"] == "application/octet-stream"
        assert len(t.content) == 32 * width
        leaves += [t.content[i : i + 32] for i in range(0, len(t.content), 32)]
        data, got = b.content, []
        while data:
            length = int.from_bytes(data[:2], "big")
            got.append(data[2 : 2 + length])
            data = data[2 + length :]
        assert len(got) == width
        entries += got
    assert [sha(b"\x00" + e) for e in entries] == leaves
    return entries, leaves


def test_a_tiles_client_checks_every_event_and_the_root(
    client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]
) -> None:
    append_events(service_conn, 600)
    wait_for_checkpoint(client, keyring["auditor"], 600)
    r = client.get("/log/checkpoint")  # public: no credentials
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "max-age" in r.headers["cache-control"] and "immutable" not in r.headers["cache-control"]
    size, root = read_checkpoint(r.text, vkey(client, keyring["auditor"]).vkey)
    assert size > 512
    entries, leaves = fetch_leaves(client, size)
    # the entries are the events' hashes, in position order
    stored = [
        bytes(h) for (h,) in service_conn.execute("SELECT hash FROM events ORDER BY position")
    ]
    assert entries == stored[:size]
    assert mth(leaves) == root
    # level 1 holds the hashes of the full level-0 tiles
    l1 = client.get(tile_url(1, 0, size // 256))
    assert l1.status_code == 200
    assert l1.content == b"".join(mth(leaves[i * 256 : (i + 1) * 256]) for i in range(size // 256))
    for index in (0, 1, 255, 256, 300, size - 1):
        assert root_from_path(index, size, leaves[index], path(index, leaves)) == root
    # full tiles are immutable; partial ones are cached briefly
    full = client.get(tile_url(0, 0))
    assert "immutable" in full.headers["cache-control"]
    part = client.get(tile_url(0, size // 256, size % 256))
    assert "immutable" not in part.headers["cache-control"]
    assert (
        client.get(tile_url("entries", 0)).headers["cache-control"] == full.headers["cache-control"]
    )


def test_only_canonical_paths_of_tiles_that_exist(
    client: Any, keyring: dict[str, str], service_conn: psycopg.Connection[Any]
) -> None:
    append_events(service_conn, 300)
    wait_for_checkpoint(client, keyring["auditor"], 300)
    assert client.get("/log/tile/0/000").status_code == 200
    for bad in (
        "0/0",  # not three digits
        "0/x000/001",  # a leading zero element
        "00/000",
        "64/000",
        "0/000.p/0",
        "0/000.p/256",
        "0/000.p/07",
        "0/001",  # not full yet
        "0/001.p/255",  # wider than the tree
        "1/000",
        "entries/001",
        "entries/001.p/200",
        "2/000.p/1",
    ):
        r = client.get(f"/log/tile/{bad}")
        assert r.status_code == 404, (bad, r.status_code)


def test_a_read_token_closes_the_log(settings: Settings, keyring: dict[str, str]) -> None:
    closed = settings.model_copy(update={"log_read_token": "s3cret"})
    with TestClient(app_with_runner(closed)) as c:
        wait_for_checkpoint(c, keyring["auditor"], 5)
        token = {"Authorization": "Bearer s3cret"}
        assert c.get("/log/checkpoint", headers=token).status_code == 200
        assert c.get("/log/checkpoint").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert c.get("/log/tile/0/000.p/1", headers=wrong).status_code == 401
        ok = c.get("/log/tile/0/000.p/1", headers=token)
        assert ok.status_code == 200 and len(ok.content) == 32
