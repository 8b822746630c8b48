"""Offline checks against signed checkpoints (SPEC §5), for ``ledger verify``,
and the self-contained audit bundle of one task (``ledger audit-bundle``).

No network and no database for the checks: files and verifier keys only.

* an export bundle against a checkpoint: the chain verifies, and the root of
  the bundle's first ``size`` events equals the signed root;
* one event against a checkpoint with an inclusion proof;
* an old checkpoint against a newer one with a consistency proof;
* an audit bundle: a task's events, each with its inclusion proof, the
  checkpoint they are proven against and the verifier key, in one JSON file.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ledger import db, errors, merkle, note, tree
from ledger.verify import Bad, _shape, verify_events

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
    from ledger.canonical import canonical_bytes

    try:
        _shape(event, 1)
    except Bad as bad:
        raise Failed(f"event: {bad.reason}") from None
    body = {k: v for k, v in event.items() if k != "hash"}
    computed = hashlib.sha256(canonical_bytes(body)).hexdigest()
    if computed != event["hash"]:
        raise Failed(
            f"the event at position {event['position']} does not hash to its hash field "
            f"(computed {computed[:16]}…)"
        )
    return bytes.fromhex(event["hash"])


# -- the checks --------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    lines: list[str]


def check_bundle(
    bundle: bytes, cp: note.Checkpoint, anchor: str | None, expect_head: tuple[int, str] | None
) -> list[str]:
    events: list[tuple[int, Any]] = []
    for lineno, line in enumerate(bundle.splitlines(), 1):
        if line.strip():
            try:
                events.append((lineno, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise Failed(f"line {lineno}: not valid JSON ({exc})") from None
    result = verify_events(events, anchor=anchor, expect_head=expect_head)
    if not result.ok:
        raise Failed(f"FAILED at position {result.first_bad_position}: {result.reason}")
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
    leaves = [bytes.fromhex(e["hash"]) for _, e in events[: cp.size]]
    got = merkle.root(leaves)
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


def check_audit_bundle(obj: Any, verifiers: list[note.Verifier]) -> list[str]:
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


# -- ledger verify --------------------------------------------------------------------


def add_verify_arguments(v: argparse.ArgumentParser) -> None:
    v.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="a signed checkpoint (GET /audit/checkpoint): check the bundle, --event or "
        "--old-checkpoint against it",
    )
    v.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="VKEY|FILE",
        help="verifier key (GET /audit/public-key), or a file of them; repeatable",
    )
    v.add_argument("--event", metavar="FILE", help="one event (JSON) to prove with --proof")
    v.add_argument(
        "--old-checkpoint", metavar="FILE", help="a checkpoint saved earlier, to prove with --proof"
    )
    v.add_argument(
        "--proof",
        metavar="FILE",
        help="inclusion or consistency proof (JSON as GET /audit/proof/... answers)",
    )


def is_audit_bundle(path: str) -> bool:
    if path == "-":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return b'"format"' in head and BUNDLE_FORMAT.encode() in head


def wants(args: Any) -> bool:
    """Whether ``ledger verify`` was asked for a checkpoint check."""
    return bool(
        getattr(args, "checkpoint", None)
        or getattr(args, "event", None)
        or getattr(args, "old_checkpoint", None)
        or (args.file and is_audit_bundle(args.file))
    )


def cmd_verify(args: Any) -> int:
    try:
        lines = _run_verify(args)
    except Failed as exc:
        print(str(exc) if str(exc).startswith("FAILED") else f"FAILED: {exc}")
        return 1
    except OSError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


def _run_verify(args: Any) -> list[str]:
    verifiers = load_verifiers(args.key)
    if args.file and is_audit_bundle(args.file):
        return check_audit_bundle(orjson.loads(Path(args.file).read_bytes()), verifiers)
    if not args.checkpoint:
        raise Failed("--event and --old-checkpoint need --checkpoint")
    if not verifiers:
        raise Failed("give the verifier key you trust with --key (GET /audit/public-key)")
    cp = open_checkpoint(Path(args.checkpoint).read_text(), verifiers)
    out = [f"OK: checkpoint {cp.origin} size {cp.size} signed by a trusted key"]
    if args.old_checkpoint:
        if not args.proof:
            raise Failed("--old-checkpoint needs --proof (GET /audit/proof/consistency)")
        old = open_checkpoint(Path(args.old_checkpoint).read_text(), verifiers)
        out.append(check_consistency(old, cp, *read_proof(args.proof)))
    if args.event:
        if not args.proof:
            raise Failed("--event needs --proof (GET /audit/proof/inclusion)")
        try:
            event = orjson.loads(Path(args.event).read_bytes())
        except orjson.JSONDecodeError as exc:
            raise Failed(f"{args.event}: not JSON ({exc})") from None
        out.append(check_inclusion(event, *read_proof(args.proof), cp))
    if args.file:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        out.extend(check_bundle(data, cp, args.anchor, args.expect_head))
    if not (args.old_checkpoint or args.event or args.file):
        raise Failed(
            "nothing to check against the checkpoint: give FILE, --event or --old-checkpoint"
        )
    return out


# -- ledger audit-bundle ------------------------------------------------------------


def configure_audit_bundle(p: argparse.ArgumentParser) -> None:
    p.description = "write one task's events, inclusion proofs, checkpoint and key to one file"
    p.add_argument("--task", required=True, metavar="ID", help="the task id (stream task-<ID>)")
    p.add_argument("--out", "-o", metavar="FILE", help="default: stdout")
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to wait for a checkpoint covering the task's last event",
    )


def cmd_audit_bundle(args: Any) -> int:
    from ledger.cli import connect
    from ledger.settings import Settings
    from ledger.store import event_from_row

    settings = Settings()
    stream = f"task-{args.task}"
    with connect(settings) as conn:
        rows = conn.execute(db.q("events", "stream_events"), {"stream": stream}).fetchall()
        if not rows:
            raise errors.NotFound(f"no events on stream {stream}")
        events = [event_from_row(c, h) for c, h in rows]
        last = max(e["position"] for e in events)
        deadline = time.monotonic() + args.wait
        while True:
            row = conn.execute(db.q("proofs", "latest_checkpoint")).fetchone()
            if row is not None and row[0] >= last:
                break
            if time.monotonic() >= deadline:
                raise errors.Unavailable(
                    f"no signed checkpoint covers position {last} yet; is the service running?"
                )
            conn.execute(db.q("proofs", "want_checkpoint"))
            time.sleep(0.1)
        size, note_text = int(row[0]), str(row[3])
        cache = tree.TileCache()
        proofs = [
            {
                "leaf_index": e["position"] - 1,
                "tree_size": size,
                "hashes": [h.hex() for h in tree.inclusion(conn, e["position"], size, cache)],
            }
            for e in events
        ]
    vkeys = list(row[5])
    bundle = {
        "format": BUNDLE_FORMAT,
        "task_id": args.task,
        "stream": stream,
        "checkpoint": note_text,
        "public_key": vkeys[0] if vkeys else "",
        "events": events,
        "proofs": proofs,
    }
    data = orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n"
    if args.out:
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    print(
        f"audit bundle for {stream}: {len(events)} events proven against the checkpoint "
        f"of size {size}",
        file=sys.stderr,
    )
    return 0


COMMANDS: dict[str, tuple[Any, Any]] = {
    "audit-bundle": (configure_audit_bundle, cmd_audit_bundle),
}
