"""The chain verifier on its own (SPEC §2): the shared ledger vectors, any
changed byte of a bundle, and the offline ``ledger verify`` command on files.
No database."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.audit.chain import verify_file
from tests.support import failed_at, ledger_verify

VECTORS = Path(__file__).parent.parent / "vectors"


EXPECT = json.loads((VECTORS / "ledger-expect.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECT["expect"]))
def test_ledger_vectors(name: str) -> None:
    expectation: str = EXPECT["expect"][name]
    path = VECTORS / name
    head = f"{EXPECT['head']['position']}:{EXPECT['head']['hash']}"
    with path.open("rb") as f:
        alone = verify_file(f)
    proc = ledger_verify(path)
    if expectation.startswith("verifies"):
        assert alone.ok, alone
        assert proc.returncode == 0, proc.stdout
        m = re.search(r"fails at position (\d+) with --expect-head", expectation)
        with path.open("rb") as f:
            with_head = verify_file(
                f, expect_head=(EXPECT["head"]["position"], EXPECT["head"]["hash"])
            )
        proc = ledger_verify(path, "--expect-head", head)
        if m:
            assert not with_head.ok
            assert with_head.first_bad_position == int(m.group(1))
            assert failed_at(proc) == int(m.group(1))
        else:
            assert with_head.ok, with_head
            assert proc.returncode == 0
    else:
        m = re.match(r"fails at position (\d+)(?: \(it follows position (\d+)\))?", expectation)
        assert m, expectation
        bad = int(m.group(1))
        if m.group(2):
            # A gap is reported at the first missing position (the project's
            # reading: a deleted event 162 is named 162, not 163), and the
            # reason names the event the vector names.
            bad = int(m.group(2)) + 1
            assert f"position {m.group(1)} follows position {m.group(2)}" in str(alone.reason)
        assert not alone.ok
        assert alone.first_bad_position == bad, alone
        assert proc.returncode == 1
        assert failed_at(proc) == bad, proc.stdout


OK_LINES = (VECTORS / "ledger-ok.ndjson").read_bytes().splitlines()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_changed_byte_of_a_bundle_is_caught(data: st.DataObject) -> None:
    """One byte of one line changed to anything else: the bundle fails at that
    line's position, unless the line still reads as the very same event."""
    k = data.draw(st.integers(0, len(OK_LINES) - 1), label="line")
    line = OK_LINES[k]
    i = data.draw(st.integers(0, len(line) - 1), label="offset")
    b = data.draw(st.integers(0, 255).filter(lambda v: v != line[i]), label="byte")
    changed = line[:i] + bytes([b]) + line[i + 1 :]
    lines = [*OK_LINES[:k], changed, *OK_LINES[k + 1 :]]
    result = verify_file(io.BytesIO(b"\n".join(lines) + b"\n"))
    position = k + 1
    try:
        event = orjson.loads(changed)
    except orjson.JSONDecodeError:
        event = None
    if event is None and b"\n" not in changed and b"\r" not in changed:
        assert not result.ok
        assert result.first_bad_position == position, result
        return
    one_line = b"\n" not in changed and b"\r" not in changed
    if one_line and isinstance(event, dict) and event == orjson.loads(line):
        assert result.ok, result  # e.g. an escape spelled another way: same event
        return
    assert not result.ok, result
    if isinstance(event, dict) and event.get("position") == position:
        assert result.first_bad_position == position, result


def test_an_empty_bundle_fails_with_a_plain_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    proc = ledger_verify(empty)
    assert proc.returncode == 1
    assert proc.stdout.strip() == "FAILED: no events to verify", proc.stdout


def test_an_empty_bundle_against_a_checkpoint_names_no_position() -> None:
    from ledger.audit.offline import Failed, check_bundle
    from ledger.proofs.note import Checkpoint

    with pytest.raises(Failed) as info:
        check_bundle(b"", Checkpoint("ledger.example/x", 1, bytes(32)), None, None)
    assert str(info.value) == "FAILED: no events to verify"


@pytest.mark.parametrize(
    "recorded_at",
    [
        "\u0662\u0660\u0662\u0666-01-01T00:00:00.000000Z",  # digits of another script
        "2026-01-01T00:00:00.000000Z\n",  # a final line feed
        "2026-01-01T00:00:00.000000",
        "2026-01-01 00:00:00.000000Z",
    ],
)
def test_recorded_at_must_be_the_exact_form(tmp_path: Path, recorded_at: str) -> None:
    """SPEC §1: exactly YYYY-MM-DDTHH:MM:SS.ffffffZ, even where the hash holds."""
    from ledger.canonical import ZERO_HASH, compute_event_hash

    event = {
        "position": 1,
        "stream": "task-1",
        "version": 1,
        "type": "Noted",
        "data": {},
        "meta": {},
        "recorded_at": recorded_at,
        "prev_hash": ZERO_HASH,
    }
    event["hash"] = compute_event_hash(event)
    result = verify_file(io.BytesIO(orjson.dumps(event) + b"\n"))
    assert not result.ok and result.reason is not None
    assert "recorded_at" in result.reason


def test_jobs_must_be_a_positive_number(tmp_path: Path) -> None:
    path = tmp_path / "bundle.ndjson"
    path.write_bytes(b"")
    for bad in ("0", "-3", "two", "\u0663"):  # the last: a digit of another script
        proc = ledger_verify(path, "--jobs", bad)
        assert proc.returncode == 2 and "--jobs" in proc.stderr, (bad, proc.stderr)


def test_expect_head_must_be_a_position_and_a_hash(tmp_path: Path) -> None:
    path = VECTORS / "ledger-ok.ndjson"
    for bad in ("0:" + "a" * 64, "6:" + "z" * 64, "6:" + "a" * 63, "\u0666:" + "a" * 64, "6"):
        proc = ledger_verify(path, "--expect-head", bad)
        assert proc.returncode == 2 and "--expect-head" in proc.stderr, (bad, proc.stderr)


def test_a_path_that_is_not_a_readable_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    proc = ledger_verify(tmp_path)  # a directory
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert str(tmp_path) in proc.stderr


def test_an_export_whose_payload_names_the_audit_bundle_format_is_an_export(
    tmp_path: Path,
) -> None:
    """Agents write payloads: naming the bundle format in one must not make
    ledger verify read the export as an audit bundle."""
    from ledger.canonical import ZERO_HASH, compute_event_hash
    from ledger.proofs.bundle import BUNDLE_FORMAT

    prev, lines = ZERO_HASH, []
    for position in (1, 2):
        event = {
            "data": {"payload": {"format": BUNDLE_FORMAT}},
            "meta": {},
            "position": position,
            "prev_hash": prev,
            "recorded_at": "2026-01-01T00:00:00.000000Z",
            "stream": "task-1",
            "type": "TaskSubmitted" if position == 1 else "TaskStepRecorded",
            "version": position,
        }
        event["hash"] = prev = compute_event_hash(event)
        lines.append(orjson.dumps(event, option=orjson.OPT_SORT_KEYS))
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    proc = ledger_verify(path)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.startswith("OK: positions 1..2 verify"), proc.stdout


def test_ledger_verify_loads_no_database_or_http_client() -> None:
    """An auditor's offline command starts without the service's libraries."""
    import subprocess
    import sys

    code = (
        "import sys; from ledger.cli import build_parser; build_parser('verify'); "
        "print(' '.join(m for m in ('psycopg', 'httpx', 'fastapi', 'ledger.settings') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"ledger verify loaded: {out.stdout.strip()}"


def test_every_offline_reading_of_an_event_refuses_a_name_twice(tmp_path: Path) -> None:
    """Not only export lines: an audit bundle, an --event file and a receipt's
    event are refused with a repeated name too (I-JSON, RFC 8785)."""
    from ledger.audit.offline import Failed, _ijson, check_files
    from ledger.proofs.bundle import BUNDLE_FORMAT
    from ledger.proofs.note import NoteError
    from ledger.proofs.receipts import Receipt

    forged = b'{"data":{"approved":false},"data":{"approved":true},"position":5}'
    with pytest.raises(Failed, match="'data' appears twice"):
        _ijson(forged, "event.json")
    assert _ijson(b'{"data":{"a":1},"meta":{"a":1}}', "event.json") == {
        "data": {"a": 1},
        "meta": {"a": 1},
    }
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(b'{"format":"' + BUNDLE_FORMAT.encode() + b'","events":[' + forged + b"]}")
    with pytest.raises(Failed, match="'data' appears twice"):
        check_files(keys=[], file=str(bundle))
    with pytest.raises(NoteError, match="'data' appears twice"):
        Receipt(forged, 4, [], "").event()
    assert Receipt(b'{"data":{}}', 0, [], "").event() == {"data": {}}


def test_a_line_too_deep_to_check_is_refused_not_a_traceback(tmp_path: Path) -> None:
    from ledger.canonical import ZERO_HASH

    fields = (
        f'"hash":"{"0" * 64}","meta":{{}},"position":1,"prev_hash":"{ZERO_HASH}",'
        '"recorded_at":"2026-01-01T00:00:00.000000Z","stream":"task-1","type":"Noted","version":1}'
    )
    path = tmp_path / "deep.ndjson"  # deeper than Python's json reads, not than orjson
    path.write_bytes(b'{"data":{"x":' + b"[" * 1000 + b"]" * 1000 + b"}," + fields.encode() + b"\n")
    with path.open("rb") as f:
        result = verify_file(f)
    assert not result.ok and result.first_bad_position == 1, result
    assert "cannot be read to check its names" in str(result.reason) or "hashed" in str(
        result.reason
    ), result
