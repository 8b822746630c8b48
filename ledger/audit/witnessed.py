"""What an auditor demands of a checkpoint beyond the log's own signature:
cosignatures from witnesses it trusts (``--witness KEY --quorum N``), and
the receipts (C2SP tlog-proof) checked offline. No network, no database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.proofs import cosignature, merkle, note, receipts


class PolicyFailed(Exception):
    """The checkpoint lacks the cosignatures demanded, or a receipt fails."""


@dataclass(frozen=True, slots=True)
class Policy:
    witnesses: list[cosignature.CosignerKey] = field(default_factory=list)
    quorum: int = 0

    @classmethod
    def from_args(cls, specs: list[str], quorum: int | None) -> Policy:
        keys: list[cosignature.CosignerKey] = []
        for spec in specs:
            path = Path(spec)
            lines = path.read_text().split() if "+" not in spec or path.is_file() else [spec]
            try:
                keys.extend(cosignature.CosignerKey.parse(line) for line in lines)
            except note.NoteError as exc:
                raise PolicyFailed(f"witness key {spec!r}: {exc.detail}") from None
        q = len(keys) if quorum is None else quorum
        if q > len(keys):
            raise PolicyFailed(f"a quorum of {q} needs at least {q} --witness keys")
        return cls(keys, q)

    def check(self, checkpoint_note: str) -> str | None:
        """A line to print when the note has its quorum; raises PolicyFailed."""
        if not self.quorum:
            return None
        good, bad = cosignature.count_valid(checkpoint_note, self.witnesses)
        if len(good) < self.quorum:
            why = "; ".join(bad) or "none given"
            raise PolicyFailed(
                f"FAILED: the checkpoint has {len(good)} valid cosignatures of the {self.quorum} "
                f"demanded ({why}): it may be a view shown to you alone"
            )
        names = ", ".join(k.name for k in good)
        return f"OK: cosigned by {len(good)} of {len(self.witnesses)} witnesses ({names})"


def check_receipts(
    text: str,
    verifiers: list[note.Verifier],
    policy: Policy,
    event_hash: Callable[[Any], bytes],
) -> list[str]:
    """Every receipt in ``text``; a task's must hold its stream's versions 1..n.
    ``event_hash(event) -> bytes`` checks an event and gives its hash."""
    try:
        found = receipts.parse_many(text)
    except note.NoteError as exc:
        raise PolicyFailed(f"not a receipt: {exc.detail}") from None
    out: list[str] = []
    seen_checkpoints: set[str] = set()
    stream = None
    for n, r in enumerate(found, 1):
        try:
            event = r.event()
            cp, _good = note.open_checkpoint(r.checkpoint, verifiers)
        except note.NoteError as exc:
            raise PolicyFailed(f"receipt {n}: {exc.detail}") from None
        if r.checkpoint not in seen_checkpoints:
            seen_checkpoints.add(r.checkpoint)
            out.append(f"OK: checkpoint {cp.origin} size {cp.size} signed by a trusted key")
            line = policy.check(r.checkpoint)
            if line:
                out.append(line)
        h = event_hash(event)
        if r.index != event["position"] - 1:
            raise PolicyFailed(f"receipt {n}: index {r.index} is not position {event['position']}")
        try:
            merkle.verify_inclusion(r.index, cp.size, merkle.leaf_hash(h), r.proof, cp.root)
        except merkle.ProofError as exc:
            raise PolicyFailed(f"FAILED: receipt {n}, position {r.index + 1}: {exc}") from None
        if len(found) > 1:
            stream = stream or event.get("stream")
            if event.get("stream") != stream or event.get("version") != n:
                raise PolicyFailed(
                    f"receipt {n} is {event.get('stream')} version {event.get('version')}, "
                    f"expected {stream} version {n}: an event of the task is missing or extra"
                )
        out.append(
            f"OK: position {r.index + 1} ({event.get('type')}, {event.get('stream')} version "
            f"{event.get('version')}) is in the checkpoint of size {cp.size}"
        )
    return out
