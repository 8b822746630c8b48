"""``ledger retention plan|apply``: what the retention rules would let expire
at a moment, and expiring it (docs/privacy.md §7). ``apply`` records who ran
it (``LEDGER_OPERATOR``, default ``operator``) in the RetentionExpired events."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from ledger import clock, db
from ledger.cli.keys import operator_meta
from ledger.privacy import retention

HELP = "show what the retention rules let expire (plan), or expire it (apply)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("plan", "apply"))
    p.add_argument(
        "--as-of",
        default=None,
        help="the moment to judge at (RFC 3339; default now; apply: not later than now)",
    )
    p.add_argument("--json", action="store_true", help="print the plan or result as JSON")


def _moment(text: str | None) -> datetime:
    if text is None:
        return clock.now()
    at = clock.parse_time(text)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def run(args: Any) -> int:
    try:
        as_of = _moment(args.as_of)
    except ValueError:
        print(f"--as-of: not an RFC 3339 time: {args.as_of}", file=sys.stderr)
        return 2
    if args.action == "apply" and as_of > clock.now():
        print("--as-of is later than now: only 'plan' looks ahead", file=sys.stderr)
        return 2
    with db.connect() as conn:
        if args.action == "plan":
            planned = [e.as_dict() for e in retention.plan(conn, as_of)]
            if args.json:
                sys.stdout.write(orjson.dumps(planned).decode() + "\n")
                return 0
            if not planned:
                print(f"nothing expires at {clock.format_time(as_of)}")
            for e in planned:
                print(
                    f"{e['task_type']} (rule {e['rule']}, {e['retention_days']} days, "
                    f"finished before {e['cutoff']}): {len(e['tasks'])} task(s) expire, "
                    f"{len(e['held'])} held"
                )
                for t in e["tasks"]:
                    print(f"  expire {t['task_id']} (last event {t['last_event_at']})")
                for t in e["held"]:
                    print(f"  held   {t['task_id']} by {', '.join(t['holds'])}")
            return 0
        done = retention.apply(conn, as_of, operator_meta())
    if args.json:
        sys.stdout.write(orjson.dumps(done).decode() + "\n")
        return 0
    if not done:
        print(f"nothing expired at {clock.format_time(as_of)}")
    for d in done:
        print(
            f"expired {len(d['tasks'])} {d['task_type']} task(s) under {d['rule']}: "
            f"{len(d['keys'])} key(s) destroyed at position {d['position']}"
        )
    return 0
