"""``python -m projections``: the projections' own program.

* ``python -m projections [run] [--only NAME]`` – run the projection runner
  (``ledger project``; ``ledger run`` starts it beside the API);
* ``python -m projections list | rebuild NAME | check NAME`` – operate on the
  views (``ledger projections ...``).
"""

from __future__ import annotations

import argparse
import signal
from typing import Any

from ledger import db, logs, views
from ledger.exits import guarded
from ledger.settings import Settings
from projections import registry
from projections.rebuild import check, rebuild
from projections.runner import Runner, connect


def build_parser() -> argparse.ArgumentParser:
    names = sorted(registry())
    p = argparse.ArgumentParser(
        prog="python -m projections",
        description="fold the ledger into the views, or operate on them",
    )
    sub = p.add_subparsers(dest="cmd")
    r = sub.add_parser(
        "run",
        help="fold the ledger into the views, continuously; a second runner stands by and "
        "takes over when the first dies (the default)",
    )
    r.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        choices=names,
        help="run only this projection (repeatable; default: all)",
    )
    sub.add_parser("list", help="each projection's position, hash, lag and leader")
    rb = sub.add_parser(
        "rebuild",
        help="replay the ledger from 0 into fresh tables and swap them in; the service "
        "keeps answering meanwhile",
    )
    rb.add_argument("name", choices=names)
    c = sub.add_parser(
        "check", help="compare the live view with a fold from scratch; exit 1 on any difference"
    )
    c.add_argument("name", choices=names)
    return p


def run(settings: Settings, only: list[str] | None) -> int:
    logs.configure(settings.log_format, settings.log_level)
    url = db.resolve_url(settings)
    db.apply_schema(url)
    runner = Runner(url, settings, only)

    def stop(*_: Any) -> None:
        runner.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.start()
    runner.wait()
    return 0


def list_views(url: str, settings: Settings) -> int:
    with connect(url, settings.db_role, "ledger-projections-list") as conn:
        rows, held = views.checkpoints(conn)
    listed = {r.name for r in rows}
    print("name\tposition\tlag_events\tlag_seconds\tleading\tholder\thash")
    for row in rows:
        s = row.status(held)
        print(
            f"{s['name']}\t{s['position']}\t{s['lag_events']}\t{s['lag_seconds']}\t"
            f"{'yes' if s['leading'] else 'no'}\t{s['holder'] or '-'}\t{s['hash']}"
        )
    for name in sorted(set(registry()) - listed):
        leading = "yes" if views.lock_key(name) in held else "no"
        print(f"{name}\t0\t-\t-\t{leading}\t-\t(never run)")
    return 0


def check_view(url: str, settings: Settings, name: str) -> int:
    result = check(url, settings.db_role, name)
    if result.broken is not None:
        print(
            f"BROKEN: the ledger under {result.name} is not intact at position "
            f"{result.broken.position}: {result.broken.reason}; the view (at position "
            f"{result.position}) cannot be held to it. GET /audit/verify or 'ledger verify' "
            "on an export names every break"
        )
        return 1
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


def operate(settings: Settings, args: Any) -> int:
    logs.configure(settings.log_format, "warning")
    url = db.resolve_url(settings)
    db.apply_schema(url)
    if args.cmd == "list":
        return list_views(url, settings)
    if args.cmd == "rebuild":
        out = rebuild(url, args.name)
        print(
            f"rebuilt {out.name}: {out.applied} events applied up to position {out.position} "
            f"(hash {out.hash}) in {out.seconds:.2f} s; the swap held the view for "
            f"{out.swap_seconds * 1000:.0f} ms"
        )
        return 0
    return check_view(url, settings, args.name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    if args.cmd in (None, "run"):
        return guarded("projections", lambda: run(settings, getattr(args, "only", None)))
    return guarded("projections", lambda: operate(settings, args))
