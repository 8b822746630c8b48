"""``ledger export``: the SPEC §2 export bundle, straight from the database."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from psycopg_pool import AsyncConnectionPool

from ledger import db, store
from ledger.settings import Settings

HELP = "write an NDJSON export bundle to stdout"


def configure(e: argparse.ArgumentParser) -> None:
    e.add_argument("--from", dest="from_", type=int, default=1)
    e.add_argument("--to", type=int, default=None)


def run(args: Any) -> int:
    settings = Settings()
    url = db.resolve_url(settings)
    db.apply_schema(url)
    return asyncio.run(_export(db.service_conninfo(url, settings.db_role), args.from_, args.to))


async def _export(conninfo: str, first: int, to: int | None) -> int:
    out = sys.stdout.buffer
    async with AsyncConnectionPool(
        conninfo, min_size=1, max_size=1, kwargs={"autocommit": True}
    ) as pool:
        async with pool.connection() as conn:
            head_pos, _ = await store.head_async(conn)
        last = min(to, head_pos) if to else head_pos
        async for page in store.export_pages(pool, first, last):
            out.write(page)
    out.flush()
    print(f"exported positions {first}..{last}", file=sys.stderr)
    return 0
