"""Receipts in the C2SP tlog-proof format: an event's inclusion proof and the
(cosigned) checkpoint it is proven against, in one text file that verifies
offline. Pure.

::

    c2sp.org/tlog-proof@v1
    extra <base64 of the event, as JSON>
    index <position - 1>
    <base64 proof hash>          (RFC 6962 §2.1.1 order, leaf's sibling first)
    ...
    <blank line>
    <the checkpoint note, with its cosignatures>

The ``extra`` line carries the event itself, so the receipt is whole: the
verifier recomputes the event's hash from its canonical bytes (SPEC §1) and
that hash is the logged entry; nothing in ``extra`` is trusted until it has
been bound to the signed root by the proof. A task's receipt is its events'
receipts one after another, each starting with the header line.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from ledger.canonical import CanonicalError, loads_ijson
from ledger.proofs.note import NoteError

HEADER = "c2sp.org/tlog-proof@v1"
MEDIA_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Receipt:
    extra: bytes | None
    index: int
    proof: list[bytes]
    checkpoint: str  # the note as given, signatures included

    def event(self) -> Any:
        if self.extra is None:
            raise NoteError("the receipt carries no event (no extra line)")
        try:
            return loads_ijson(self.extra)
        except orjson.JSONDecodeError:
            raise NoteError("the receipt's extra data is not an event") from None
        except CanonicalError as exc:
            raise NoteError(f"the receipt's event: {exc.message}") from None


def render(event: dict[str, Any], proof: list[bytes], checkpoint: str) -> str:
    lines = [
        HEADER,
        "extra " + base64.b64encode(orjson.dumps(event)).decode(),
        f"index {int(event['position']) - 1}",
        *(base64.b64encode(h).decode() for h in proof),
    ]
    return "\n".join(lines) + "\n\n" + checkpoint


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise NoteError(f"{what} is not base64") from None


def parse_one(text: str) -> Receipt:
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise NoteError("a tlog-proof has a blank line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise NoteError(f"a tlog-proof starts with {HEADER!r}")
    rest = lines[1:]
    extra = None
    if rest and rest[0].startswith("extra "):
        extra = _b64(rest[0][len("extra ") :], "the extra line")
        rest = rest[1:]
    if not rest or not rest[0].startswith("index "):
        raise NoteError("a tlog-proof names the entry's index")
    idx = rest[0][len("index ") :]
    if not idx.isascii() or not idx.isdigit() or (idx != "0" and idx[0] == "0"):
        raise NoteError("the index is not a decimal number")
    proof = [_b64(line, "a proof line") for line in rest[1:]]
    if any(len(h) != 32 for h in proof):
        raise NoteError("a proof hash is not 32 bytes")
    return Receipt(extra, int(idx), proof, checkpoint)


def parse_many(text: str) -> list[Receipt]:
    """One receipt, or a task's: several, each starting with the header line."""
    parts: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == HEADER:
            parts.append("")
        if not parts:
            raise NoteError(f"a tlog-proof starts with {HEADER!r}")
        parts[-1] += line
    if not parts:
        raise NoteError("no tlog-proof in the file")
    return [parse_one(p) for p in parts]


def looks_like(head: bytes) -> bool:
    return head.startswith(HEADER.encode())
