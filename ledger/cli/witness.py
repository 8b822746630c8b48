"""``ledger witness``: a C2SP tlog-witness of its own, with its own key and
state under ``--home``; cosigns the logs whose keys it is given."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "run a witness that cosigns checkpoints of the logs given (C2SP tlog-witness)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", required=True, type=Path, help="its key and state live here")
    p.add_argument("--name", default="witness.example/w1", help="its key's name (first start)")
    p.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="VKEY",
        help="a log's verifier key (GET /audit/public-key); its name is the log's origin; "
        "repeatable",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--print-key", action="store_true", help="print its verifier key and exit")


def run(args: Any) -> int:
    from ledger.witness.server import create_app, load_or_create_key

    if args.print_key:
        print(load_or_create_key(args.home, args.name).key.vkey)
        return 0
    if not args.log:
        print("ledger witness: give at least one --log VKEY")
        return 2
    import uvicorn

    from ledger import logs

    logs.configure("auto", "info")
    app = create_app(args.home, args.name, args.log)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
