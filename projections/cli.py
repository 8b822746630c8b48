"""``ledger project`` (and ``python -m projections``): run the projection runner.
``ledger projections list | rebuild NAME | check NAME``: operate on the views."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import psycopg

from ledger import db, logs
from ledger.db import q
from ledger.settings import Settings
from projections import registry
from projections.rebuild import check, rebuild
from projections.runner import LOCK_CLASS, Runner, connect, lock_key, status_item


def configure_project(p: argparse.ArgumentParser) -> None:
    p.description = (
        "fold the ledger into the views, continuously; a second runner stands by and takes "
        "over when the first dies"
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        choices=sorted(registry()),
        help="run only this projection (repeatable; default: all)",
    )


def cmd_project(args: Any) -> int:
    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    url = db.resolve_url(settings)
    db.apply_schema(url)
    runner = Runner(url, settings, args.only)

    def stop(*_: Any) -> None:
        runner.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.start()
    runner.wait()
    return 0


def configure_projections(p: argparse.ArgumentParser) -> None:
    p.description = "list the projections, rebuild one from position 0, or check one"
    sub = p.add_subparsers(dest="projections_cmd", required=True)
    sub.add_parser("list", help="each projection's position, hash, lag and leader")
    names = sorted(registry())
    r = sub.add_parser(
        "rebuild",
        help="replay the ledger from 0 into fresh tables and swap them in; the service "
        "keeps answering meanwhile",
    )
    r.add_argument("name", choices=names)
    c = sub.add_parser(
        "check",
        help="compare the live view with a fold from scratch; exit 1 on any difference",
    )
    c.add_argument("name", choices=names)


def _list(url: str, settings: Settings) -> int:
    with connect(url, settings.db_role, "ledger-projections-list") as conn:
        rows = conn.execute(q("projections", "status")).fetchall()
        held = {
            int(r[0]) for r in conn.execute(q("projections", "held_locks"), {"class": LOCK_CLASS})
        }
    known = registry()
    listed = {r[0] for r in rows}
    print("name\tposition\tlag_events\tlag_seconds\tleading\tholder\thash")
    for row in rows:
        s = status_item(row, held)
        print(
            f"{s['name']}\t{s['position']}\t{s['lag_events']}\t{s['lag_seconds']}\t"
            f"{'yes' if s['leading'] else 'no'}\t{s['holder'] or '-'}\t{s['hash']}"
        )
    for name in sorted(set(known) - listed):
        print(f"{name}\t0\t-\t-\t{'yes' if lock_key(name) in held else 'no'}\t-\t(never run)")
    return 0


def cmd_projections(args: Any) -> int:
    settings = Settings()
    logs.configure(settings.log_format, "warning")
    url = db.resolve_url(settings)
    db.apply_schema(url)
    if args.projections_cmd == "list":
        return _list(url, settings)
    if args.projections_cmd == "rebuild":
        out = rebuild(url, args.name)
        print(
            f"rebuilt {out.name}: {out.applied} events applied up to position {out.position} "
            f"(hash {out.hash}) in {out.seconds:.2f} s; the swap held the view for "
            f"{out.swap_seconds * 1000:.0f} ms"
        )
        return 0
    result = check(url, settings.db_role, args.name)
    for line in result.differences:
        print(line)
    if not result.hash_ok:
        print(
            f"{result.name}: checkpoint hash {result.hash} is not the hash of the event at "
            f"position {result.position}"
        )
    verdict = "OK" if result.ok else "DIFFERENT"
    print(
        f"{verdict}: {result.name} at position {result.position} (hash {result.hash}), "
        f"{result.rows} rows, {len(result.differences)} differences from a fold from scratch"
    )
    return 0 if result.ok else 1


COMMANDS: dict[str, tuple[Any, Any]] = {
    "project": (configure_project, cmd_project),
    "projections": (configure_projections, cmd_projections),
}


def main(argv: list[str] | None = None) -> int:
    """``python -m projections [--only NAME]``"""
    p = argparse.ArgumentParser(prog="python -m projections")
    configure_project(p)
    args = p.parse_args(argv)
    try:
        return cmd_project(args)
    except psycopg.OperationalError as exc:
        print(f"projections: cannot reach the database: {exc}", file=sys.stderr)
        return 2
