"""``ledger verify`` on several processes says exactly what the sequential
verifier says: OK with the same range, head and count for a good bundle, and
(by verifying again in order) the same first failure for a bad one, wherever
the chunks are cut. No database."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.audit import parallel
from ledger.audit.chain import verify_file
from ledger.canonical import ZERO_HASH, canonical_bytes, compute_event_hash
from ledger.store import export_line
from tests.support import ledger_verify


def _events(n: int, streams: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(n)
    versions: dict[str, int] = {}
    prev, out = ZERO_HASH, []
    for p in range(1, n + 1):
        s = f"task-{rng.randrange(streams)}"
        versions[s] = versions.get(s, 0) + 1
        event: dict[str, Any] = {
            "position": p,
            "stream": s,
            "version": versions[s],
            "type": "Noted",
            "data": {"i": p, "text": "x" * rng.randrange(40)},
            "meta": {"actor": "tester", "role": "agent", "request_id": f"r-{p}"},
            "recorded_at": f"2026-01-01T{p // 3_600_000:02d}:{p // 60_000 % 60:02d}:{p // 1000 % 60:02d}.{p % 1000:06d}Z",
            "prev_hash": prev,
        }
        event["hash"] = prev = compute_event_hash(event)
        out.append(event)
    return out


def _line(event: dict[str, Any], form: str) -> bytes:
    """An event as orjson writes it (fields in their order), or as the ledger
    exports it (its canonical bytes, the hash member appended)."""
    if form == "orjson":
        return orjson.dumps(event)
    rest = {k: v for k, v in event.items() if k != "hash"}
    return export_line(canonical_bytes(rest), bytes.fromhex(event["hash"])).rstrip(b"\n")


FORMS = {form: [_line(e, form) for e in _events(400)] for form in ("orjson", "export")}
GOOD = FORMS["orjson"]


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # ~10 events a chunk: every kind of tampering lands at a join somewhere
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 2_000)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)


def _both(tmp: Path, lines: list[bytes], **kw: Any) -> tuple[Any, Any]:
    path = tmp / "bundle.ndjson"
    body = b"\n".join(lines) + b"\n"
    path.write_bytes(body)
    alone = verify_file(io.BytesIO(body), **kw)
    spread = parallel.verify_path(str(path), jobs=2, **kw)
    return alone, spread


def _same(a: Any, b: Any) -> None:
    assert (a.as_dict(), a.count) == (b.as_dict(), b.count)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_good_bundle_verifies_alike(tmp_path: Path, form: str) -> None:
    alone, spread = _both(tmp_path, FORMS[form])
    assert alone.ok and alone.count == 400
    _same(alone, spread)
    # a parallel pass that found nothing to doubt answers by itself
    assert parallel._parallel(str(tmp_path / "bundle.ndjson"), None, None, 2) is not None


def test_the_chunk_check_refuses_whatever_the_rules_refuse() -> None:
    """Each field the sequential rules check, broken in a line that still hashes:
    the one-loop chunk check doubts it (None), it never says OK."""
    events = _events(5)
    good = b"\n".join(FORMS["export"][:5]) + b"\n"
    assert parallel.check_chunk(good, None) is not None
    broken: list[tuple[str, Any]] = [
        ("position", True),
        ("position", 0),
        ("version", 0),
        ("version", "1"),
        ("stream", 7),
        ("type", None),
        ("data", []),
        ("meta", "x"),
        ("recorded_at", "2026-01-01 00:00:00.000000Z"),
        ("prev_hash", "A" * 64),
        ("hash", "0" * 63),
    ]
    for field, value in broken:
        e = {**events[0], field: value}
        if field != "hash":
            e["hash"] = compute_event_hash({k: v for k, v in e.items() if k != "hash"})
        assert parallel.check_chunk(orjson.dumps(e) + b"\n", None) is None, field
    extra = {**events[0], "note": 1}
    assert parallel.check_chunk(orjson.dumps(extra) + b"\n", None) is None


def test_a_range_with_its_anchor_and_the_saved_head(tmp_path: Path) -> None:
    events = _events(400)
    anchor = events[99]["hash"]
    head = (300, events[299]["hash"])
    _same(*_both(tmp_path, GOOD[100:], anchor=anchor, expect_head=head))
    assert _both(tmp_path, GOOD[100:], anchor=anchor)[1].ok
    # without the anchor a range not starting at 1 fails, as it always has
    _same(*_both(tmp_path, GOOD[100:]))
    _same(*_both(tmp_path, GOOD[:250], expect_head=head))  # the head is missing
    _same(*_both(tmp_path, GOOD, expect_head=(300, "0" * 64)))


MUTATIONS = ["drop", "swap", "duplicate", "byte", "version", "time", "blank"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(MUTATIONS),
    st.integers(0, len(GOOD) - 2),
    st.integers(0, 10**6),
    st.sampled_from(sorted(FORMS)),
)
def test_any_tampering_reports_what_the_sequential_verifier_reports(
    tmp_path: Path, how: str, k: int, seed: int, form: str
) -> None:
    lines = list(FORMS[form])
    if how == "drop":
        del lines[k]
    elif how == "swap":
        lines[k], lines[k + 1] = lines[k + 1], lines[k]
    elif how == "duplicate":
        lines.insert(k, lines[k])
    elif how == "byte":
        i = seed % len(lines[k])
        lines[k] = lines[k][:i] + bytes([(lines[k][i] + 1 + seed % 200) % 256]) + lines[k][i + 1 :]
    elif how in ("version", "time"):
        # re-chained after the change: only the per-stream or time rule can catch it
        events = [orjson.loads(x) for x in lines]
        if how == "version":
            events[k]["version"] += 1
        else:
            events[k]["recorded_at"] = "2025-01-01T00:00:00.000000Z"
        prev = events[k - 1]["hash"] if k else ZERO_HASH
        for e in events[k:]:
            e["prev_hash"] = prev
            e["hash"] = prev = compute_event_hash({f: v for f, v in e.items() if f != "hash"})
        lines = [_line(e, form) for e in events]
    else:
        lines.insert(k, b"   ")
    alone, spread = _both(tmp_path, lines)
    _same(alone, spread)


def test_a_bundle_against_a_checkpoint_is_streamed(tmp_path: Path) -> None:
    """ledger verify FILE --checkpoint keeps the tree's right edge, not the
    file: its peak allocation stays a small part of the bundle however long,
    and the root it finds is the tree's (and a changed leaf is not)."""
    import tracemalloc

    from ledger.audit.offline import Failed, check_bundle
    from ledger.proofs import merkle
    from ledger.proofs.note import Checkpoint

    events = _events(20_000)
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"".join(_line(e, "export") + b"\n" for e in events))
    size = len(events) - 7
    root = merkle.root(bytes.fromhex(e["hash"]) for e in events[:size])
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            out = check_bundle(f, Checkpoint("ledger.example/x", size, root), None, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (
        out[-1] == f"OK: events 1..{size} are the tree of the signed checkpoint (ledger.example/x)"
    )
    assert peak < path.stat().st_size / 10, (peak, path.stat().st_size)
    with path.open("rb") as f, pytest.raises(Failed, match="history differs"):
        check_bundle(f, Checkpoint("ledger.example/x", size, bytes(32)), None, None)


def test_a_line_with_a_name_twice_is_refused_where_it_is(tmp_path: Path) -> None:
    """orjson keeps the last of two equal names and another reader the first:
    a forged "data" put before the real one would read as the forgery yet
    hash as the original. RFC 8785 takes I-JSON, each name once: refused, in
    order and on several processes alike, and by the command."""
    lines = list(FORMS["export"][:30])
    lines[11] = b'{"data":{"approved":false},' + lines[11][1:]
    alone, spread = _both(tmp_path, lines)
    assert not alone.ok and alone.first_bad_position == 12, alone
    assert "'data' appears twice" in str(alone.reason)
    _same(alone, spread)
    path = tmp_path / "bundle.ndjson"
    proc = ledger_verify(path)
    assert proc.returncode == 1 and "FAILED at position 12" in proc.stdout, proc.stdout
    assert "appears twice" in proc.stdout


def test_duplicate_names_are_found_at_any_depth() -> None:
    from ledger.canonical import CanonicalError, duplicate_name

    assert duplicate_name(b'{"a":{"b":[{"c":1,"c":2}]}}') == "c"
    assert duplicate_name(b'{"a":1,"b":{"a":1}}') is None  # the same name in two objects
    with pytest.raises(CanonicalError):  # what cannot be read is not taken as unique
        duplicate_name(b"not json")
