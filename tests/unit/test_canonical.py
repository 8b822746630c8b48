"""Canonical bytes (SPEC §1): the fast path and the general path are byte-equal
to the ``rfc8785`` reference package, and what RFC 8785 cannot hash
faithfully is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger.canonical import (
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    CanonicalError,
    _is_fast,
    canonical_bytes,
    compute_event_hash,
    exported_event_hash,
    format_number,
    validate,
)
from ledger.events import NewEvent, StreamAppend

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "jcs.json").read_text())

# Characters that trip up serializers: controls (escaped), DEL (not escaped),
# line/paragraph separators (not escaped by RFC 8785), quotes, backslash,
# slash, non-ASCII, astral (surrogate pairs in UTF-16), and U+FB33 which
# sorts after an astral character by UTF-16 code units but before it by
# code points.
TRICKY = [chr(c) for c in range(0x20)] + [
    "\x7f",
    "\u2028",
    "\u2029",
    '"',
    "\\",
    "/",
    "é",
    "€",
    "\ufb33",
    "\ufeff",
    "\U0001f600",
    "\U00010000",
    "\U0010ffff",
    "a",
    "Z",
    " ",
]

texts = st.one_of(st.text(max_size=12), st.text(alphabet=st.sampled_from(TRICKY), max_size=8))
ascii_keys = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=8)
safe_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
special_floats = st.sampled_from(
    [
        -0.0,
        0.0,
        1.0,
        100.0,
        0.1,
        1e21,
        1e20,
        123456789012345680000.0,
        1e-6,
        1e-7,
        5e-7,
        5e-324,
        -5e-324,
        2.2250738585072014e-308,
        1.7976931348623157e308,
        -1.7976931348623157e308,
        9007199254740992.0,
        0.000001234,
        1.5e300,
        2.5e-300,
    ]
)
floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False), special_floats)
scalars = st.one_of(st.none(), st.booleans(), safe_ints, floats, texts)


def json_values(keys: st.SearchStrategy[str], leaves: st.SearchStrategy[Any]) -> Any:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=5)
        ),
        max_leaves=25,
    )


general_values = json_values(st.one_of(texts, ascii_keys), scalars)
# What the fast path takes: ASCII keys, no floats.
fast_values = json_values(ascii_keys, st.one_of(st.none(), st.booleans(), safe_ints, texts))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(general_values)
@example({"\U0001f600": 1, "\ufb33": 2, "é": 3, "a": 4, "": 5})
@example({"n": [1.0, 1e2, -0.0, 0.1, 1e21, 1e-7]})
@example({"s": 'é\u2028\u2029\U0001f600\x00\x1f"\\/'})
def test_canonical_bytes_equal_rfc8785(value: Any) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)


@settings(max_examples=300)
@given(fast_values)
def test_fast_path_equal_rfc8785(value: Any) -> None:
    assert _is_fast(value)  # this strategy stays on the fast path
    assert canonical_bytes(value) == rfc8785.dumps(value)


@given(
    st.dictionaries(st.text(min_size=1).filter(lambda k: not k.isascii()), safe_ints, min_size=1)
)
def test_non_ascii_keys_leave_the_fast_path(value: dict[str, int]) -> None:
    assert not _is_fast(value)
    assert canonical_bytes(value) == rfc8785.dumps(value)


@settings(max_examples=1000)
@given(floats)
def test_format_number_equal_rfc8785(x: float) -> None:
    assert format_number(x).encode() == rfc8785.dumps(x)


@settings(max_examples=200)
@given(general_values)
def test_canonical_bytes_round_trip(value: Any) -> None:
    """Parsing canonical bytes and canonicalizing again gives the same bytes:
    what a verifier reads back from an export hashes the same."""
    once = canonical_bytes(value)
    assert canonical_bytes(orjson.loads(once)) == once
    assert canonical_bytes(json.loads(once)) == once


def _unsafe_number(value: Any) -> bool:
    """True when ``value`` holds a number whose value is an integer beyond
    ±(2^53 − 1) (SPEC §1): an int, or a double that large (all are integers)."""
    if isinstance(value, dict):
        return any(_unsafe_number(v) for v in value.values())
    if isinstance(value, list):
        return any(_unsafe_number(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return abs(value) > MAX_SAFE_INTEGER and float(value) == int(value)
    return False


@settings(max_examples=200)
@given(general_values)
def test_generated_values_pass_validate_unless_an_unsafe_integer(value: Any) -> None:
    """Everything generated is in RFC 8785's domain; validate refuses exactly
    the values holding a number whose value is an integer beyond 2^53 − 1."""
    if _unsafe_number(value):
        with pytest.raises(CanonicalError) as info:
            validate(value)
        assert info.value.rule == "safe_integer"
    else:
        validate(value)


@pytest.mark.parametrize(
    "text",
    [
        "1e20",
        "1e16",
        "9007199254740993.0",
        "9007199254740992.0",
        "-9007199254740993.0",
        "1.5e300",
        "-1e308",
        "123456789012345680000.0",
    ],
)
def test_unsafe_integers_refused_however_written(text: str) -> None:
    """A double this large is an integer: a verifier parsing JSON as integers
    and one parsing doubles would read different values (SPEC §1)."""
    with pytest.raises(CanonicalError) as info:
        validate({"a": {"b": [json.loads(text)]}})
    assert (info.value.rule, info.value.path) == ("safe_integer", "a.b[0]")


@pytest.mark.parametrize("text", ["9007199254740991.0", "-9007199254740991", "1e15", "0.5", "-0.0"])
def test_numbers_within_the_safe_range_pass(text: str) -> None:
    validate({"n": json.loads(text)})


@given(
    st.one_of(
        st.integers(min_value=MAX_SAFE_INTEGER + 1),
        st.integers(max_value=-MAX_SAFE_INTEGER - 1),
    )
)
def test_unsafe_integers_refused_like_the_reference(n: int) -> None:
    with pytest.raises(CanonicalError) as info:
        validate({"a": [n]})
    assert info.value.rule == "safe_integer"
    assert info.value.path == "a[0]"
    with pytest.raises(rfc8785.IntegerDomainError):
        rfc8785.dumps(n)


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["input"][:40])
def test_jcs_vectors(case: dict[str, str]) -> None:
    value = json.loads(case["input"])
    if _unsafe_number(value):  # hashed faithfully, but the ledger refuses to take it in
        with pytest.raises(CanonicalError):
            validate(value)
    else:
        validate(value)
    out = canonical_bytes(value)
    assert out == case["canonical"].encode("utf-8")
    assert hashlib.sha256(out).hexdigest() == case["sha256"]
    assert rfc8785.dumps(value) == out


def _refuse_constant(name: str) -> Any:
    raise CanonicalError("", "finite_number", name)


@pytest.mark.parametrize("case", VECTORS["refused"], ids=lambda c: c["why"])
def test_jcs_refused_vectors(case: dict[str, str]) -> None:
    with pytest.raises(CanonicalError):
        validate(json.loads(case["input"], parse_constant=_refuse_constant))


@pytest.mark.parametrize(
    ("value", "path", "rule"),
    [
        ({"x": float("nan")}, "x", "finite_number"),
        ({"x": [float("inf")]}, "x[0]", "finite_number"),
        ({"x": {"y": -float("inf")}}, "x.y", "finite_number"),
        ({"s": "a\ud800b"}, "s", "lone_surrogate"),
        ({"\udfff": 1}, "\\udfff", "lone_surrogate"),  # the key named escaped
        ({"n": 2**53}, "n", "safe_integer"),
        ({"n": -(2**53)}, "n", "safe_integer"),
        ({"t": (1, 2)}, "t", "json_type"),
        ({1: 2}, "", "key_type"),
    ],
)
def test_validate_names_path_and_rule(value: Any, path: str, rule: str) -> None:
    with pytest.raises(CanonicalError) as info:
        validate(value)
    assert info.value.path == path
    assert info.value.rule == rule


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_nesting_limit() -> None:
    validate(_nested(MAX_DEPTH))  # 32 levels of arrays: accepted
    with pytest.raises(CanonicalError) as info:
        validate(_nested(MAX_DEPTH + 1))
    assert info.value.rule == "max_depth"


def test_event_hash_is_over_every_field_but_hash() -> None:
    event = {
        "position": 1,
        "stream": "test-x",
        "version": 1,
        "type": "Tested",
        "data": {"n": 1.0},
        "meta": {"actor": "a", "role": "agent", "request_id": "r"},
        "recorded_at": "2026-01-01T00:00:00.000000Z",
        "prev_hash": "0" * 64,
    }
    expected = hashlib.sha256(rfc8785.dumps(event)).hexdigest()
    assert compute_event_hash(event) == expected
    assert compute_event_hash({**event, "hash": "f" * 64}) == expected
    assert compute_event_hash({**event, "version": 2}) != expected


# Integers of any size orjson reads (beyond 2^53 - 1 RFC 8785 writes them as doubles).
line_values = json_values(
    st.one_of(texts, ascii_keys), st.one_of(scalars, st.integers(-(2**63), 2**63 - 1))
)
LINE_FORMS = ["export", "orjson", "indented"]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(line_values, line_values, st.sampled_from(LINE_FORMS))
@example({"a": 1.0}, {}, "orjson")  # orjson writes 1.0, RFC 8785 writes 1
@example({"a": 1e21}, {}, "orjson")  # 1e21 and 1e+21
@example({"a": 2**60}, {}, "orjson")  # written as a double by RFC 8785
@example({"\ufb33": 1, "\U0001f600": 2}, {}, "orjson")  # sorted otherwise by orjson
@example({"s": "\u2028\x00\\"}, {}, "export")
def test_a_line_is_hashed_as_its_event(data: Any, meta: Any, form: str) -> None:
    """Whatever the line looks like, its hash is the parsed event's (SPEC §1);
    the export's own form only gets there sooner."""
    event: dict[str, Any] = {
        "data": {"v": data},
        "meta": {"v": meta},
        "position": 3,
        "prev_hash": "ab" * 32,
        "recorded_at": "2026-01-05T09:00:00.000020Z",
        "stream": "task-1",
        "type": "Noted",
        "version": 1,
    }
    h = compute_event_hash(event)
    written = {
        "export": canonical_bytes(event),
        "orjson": orjson.dumps(event, option=orjson.OPT_SORT_KEYS),
        "indented": orjson.dumps(event, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2),
    }[form]
    line = written[:-1] + b',"hash":"' + h.encode() + b'"}\n'
    parsed = orjson.loads(line)
    assert exported_event_hash(parsed, line) == compute_event_hash(parsed) == h
    # a line whose hash member is not the event's own is hashed all the same
    other = written[:-1] + b',"hash":"' + b"0" * 64 + b'"}\n'
    assert exported_event_hash(orjson.loads(other), other) == h


@given(fast_values)
def test_the_exports_own_lines_are_hashed_as_they_are(value: Any) -> None:
    event = {"data": {"v": value}, "meta": {}, "position": 1, "type": "T"}
    line = canonical_bytes(event)[:-1] + b',"hash":"' + b"0" * 64 + b'"}\n'
    parsed = orjson.loads(line)
    assert exported_event_hash(parsed, line) == hashlib.sha256(canonical_bytes(event)).hexdigest()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(general_values, min_size=1, max_size=4), st.dictionaries(texts, general_values))
@example([{"z": 1, "a": [1.5]}], {"request_id": "r", "actor": "é"})
def test_a_commands_bodies_are_the_canonical_prefix_of_data_and_meta(
    datas: list[Any], meta: dict[str, Any]
) -> None:
    """StreamAppend.prepare writes meta once for all events; every body must
    still be the RFC 8785 bytes of {"data": d, "meta": m} without its last brace,
    because the stored event's hash is taken over that prefix and its tail."""
    cmd = StreamAppend("task-1", [NewEvent("TaskStepRecorded", d) for d in datas], meta)
    cmd.prepare()
    assert cmd.bodies == [rfc8785.dumps({"data": d, "meta": meta})[:-1] for d in datas]
