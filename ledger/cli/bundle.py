"""``ledger audit-bundle``: one task's evidence in one file (``ledger.proofs.bundle``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
import psycopg

from ledger import db
from ledger.proofs import bundle
from ledger.settings import Settings

HELP = "write one task's events, inclusion proofs, checkpoint and key to one file"


def configure(p: argparse.ArgumentParser) -> None:
    p.description = HELP
    p.add_argument("--task", required=True, metavar="ID", help="the task id (stream task-<ID>)")
    p.add_argument("--out", "-o", metavar="FILE", help="default: stdout")
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to wait for a checkpoint covering the task's last event",
    )


def run(args: Any) -> int:
    settings = Settings()
    url = db.resolve_url(settings)
    db.apply_schema(url)
    made = asyncio.run(_build(db.service_conninfo(url, settings.db_role), args.task, args.wait))
    data = orjson.dumps(made, option=orjson.OPT_INDENT_2) + b"\n"
    if args.out:
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    print(
        f"audit bundle for {made['stream']}: {len(made['events'])} events proven against the "
        f"checkpoint of size {made['proofs'][0]['tree_size']}",
        file=sys.stderr,
    )
    return 0


async def _build(conninfo: str, task_id: str, wait: float) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        return await bundle.build(conn, task_id, wait=wait)
