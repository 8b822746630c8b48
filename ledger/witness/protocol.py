"""The witness's side of C2SP tlog-witness ``add-checkpoint``, pure but for
the state it is handed (``ledger.witness.state``).

Request body: ``old <size>``, up to 63 base64 consistency-proof lines, a blank
line, then the checkpoint as a signed note. The answers, in the order the text
checks them: 400 malformed or old size beyond the checkpoint's; 404 unknown
origin; 403 no valid signature by a trusted key (or a bad one by a trusted
key); 409 ``text/x.tlog.size`` with the size last cosigned when the old size
is another; 422 a size-0 checkpoint whose root is not the empty tree's, a
proof from size 0, a proof that does not verify, or the same size with
another root; else 200 with the cosignature line, after the new state is
persisted. A checkpoint that is validly signed but inconsistent with what the
witness cosigned is recorded as a fork: evidence the log misbehaved.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ledger.proofs import cosignature, merkle, note

SIZE_TYPE = "text/x.tlog.size"
TEXT = "text/plain; charset=utf-8"
MAX_PROOF = 63


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str
    content_type: str = TEXT


@dataclass(frozen=True, slots=True)
class Recorded:
    """The latest checkpoint cosigned for an origin."""

    size: int
    root: bytes
    note: str  # the checkpoint with the log's signatures and this witness's cosignature


class State(Protocol):
    """The witness's memory; ``update`` runs ``decide`` atomically against it."""

    def get(self, origin: str) -> Recorded | None: ...

    def update(
        self, origin: str, decide: Callable[[Recorded | None], tuple[Answer, Recorded | None]]
    ) -> Answer: ...

    def record_fork(self, origin: str, reason: str, body: str) -> None: ...


def parse_request(body: str) -> tuple[int, list[bytes], str] | None:
    head, sep, cp_note = body.partition("\n\n")
    if not sep:
        return None
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old "):
        return None
    size_s = first[4:]
    if not size_s.isascii() or not size_s.isdigit() or (size_s != "0" and size_s[0] == "0"):
        return None
    proof: list[bytes] = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line, validate=True)
        except (ValueError, binascii.Error):
            return None
        if len(h) != merkle.HASH_SIZE:
            return None
        proof.append(h)
    if len(proof) > MAX_PROOF:
        return None
    return int(size_s), proof, cp_note


class Witness:
    def __init__(
        self,
        cosigner: cosignature.Cosigner,
        logs: list[note.Verifier],
        state: State,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cosigner = cosigner
        self.logs: dict[str, list[note.Verifier]] = {}
        for v in logs:
            self.logs.setdefault(v.name, []).append(v)
        self.state = state
        self.clock = clock

    def add_checkpoint(self, body: str) -> Answer:
        parsed = parse_request(body)
        if parsed is None:
            return Answer(
                400, "the body is not old size, proof lines, a blank line, a checkpoint\n"
            )
        old, proof, cp_note = parsed
        origin = cp_note.split("\n", 1)[0]
        trusted = self.logs.get(origin)
        if trusted is None:
            return Answer(404, f"unknown log {origin!r}\n")
        try:
            text, _good = note.open_note(cp_note, trusted)
            cp = note.Checkpoint.parse_text(text)
        except note.NoteError as exc:
            return Answer(403, f"{exc.detail}\n")
        if old > cp.size:
            return Answer(400, f"old size {old} is beyond the checkpoint's size {cp.size}\n")

        def decide(known: Recorded | None) -> tuple[Answer, Recorded | None]:
            known_size = known.size if known else 0
            if old != known_size:
                return Answer(409, f"{known_size}\n", SIZE_TYPE), None
            if cp.size == 0 and cp.root != merkle.EMPTY_ROOT:
                return Answer(422, "a tree of size 0 has the empty tree's root\n"), None
            if old == 0 and proof:
                return Answer(422, "a proof from size 0 must be empty\n"), None
            if known is not None:
                try:
                    merkle.verify_consistency(old, cp.size, known.root, cp.root, proof)
                except merkle.ProofError as exc:
                    reason = f"not consistent with the cosigned size {old}: {exc}"
                    self.state.record_fork(origin, reason, body)
                    return Answer(422, f"{reason}\n"), None
            line = self.cosigner.cosign(text, int(self.clock()))
            return Answer(200, line), Recorded(cp.size, cp.root, cp_note + line)

        return self.state.update(origin, decide)
