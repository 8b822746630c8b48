"""Offline checks against signed checkpoints (SPEC §5), for ``ledger verify``.

No network and no database: files and verifier keys only (this module
imports nothing that reaches a database).

* an export bundle against a checkpoint: the chain verifies, and the root of
  the bundle's first ``size`` events equals the signed root;
* one event against a checkpoint with an inclusion proof;
* an old checkpoint against a newer one with a consistency proof;
* an audit bundle: a task's events, each with its inclusion proof, the
  checkpoint they are proven against and the verifier key, in one JSON file.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from ledger.audit.chain import Bad, check_shape, parse_lines, verify_events
from ledger.audit.witnessed import Policy, check_receipts
from ledger.canonical import CanonicalError, compute_event_hash, loads_ijson
from ledger.proofs import merkle, note, receipts

BUNDLE_FORMAT = "ledger-audit-bundle/1"


class Failed(Exception):
    """A check that did not pass; the message says why."""


# -- inputs ----------------------------------------------------------------------


def load_verifiers(specs: list[str]) -> list[note.Verifier]:
    """Each spec is a vkey, or a file holding vkeys one per line."""
    out: list[note.Verifier] = []
    for spec in specs:
        path = Path(spec)
        lines = path.read_text().split() if "+" not in spec or path.is_file() else [spec]
        try:
            out.extend(note.Verifier.parse(line) for line in lines if line.strip())
        except note.NoteError as exc:
            raise Failed(f"verifier key {spec!r}: {exc.detail}") from None
    return out


def open_checkpoint(text: str, verifiers: list[note.Verifier]) -> note.Checkpoint:
    try:
        cp, _good = note.open_checkpoint(text, verifiers)
    except note.NoteError as exc:
        raise Failed(f"checkpoint refused: {exc.detail}") from None
    return cp


def read_proof(path: str) -> tuple[dict[str, Any], list[bytes]]:
    try:
        obj = orjson.loads(Path(path).read_bytes())
        hashes = [bytes.fromhex(h) for h in obj["hashes"]]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise Failed(f"{path}: not a proof as the API answers it ({exc})") from None
    return obj, hashes


def event_hash(event: Any) -> bytes:
    """The event's hash after checking its shape and that it recomputes."""
    try:
        check_shape(event, 1)
    except Bad as bad:
        raise Failed(f"event: {bad.reason}") from None
    computed = compute_event_hash(event)
    if computed != event["hash"]:
        raise Failed(
            f"the event at position {event['position']} does not hash to its hash field "
            f"(computed {computed[:16]}…)"
        )
    return bytes.fromhex(event["hash"])


def _ijson(raw: bytes, what: str) -> Any:
    """:func:`ledger.canonical.loads_ijson`, its refusals as ``Failed``."""
    try:
        return loads_ijson(raw)
    except orjson.JSONDecodeError as exc:
        raise Failed(f"{what}: not JSON ({exc})") from None
    except CanonicalError as exc:
        raise Failed(f"{what}: {exc.message}") from None


# -- the checks --------------------------------------------------------------------


def check_bundle(
    bundle: bytes | IO[bytes],
    cp: note.Checkpoint,
    anchor: str | None,
    expect_head: tuple[int, str] | None,
) -> list[str]:
    """An export bundle's chain, and its first ``cp.size`` events against the
    checkpoint's root. Streamed: the lines are verified as they are read and
    only the tree's right edge is kept, so memory stays flat however long."""
    f = io.BytesIO(bundle) if isinstance(bundle, bytes) else bundle
    tree = merkle.RootBuilder()

    def leaves_on_the_way() -> Iterator[tuple[int, Any, bytes]]:
        # In file order, which the verifier holds to position order from 1
        # (checked below): the first cp.size events are the tree's leaves. A
        # malformed hash stops the tree; the verifier refuses that event.
        growing = True
        for item in parse_lines(f):
            if growing and tree.size < cp.size:
                try:
                    tree.add(merkle.leaf_hash(bytes.fromhex(item[1]["hash"])))
                except (KeyError, TypeError, ValueError):
                    growing = False
            yield item

    try:
        result = verify_events(leaves_on_the_way(), anchor=anchor, expect_head=expect_head)
    except Bad as bad:  # a line that is not JSON
        raise Failed(bad.reason) from None
    if not result.ok:
        where = result.first_bad_position
        raise Failed(
            f"FAILED at position {where}: {result.reason}" if where else f"FAILED: {result.reason}"
        )
    out = [
        f"OK: positions {result.verified_from}..{result.verified_to} verify "
        f"({result.count} events); head {result.verified_to}:{result.head_hash}"
    ]
    if result.verified_from != 1:
        raise Failed("a bundle checked against a checkpoint must start at position 1")
    if (result.verified_to or 0) < cp.size:
        raise Failed(
            f"the bundle ends at position {result.verified_to} but the checkpoint covers "
            f"{cp.size} events"
        )
    got = tree.root()
    if got != cp.root:
        raise Failed(
            f"FAILED: the root of events 1..{cp.size} is {got.hex()[:16]}…, but the signed "
            f"checkpoint says {cp.root.hex()[:16]}…: the history differs from what was signed"
        )
    out.append(f"OK: events 1..{cp.size} are the tree of the signed checkpoint ({cp.origin})")
    return out


def check_inclusion(
    event: Any, proof: dict[str, Any], hashes: list[bytes], cp: note.Checkpoint
) -> str:
    h = event_hash(event)
    index = event["position"] - 1
    if proof.get("leaf_index") != index:
        raise Failed(f"the proof is for leaf {proof.get('leaf_index')}, not position {index + 1}")
    if proof.get("tree_size") != cp.size:
        raise Failed(
            f"the proof is for tree size {proof.get('tree_size')}, the checkpoint's is {cp.size}"
        )
    try:
        merkle.verify_inclusion(index, cp.size, merkle.leaf_hash(h), hashes, cp.root)
    except merkle.ProofError as exc:
        raise Failed(f"position {index + 1}: {exc}") from None
    return f"OK: position {index + 1} ({h.hex()[:16]}…) is in the checkpoint of size {cp.size}"


def check_consistency(
    old: note.Checkpoint, new: note.Checkpoint, proof: dict[str, Any], hashes: list[bytes]
) -> str:
    if old.origin != new.origin:
        raise Failed(f"the checkpoints are of different logs ({old.origin!r}, {new.origin!r})")
    if (proof.get("from"), proof.get("to")) != (old.size, new.size):
        raise Failed(
            f"the proof is from {proof.get('from')} to {proof.get('to')}, "
            f"the checkpoints are of sizes {old.size} and {new.size}"
        )
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, hashes)
    except merkle.ProofError as exc:
        raise Failed(
            f"FAILED: the checkpoint of size {new.size} does not extend the one of size "
            f"{old.size}: {exc}; history was rewritten"
        ) from None
    return f"OK: the checkpoint of size {new.size} extends the one of size {old.size}"


def check_audit_bundle(
    obj: Any, verifiers: list[note.Verifier], policy: Policy | None = None
) -> list[str]:
    out: list[str] = []
    if not isinstance(obj, dict) or obj.get("format") != BUNDLE_FORMAT:
        raise Failed(f"not an audit bundle ({BUNDLE_FORMAT})")
    if not verifiers:
        verifiers = load_verifiers([obj["public_key"]])
        out.append(
            "NOTE: the verifier key was taken from the bundle itself; pin the key you "
            "trust with --key to make this check mean something"
        )
    cp = open_checkpoint(obj["checkpoint"], verifiers)
    out.append(f"OK: checkpoint {cp.origin} size {cp.size} signed by a trusted key")
    if policy and (line := policy.check(obj["checkpoint"])):
        out.append(line)
    events, proofs = obj["events"], obj["proofs"]
    if len(events) != len(proofs) or not events:
        raise Failed("the bundle needs one inclusion proof per event, and at least one event")
    stream = obj["stream"]
    for i, (event, proof) in enumerate(zip(events, proofs, strict=True), 1):
        if event.get("stream") != stream or event.get("version") != i:
            raise Failed(
                f"event {i} is {event.get('stream')} version {event.get('version')}, "
                f"expected {stream} version {i}: an event of the stream is missing or extra"
            )
        hashes = [bytes.fromhex(h) for h in proof["hashes"]]
        check_inclusion(event, proof, hashes, cp)
    out.append(
        f"OK: all {len(events)} events of {stream} (versions 1..{len(events)}) are in the "
        f"signed tree of size {cp.size}"
    )
    return out


def is_receipt(path: str) -> bool:
    if path == "-":
        return False
    try:
        with open(path, "rb") as f:
            return receipts.looks_like(f.read(64))
    except OSError:
        return False


def is_audit_bundle(path: str) -> bool:
    if path == "-":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    # an export's line is an event's canonical bytes, which open with its
    # "data" member: a task whose payload names the bundle format stays an export
    if head.lstrip().startswith(b'{"data":'):
        return False
    return b'"format"' in head and BUNDLE_FORMAT.encode() in head


def check_files(
    *,
    keys: list[str],
    file: str | None = None,
    checkpoint: str | None = None,
    old_checkpoint: str | None = None,
    event: str | None = None,
    proof: str | None = None,
    anchor: str | None = None,
    expect_head: tuple[int, str] | None = None,
    policy: Policy | None = None,
) -> list[str]:
    """``ledger verify`` against signed checkpoints: an audit bundle ``file``,
    or a checkpoint with what to check against it (an export bundle ``file``,
    an ``event`` or an ``old_checkpoint`` with its ``proof``). Returns the
    lines to print; raises Failed."""
    verifiers = load_verifiers(keys)
    if file and is_receipt(file):
        if not verifiers:
            raise Failed("give the verifier key you trust with --key (GET /audit/public-key)")
        return check_receipts(Path(file).read_text(), verifiers, policy or Policy(), event_hash)
    if file and is_audit_bundle(file):
        return check_audit_bundle(_ijson(Path(file).read_bytes(), file), verifiers, policy)
    if not checkpoint:
        raise Failed("--event and --old-checkpoint need --checkpoint")
    if not verifiers:
        raise Failed("give the verifier key you trust with --key (GET /audit/public-key)")
    cp_text = Path(checkpoint).read_text()
    cp = open_checkpoint(cp_text, verifiers)
    out = [f"OK: checkpoint {cp.origin} size {cp.size} signed by a trusted key"]
    if policy and (line := policy.check(cp_text)):
        out.append(line)
    if old_checkpoint:
        if not proof:
            raise Failed("--old-checkpoint needs --proof (GET /audit/proof/consistency)")
        old = open_checkpoint(Path(old_checkpoint).read_text(), verifiers)
        out.append(check_consistency(old, cp, *read_proof(proof)))
    if event:
        if not proof:
            raise Failed("--event needs --proof (GET /audit/proof/inclusion)")
        parsed = _ijson(Path(event).read_bytes(), event)
        out.append(check_inclusion(parsed, *read_proof(proof), cp))
    if file == "-":
        out.extend(check_bundle(sys.stdin.buffer, cp, anchor, expect_head))
    elif file:
        with open(file, "rb") as f:
            out.extend(check_bundle(f, cp, anchor, expect_head))
    if not (old_checkpoint or event or file):
        raise Failed(
            "nothing to check against the checkpoint: give FILE, --event or --old-checkpoint"
        )
    return out
