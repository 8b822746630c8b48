"""``ledger verify``: an export bundle's chain, or (with a checkpoint, or an
audit bundle) the checks against signed checkpoints. No database, no network."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from ledger.audit.chain import verify_file
from ledger.audit.offline import Failed, check_files, is_audit_bundle, is_receipt
from ledger.audit.parallel import verify_path
from ledger.audit.witnessed import Policy, PolicyFailed

HELP = "verify an export bundle offline (no database, no network)"


def _parse_head(text: str) -> tuple[int, str]:
    m = re.fullmatch(r"([0-9]+):([0-9a-fA-F]{64})", text)
    if m is None or int(m[1]) < 1:
        raise argparse.ArgumentTypeError(
            "expected POSITION:HASH (position 1 or more, 64 hex digits)"
        )
    return int(m[1]), m[2].lower()


def _parse_hash(text: str) -> str:
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError("expected 64 hex digits")
    return text.lower()


def _parse_jobs(text: str) -> int:
    if re.fullmatch(r"[0-9]+", text) is None or int(text) < 1:
        raise argparse.ArgumentTypeError("expected a number of processes, 1 or more")
    return int(text)


def configure(v: argparse.ArgumentParser) -> None:
    v.add_argument("file", nargs="?", help="NDJSON export bundle or audit bundle, or - for stdin")
    v.add_argument(
        "--jobs",
        type=_parse_jobs,
        default=None,
        metavar="N",
        help="processes that parse and hash an export's lines (default: one per core; "
        "checks against a checkpoint, and stdin, use one)",
    )
    v.add_argument("--anchor", type=_parse_hash, help="hash of the event before the bundle's first")
    v.add_argument(
        "--expect-head",
        type=_parse_head,
        metavar="POS:HASH",
        help="a head saved earlier: fail unless that event is in the bundle unchanged",
    )
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
        "--witness",
        action="append",
        default=[],
        metavar="VKEY|FILE",
        help="a witness's cosignature/v1 key you trust, or a file of them; repeatable",
    )
    v.add_argument(
        "--quorum",
        type=int,
        metavar="N",
        help="refuse a checkpoint without N valid cosignatures by the --witness keys "
        "(default: all of them)",
    )
    v.add_argument(
        "--proof",
        metavar="FILE",
        help="inclusion or consistency proof (JSON as GET /audit/proof/... answers)",
    )


def run(args: Any) -> int:
    if (
        args.checkpoint
        or args.event
        or args.old_checkpoint
        or args.witness
        or (args.file and (is_audit_bundle(args.file) or is_receipt(args.file)))
    ):
        return _against_checkpoints(args)
    if args.file is None:
        print("ledger: give an export bundle FILE (or - for stdin)", file=sys.stderr)
        return 2
    try:
        if args.file == "-":
            result = verify_file(sys.stdin.buffer, anchor=args.anchor, expect_head=args.expect_head)
        else:
            result = verify_path(
                args.file, anchor=args.anchor, expect_head=args.expect_head, jobs=args.jobs
            )
    except OSError as exc:  # a directory, a file it may not read, a read error
        print(f"ledger: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if result.ok:
        print(
            f"OK: positions {result.verified_from}..{result.verified_to} verify "
            f"({result.count} events); head {result.verified_to}:{result.head_hash}"
        )
        return 0
    bad = result.first_bad_position
    if bad is None:
        print(f"FAILED: {result.reason}")
        return 1
    print(f"FAILED at position {bad}: {result.reason}")
    good_to = min(result.verified_to or 0, bad - 1)
    if result.verified_from is not None and good_to >= result.verified_from:
        print(f"(positions {result.verified_from}..{good_to} verified before it)")
    return 1


def _against_checkpoints(args: Any) -> int:
    try:
        policy = Policy.from_args(args.witness, args.quorum)
        lines = check_files(
            keys=args.key,
            file=args.file,
            checkpoint=args.checkpoint,
            old_checkpoint=args.old_checkpoint,
            event=args.event,
            proof=args.proof,
            anchor=args.anchor,
            expect_head=args.expect_head,
            policy=policy,
        )
    except (Failed, PolicyFailed) as exc:
        print(str(exc) if str(exc).startswith("FAILED") else f"FAILED: {exc}")
        return 1
    except OSError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0
