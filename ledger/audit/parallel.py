"""``ledger verify`` on every core: the export's lines parsed, checked and
hashed in worker processes, chunk by chunk, the links between chunks checked
in order here.

Each line's hash is independent of the others; only the links (position,
``prev_hash``, ``recorded_at``, per-stream versions) are sequential. A worker
takes a chunk of whole lines and checks everything inside it with the same
rules as :func:`ledger.audit.chain.verify_events`, starting from the chunk's
own first event; it returns what the next chunk must join to: the first and
last event's link fields and each stream's first and last version. Here, the
chunks are joined in file order.

This path only ever says OK. At the first doubt anywhere (a failure in a
chunk or at a join) the file is verified again from its start by the
sequential verifier, which says what failed and where, word for word as it
always has: a failure costs one more pass, a good export is read once.

Each worker reads its own chunk (the lines that begin in a byte range of the
file), so what passes between the processes is two offsets out and a summary
back; a bounded number of chunks is in flight: memory stays flat whatever the
file's size (but for the per-stream versions, which any verifier keeps).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from ledger.audit.chain import FIELD_SET, TIMESTAMP_RE, Result, link_error, verify_file
from ledger.canonical import ZERO_HASH, exported_event_hash

CHUNK_BYTES = 1 << 20  # ~2,000 events of a typical export
MIN_PARALLEL_BYTES = 4 * CHUNK_BYTES  # below this, one process is quicker than starting more
_HEX = "0123456789abcdef"


@dataclass(slots=True)
class Chunk:
    """What a chunk's events must join to (all checked inside it)."""

    count: int
    first: tuple[int, str, str]  # position, prev_hash, recorded_at of its first event
    last: tuple[int, str, str]  # position, hash, recorded_at of its last event
    streams: dict[str, tuple[int, int]]  # stream -> (first, last) version in the chunk
    seen_head: bool


def check_chunk(data: bytes, expect_head: tuple[int, str] | None) -> Chunk | None:
    """Check a chunk of whole lines in itself; None at the first doubt.

    The rules of ``ChainVerifier`` and ``check_shape``, written out in one loop
    (this is where an export's time goes) and at least as strict: whatever they
    would refuse, or this loop does not take for certain, is None, and the
    sequential verifier then says what it is."""
    loads, fields, timestamp = orjson.loads, FIELD_SET, TIMESTAMP_RE.fullmatch
    head_position, head_hash = expect_head or (0, "")
    first: tuple[int, str, str] | None = None
    expected, prev, last_ra = 0, "", ""
    versions: dict[str, int] = {}
    firsts: dict[str, int] = {}
    count = 0
    seen_head = False
    try:
        for line in data.split(b"\n"):
            if not line:
                continue
            e = loads(line)
            if type(e) is not dict or e.keys() != fields:
                return None
            p, s, ver = e["position"], e["stream"], e["version"]
            ra, ph, h = e["recorded_at"], e["prev_hash"], e["hash"]
            if (
                type(p) is not int
                or type(ver) is not int
                or ver < 1
                or type(s) is not str
                or type(e["type"]) is not str
                or type(e["data"]) is not dict
                or type(e["meta"]) is not dict
                or type(ra) is not str
                or type(ph) is not str
                or type(h) is not str
                or len(ph) != 64
                or len(h) != 64
                or ph.strip(_HEX)
                or h.strip(_HEX)
                or not timestamp(ra)
            ):
                return None
            if first is None:
                if p < 1:
                    return None
                first, expected, prev = (p, ph, ra), p, ph
            if p != expected or ph != prev or ra < last_ra:
                return None
            known = versions.get(s)
            if known is None:
                firsts[s] = ver
            elif ver != known + 1:
                return None
            if exported_event_hash(e, line) != h:
                return None
            versions[s], last_ra, prev, expected = ver, ra, h, p + 1
            count += 1
            if p == head_position:
                if h != head_hash:
                    return None
                seen_head = True
    except Exception:  # any doubt: the sequential verifier will say what it is
        return None
    if first is None:
        return Chunk(0, (0, "", ""), (0, "", ""), {}, False)
    streams = {s: (fv, versions[s]) for s, fv in firsts.items()}
    return Chunk(count, first, (expected - 1, prev, last_ra), streams, seen_head)


class _Join:
    """The chunks joined in file order, by the sequential verifier's rules."""

    def __init__(self, anchor: str | None) -> None:
        self.anchor = anchor
        self.expected: int | None = None
        self.prev: str | None = anchor
        self.last_ra = ""
        self.versions: dict[str, int] = {}
        self.first: int | None = None
        self.count = 0
        self.seen_head = False

    def add(self, c: Chunk) -> bool:
        """False when ``c`` does not join what came before it."""
        if not c.count:
            return True
        p, ph, ra = c.first
        if self.expected is None:  # as ChainVerifier.check does for its first event
            self.expected = p if self.prev is not None else 1
        if self.prev is None and p == 1:
            self.prev = ZERO_HASH
        if link_error(p, ph, self.expected, self.prev, first=not self.count) or ra < self.last_ra:
            return False
        versions = self.versions
        for s, (fv, lv) in c.streams.items():
            known = versions.get(s)
            if known is not None and fv != known + 1:
                return False
            versions[s] = lv
        if self.first is None:
            self.first = p
        self.expected, self.prev, self.last_ra = c.last[0] + 1, c.last[1], c.last[2]
        self.count += c.count
        self.seen_head |= c.seen_head
        return True


def read_lines(path: str, start: int, end: int) -> bytes:
    """The whole lines of ``path`` that begin at an offset in [start, end)."""
    with open(path, "rb") as f:
        if start:
            f.seek(start - 1)
            f.readline()  # the rest of a line begun before start (or its newline)
        begin = f.tell()
        if begin >= end:
            return b""
        data = f.read(end - begin)
        if data and not data.endswith(b"\n"):
            data += f.readline()  # the line begun before end, completed
        return data


def check_range(
    path: str, start: int, end: int, expect_head: tuple[int, str] | None
) -> Chunk | None:
    """:func:`check_chunk` on the lines that begin in [start, end), read here:
    what travels between the processes is two offsets and a summary."""
    return check_chunk(read_lines(path, start, end), expect_head)


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def verify_path(
    path: str,
    *,
    anchor: str | None = None,
    expect_head: tuple[int, str] | None = None,
    jobs: int | None = None,
) -> Result:
    """What ``ledger verify FILE`` says: the same as :func:`verify_file` on it,
    parsed and hashed on ``jobs`` processes (default: every core)."""
    jobs = jobs or default_jobs()
    if jobs < 2 or os.path.getsize(path) < MIN_PARALLEL_BYTES:
        with open(path, "rb") as f:
            return verify_file(f, anchor=anchor, expect_head=expect_head)
    ok = _parallel(path, anchor, expect_head, jobs)
    if ok is not None:
        return ok
    with open(path, "rb") as f:  # a doubt: the sequential verifier says what and where
        return verify_file(f, anchor=anchor, expect_head=expect_head)


def _parallel(
    path: str, anchor: str | None, expect_head: tuple[int, str] | None, jobs: int
) -> Result | None:
    join = _Join(anchor)
    size = os.path.getsize(path)
    with multiprocessing.get_context().Pool(jobs) as pool:
        pending: deque[Any] = deque()
        for start in range(0, size, CHUNK_BYTES):
            end = min(size, start + CHUNK_BYTES)
            pending.append(pool.apply_async(check_range, (path, start, end, expect_head)))
            if len(pending) > 2 * jobs:  # bounded: the file is never all in memory
                c = pending.popleft().get()
                if c is None or not join.add(c):
                    return None
        while pending:
            c = pending.popleft().get()
            if c is None or not join.add(c):
                return None
    if not join.count or (expect_head and not join.seen_head):
        return None
    assert join.expected is not None
    return Result(True, join.first, join.expected - 1, join.prev, count=join.count)
