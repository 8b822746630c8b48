"""Chain verification (SPEC §2): the one set of rules every check applies,
``GET /audit/verify`` (``ledger.audit.stored``), the offline ``ledger verify
FILE`` and the tree builder (``link_error``) alike. Pure: no database.

For each event in position order: positions contiguous; ``prev_hash`` equals
the previous event's hash (or the anchor for a range not starting at 1);
``hash`` recomputes from the canonical bytes; versions contiguous per stream
within the range; ``recorded_at`` does not decrease. The first failure is
reported with its position and why; a gap at the first missing position.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

from ledger.canonical import (
    ZERO_HASH,
    CanonicalError,
    compute_event_hash,
    exported_event_hash,
)

# Matched whole (fullmatch) and in ASCII digits: "\d" would take any script's
# digits and "$" a final line feed, which SPEC §1's exact form refuses.
TIMESTAMP_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
HEX64_RE = re.compile(r"[0-9a-f]{64}")
FIELDS = (
    "position",
    "stream",
    "version",
    "type",
    "data",
    "meta",
    "recorded_at",
    "prev_hash",
    "hash",
)
FIELD_SET = frozenset(FIELDS)


@dataclass(slots=True)
class Result:
    ok: bool
    verified_from: int | None
    verified_to: int | None
    head_hash: str | None
    first_bad_position: int | None = None
    reason: str | None = None
    count: int = 0
    swept: int = 0  # events verified before, re-hashed again (GET /audit/verify)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verified_from": self.verified_from,
            "verified_to": self.verified_to,
            "head_hash": self.head_hash,
            "first_bad_position": self.first_bad_position,
            "reason": self.reason,
        }


class Bad(Exception):
    def __init__(self, position: int | None, reason: str) -> None:
        super().__init__(reason)
        self.position = position
        self.reason = reason


def link_error(
    position: int, prev_hash: str, expected_position: int, expected_prev: str | None, *, first: bool
) -> str | None:
    """Why an event does not link to what came before it (None when it does):
    its position must follow, its ``prev_hash`` must name the hash before it
    (``expected_prev``; None: not known, e.g. a range without an anchor)."""
    if position != expected_position:
        after = expected_position - 1
        gap = f"position {expected_position} is missing: " if position > expected_position else ""
        if first:
            return f"{gap}the range starts at position {position}, expected {after + 1}"
        return f"{gap}position {position} follows position {after}; expected {after + 1}"
    if expected_prev is not None and prev_hash != expected_prev:
        what = "the anchor" if first else "the previous event's hash"
        return f"prev_hash {prev_hash[:16]}… does not match {what} {expected_prev[:16]}…"
    return None


class ChainVerifier:
    """Feed events in order; raises ``Bad`` at the first one that fails."""

    def __init__(self, *, start: int | None = None, anchor: str | None = None) -> None:
        # start: the position the range must begin at (None: whatever comes first,
        # 1 when no anchor is given). anchor: hash of the event before the range.
        self.expected_position = start
        self.prev_hash = anchor
        self.last_recorded_at = ""
        self.versions: dict[str, int] = {}
        self.first: int | None = None
        self.count = 0

    def check(
        self,
        position: int,
        stream: str,
        version: int,
        recorded_at: str,
        prev_hash: str,
        hash_: str,
        recomputed: str,
    ) -> None:
        if self.expected_position is None:
            self.expected_position = position if self.prev_hash is not None else 1
        if self.prev_hash is None and position == 1:
            self.prev_hash = ZERO_HASH
        why = link_error(
            position, prev_hash, self.expected_position, self.prev_hash, first=not self.count
        )
        if why:
            # A gap is reported where it is: the first missing position (an
            # event deleted at 162 is "position 162 is missing", not 163).
            missing = self.expected_position if position > self.expected_position else None
            raise Bad(missing or position, why)
        if recomputed != hash_:
            raise Bad(
                position,
                f"hash does not recompute from the canonical bytes (stored {hash_[:16]}…, computed {recomputed[:16]}…)",
            )
        last = self.versions.get(stream)
        if last is not None and version != last + 1:
            raise Bad(position, f"stream {stream} jumps from version {last} to {version}")
        if last is None and version < 1:
            raise Bad(position, f"stream {stream} has version {version} < 1")
        if recorded_at < self.last_recorded_at:
            raise Bad(
                position,
                f"recorded_at {recorded_at} is earlier than the previous {self.last_recorded_at}",
            )
        self.versions[stream] = version
        self.last_recorded_at = recorded_at
        self.prev_hash = hash_
        self.expected_position = position + 1
        if self.first is None:
            self.first = position
        self.count += 1

    def result(self, bad: Bad | None = None) -> Result:
        last = self.expected_position - 1 if self.count and self.expected_position else None
        if bad is not None:
            return Result(
                ok=False,
                verified_from=self.first,
                verified_to=last,
                head_hash=self.prev_hash if self.count else None,
                first_bad_position=bad.position,
                reason=bad.reason,
                count=self.count,
            )
        return Result(
            True, self.first, last, self.prev_hash if self.count else None, count=self.count
        )


def check_shape(event: Any, lineno: int) -> tuple[int, str, int, str, str, str]:
    """Check one parsed event's fields; returns the scalar ones."""
    if type(event) is not dict:
        raise Bad(None, f"line {lineno}: not a JSON object")
    if event.keys() != FIELD_SET:
        pos_hint = event.get("position")
        pos = pos_hint if type(pos_hint) is int else None
        missing = [f for f in FIELDS if f not in event]
        if missing:
            raise Bad(pos, f"line {lineno}: missing field(s) {', '.join(missing)}")
        extra = sorted(set(event) - FIELD_SET)
        raise Bad(pos, f"line {lineno}: unknown field(s) {', '.join(extra)}")
    p, s, v, ra, ph, h = (
        event["position"],
        event["stream"],
        event["version"],
        event["recorded_at"],
        event["prev_hash"],
        event["hash"],
    )
    # type(x) is int: what JSON parses to an integer, never a bool
    if type(p) is not int or p < 1:
        raise Bad(None, f"line {lineno}: position must be an integer ≥ 1")
    if type(v) is not int or v < 1:
        raise Bad(p, "version must be an integer ≥ 1")
    if type(s) is not str or type(event["type"]) is not str:
        raise Bad(p, "stream and type must be strings")
    if type(event["data"]) is not dict or type(event["meta"]) is not dict:
        raise Bad(p, "data and meta must be objects")
    if type(ra) is not str or not TIMESTAMP_RE.fullmatch(ra):
        raise Bad(p, "recorded_at is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    if type(ph) is not str or not HEX64_RE.fullmatch(ph):
        raise Bad(p, "prev_hash is not 64 lowercase hex digits")
    if type(h) is not str or not HEX64_RE.fullmatch(h):
        raise Bad(p, "hash is not 64 lowercase hex digits")
    return p, s, v, ra, ph, h


def verify_events(
    events: Iterable[tuple[int, Any]] | Iterable[tuple[int, Any, bytes]],
    *,
    anchor: str | None = None,
    expect_head: tuple[int, str] | None = None,
) -> Result:
    """Verify parsed events in file order: ``(line number, object)`` pairs, or
    ``(line number, object, line)`` when the line's bytes are at hand (the hash
    is then recomputed sooner from a line in the export's form)."""
    v = ChainVerifier(anchor=anchor)
    seen_head = False
    try:
        for lineno, event, *line in events:
            p, s, ver, ra, ph, h = check_shape(event, lineno)
            try:
                recomputed = (
                    exported_event_hash(event, line[0]) if line else compute_event_hash(event)
                )
            except CanonicalError as exc:
                # where the next event should be: a repeated name may be the
                # position itself, and which of its values is the line's is moot
                raise Bad(None, f"line {lineno}: {exc.message}") from None
            except (orjson.JSONEncodeError, RecursionError, TypeError) as exc:
                raise Bad(None, f"line {lineno}: cannot be hashed ({exc})") from None
            v.check(p, s, ver, ra, ph, h, recomputed)
            if expect_head and p == expect_head[0]:
                seen_head = True
                if h != expect_head[1]:
                    raise Bad(
                        p,
                        f"hash at position {p} differs from the expected head {expect_head[1][:16]}…",
                    )
        if expect_head and not seen_head:
            last = v.expected_position - 1 if v.expected_position else 0
            # A bundle that ends before the saved head lost its tail: the
            # first missing position is the first bad one.
            missing = last + 1 if v.count and last < expect_head[0] else expect_head[0]
            raise Bad(
                missing,
                f"the expected head position {expect_head[0]} is not in the bundle "
                f"(it ends at {last}); position {missing} is missing",
            )
    except Bad as bad:
        if bad.position is None and (v.count or anchor is None):
            # an unreadable line where the next event should be (without an
            # anchor the bundle starts at position 1)
            bad.position = v.expected_position or 1
        return v.result(bad)
    if v.count == 0:
        return Result(False, None, None, None, None, "no events to verify")
    return v.result()


def parse_lines(f: IO[bytes]) -> Iterator[tuple[int, Any, bytes]]:
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            yield lineno, orjson.loads(line), line
        except orjson.JSONDecodeError as exc:
            raise Bad(None, f"line {lineno}: not valid JSON ({exc})") from exc


def verify_file(
    f: IO[bytes], *, anchor: str | None = None, expect_head: tuple[int, str] | None = None
) -> Result:
    try:
        return verify_events(parse_lines(f), anchor=anchor, expect_head=expect_head)
    except Bad as bad:  # a parse error surfaces from the generator
        return Result(False, None, None, None, bad.position, bad.reason)
