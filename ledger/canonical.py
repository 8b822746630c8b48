"""RFC 8785 (JSON Canonicalization Scheme) bytes and the event hash (SPEC §1).

Two paths produce the same bytes:

* the fast path hands the value to orjson with sorted keys. It is taken when
  every object key is ASCII (so orjson's code-point order equals RFC 8785's
  UTF-16 order) and no float occurs (orjson writes ``1.0`` where RFC 8785
  writes ``1``);
* the general path rebuilds the value with keys sorted by UTF-16 code units
  and floats pre-formatted the ECMAScript way (``orjson.Fragment``), then lets
  orjson write it unsorted.

``tests/unit/test_canonical.py`` proves both byte-equal to the ``rfc8785``
reference package with hypothesis.

``validate`` is the ingest gate: it refuses what RFC 8785 cannot hash
faithfully (SPEC §1) and names where it found it. Whatever the spelling, a
number whose value is an integer beyond ±(2^53 − 1) is refused: ``1e20``,
``1e16`` and ``9007199254740993.0`` parse to doubles that large, and every
double that large is an integer.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import orjson

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 32
ZERO_HASH = "0" * 64

_SORTED = orjson.OPT_SORT_KEYS
_UNSAFE = (
    "numbers whose value is an integer must lie within ±(2^53 − 1), however they are "
    "written (1e20, 9007199254740993.0); send larger values as strings"
)


class CanonicalError(ValueError):
    """A value RFC 8785 cannot represent faithfully.

    ``path`` is a JSON pointer-ish location (``payload.items[3].price``) and
    ``rule`` a short machine-readable name of the broken rule.
    """

    def __init__(self, path: str, rule: str, message: str) -> None:
        super().__init__(f"{path or '(root)'}: {message}")
        self.path = path
        self.rule = rule
        self.message = message


def _is_fast(value: Any) -> bool:
    """True when orjson with sorted keys already yields RFC 8785 bytes."""
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        t = type(v)
        if t is dict:
            for k in v:
                if not k.isascii():
                    return False
            items = v.values()
        elif t is list:
            items = v
        else:  # the value itself is a scalar (nested ones are checked below)
            if t is float or (t is int and not -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER):
                return False
            continue
        for item in items:
            tv = type(item)
            if tv is dict or tv is list:
                push(item)
            elif tv is float or (tv is int and not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER):
                return False
    return True


def format_number(x: float) -> str:
    """ECMAScript Number.prototype.toString, as RFC 8785 §3.2.2.3 requires."""
    if x != x or x in (math.inf, -math.inf):
        raise CanonicalError("", "finite_number", "NaN and Infinity have no JSON form")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    r = repr(abs(x))  # shortest round-trip digits, same as ECMAScript's
    mantissa, _, exp_text = r.partition("e")
    exp = int(exp_text) if exp_text else 0
    int_part, _, frac_part = mantissa.partition(".")
    if frac_part == "0":
        frac_part = ""
    digits = (int_part + frac_part).lstrip("0")
    # value = 0.<digits> * 10**n  (ECMAScript's n)
    lead_zeros = len(int_part + frac_part) - len((int_part + frac_part).lstrip("0"))
    n = len(int_part) + exp - lead_zeros
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        es = f"+{e}" if e >= 0 else f"-{-e}"
        out = digits + "e" + es if k == 1 else digits[0] + "." + digits[1:] + "e" + es
    return sign + out


def _utf16_key(k: str) -> bytes:
    return k.encode("utf-16-be", "surrogatepass")


def _normalize(v: Any) -> Any:
    t = type(v)
    if t is dict:
        return {k: _normalize(v[k]) for k in sorted(v, key=_utf16_key)}
    if t is list:
        return [_normalize(i) for i in v]
    if t is float:
        return orjson.Fragment(format_number(v).encode())
    if t is int and not -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
        # Outside the safe range an integer is only what a double makes of it
        # (that is what any other RFC 8785 implementation would read).
        return orjson.Fragment(format_number(float(v)).encode())
    return v


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 serialization of ``value`` as UTF-8 bytes."""
    if _is_fast(value):
        return orjson.dumps(value, option=_SORTED)
    return orjson.dumps(_normalize(value))


def event_hash_hex(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def event_without_hash(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "hash"}


def compute_event_hash(event: dict[str, Any]) -> str:
    """Hash of an event object per SPEC §1 (every field but ``hash``)."""
    return event_hash_hex(canonical_bytes(event_without_hash(event)))


_HASH_MEMBER = b',"hash":"'
_HASH_TAIL = len(_HASH_MEMBER) + 64 + len(b'"}')


def _has_float(value: dict[str, Any]) -> bool:
    stack: list[Any] = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        for x in v.values() if type(v) is dict else v:
            t = type(x)
            if t is float:
                return True
            if t is dict or t is list:
                push(x)
    return False


def exported_event_hash(event: dict[str, Any], line: bytes) -> str:
    """:func:`compute_event_hash` of ``event``, parsed from ``line``, sooner when
    the line is in the export's form: the event's RFC 8785 bytes with its
    ``,"hash":"…"`` member appended (``ledger.store.export_line``).

    Such a line, less that member, is the event's RFC 8785 bytes exactly when
    orjson with sorted keys writes the parsed event back to the same bytes, the
    bytes are ASCII (no key orjson could order otherwise), the event holds no
    float (orjson writes ``1.0`` where RFC 8785 writes ``1``) and no integer
    beyond 2^53 - 1. Then those bytes are hashed as they are; any other line
    takes the general path. The answer is always :func:`compute_event_hash`'s.
    """
    body = line.rstrip(b"\n")
    cut = len(body) - _HASH_TAIL
    if (
        cut > 1
        and body[cut : cut + len(_HASH_MEMBER)] == _HASH_MEMBER
        and body.endswith(b'"}')
        and body.isascii()
    ):
        rest = event.copy()
        rest.pop("hash", None)
        if not _has_float(rest):
            try:
                written = orjson.dumps(rest, option=_SORTED | orjson.OPT_STRICT_INTEGER)
            except orjson.JSONEncodeError:  # an integer beyond 2^53 - 1
                written = None
            candidate = body[:cut] + b"}"
            if written == candidate:
                return event_hash_hex(candidate)
    # Not in the export's form: before hashing what was parsed, make sure it
    # is all the line says (orjson keeps the last of two equal names, another
    # reader the first). Lines orjson writes back as they are never come here.
    refuse_duplicate_names(body)
    return compute_event_hash(event)


def duplicate_name(text: bytes) -> str | None:
    """The first name that appears twice in one object of the JSON ``text``
    (None when none does). Raises ``CanonicalError`` when ``text`` cannot be
    read to tell (not JSON, or nested beyond what the reader takes)."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if not found:
            seen: set[str] = set()
            for k, _ in items:
                if k in seen:
                    found.append(k)
                    break
                seen.add(k)
        return dict(items)

    try:
        json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError) as exc:  # fail closed: unread is not unique
        raise CanonicalError(
            "", "unreadable", f"cannot be read to check its names ({type(exc).__name__})"
        ) from None
    return found[0] if found else None


def loads_ijson(text: bytes) -> Any:
    """``text`` parsed by orjson, refused unless it is I-JSON (each name once
    in an object): orjson keeps the last of two equal names, another reader
    the first, so an event could read one way and hash the other. Raises
    ``orjson.JSONDecodeError`` or ``CanonicalError``."""
    value = orjson.loads(text)
    refuse_duplicate_names(text)
    return value


def refuse_duplicate_names(text: bytes) -> None:
    """RFC 8785 takes I-JSON: each name once in an object. Raises ``CanonicalError``."""
    dup = duplicate_name(text)
    if dup is not None:
        raise CanonicalError(
            "", "duplicate_name", f"the name {dup!r} appears twice in one object (I-JSON, RFC 8785)"
        )


def envelope_tail(
    position: int, prev_hash: str, recorded_at: str, stream: str, type_: str, version: int
) -> bytes:
    """How an event's canonical bytes end: the fields after ``meta`` in RFC 8785
    order. All ASCII without escapes (the schema's CHECKs on stream and type
    guarantee it), so plain formatting is canonical."""
    return (
        f',"position":{position},"prev_hash":"{prev_hash}","recorded_at":"{recorded_at}",'
        f'"stream":"{stream}","type":"{type_}","version":{version}}}'
    ).encode()


def _has_lone_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _escape_surrogate(c: str) -> str:
    return f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c


def validate(value: Any, path: str = "", depth: int = 0) -> None:
    """Refuse what the ledger could not hash faithfully (SPEC §1).

    Raises ``CanonicalError`` naming the first offending location.
    """
    t = type(value)
    if t is dict or t is list:
        if depth >= MAX_DEPTH:
            raise CanonicalError(
                path, "max_depth", f"nesting deeper than {MAX_DEPTH} levels is refused"
            )
        if t is dict:
            for k, item in value.items():
                if type(k) is not str:
                    raise CanonicalError(path, "key_type", "object keys must be strings")
                sub = f"{path}.{k}" if path else k
                if _has_lone_surrogate(k):
                    # name the key as JSON would escape it: the path itself must be sendable
                    shown = "".join(_escape_surrogate(c) for c in k)
                    sub = f"{path}.{shown}" if path else shown
                    raise CanonicalError(sub, "lone_surrogate", "key holds a lone UTF-16 surrogate")
                validate(item, sub, depth + 1)
        else:
            for i, item in enumerate(value):
                validate(item, f"{path}[{i}]", depth + 1)
    elif t is str:
        if _has_lone_surrogate(value):
            raise CanonicalError(path, "lone_surrogate", "string holds a lone UTF-16 surrogate")
    elif t is bool or value is None:
        return
    elif t is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalError(path, "safe_integer", _UNSAFE)
    elif t is float:
        if value != value or value in (math.inf, -math.inf):
            raise CanonicalError(path, "finite_number", "NaN and ±Infinity are refused")
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            # Every double this large is an integer (1e20, 9007199254740993.0):
            # a verifier reading it as an integer and one reading it as a
            # double would not agree on it, so it is refused like the integer.
            raise CanonicalError(path, "safe_integer", _UNSAFE)
    else:
        raise CanonicalError(path, "json_type", f"{t.__name__} is not a JSON value")
