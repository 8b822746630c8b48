"""``ledger tree``: the tree builder and checkpoint signer, and the witness
submitter that follows the checkpoints, as a process of their own, off the
API's request path (``ledger run`` starts and supervises it).

Each is one leader across every process (an advisory lock, see
``ledger.proofs.checkpointer`` and ``ledger.witness.submitter``): start two
and the second stands by. The API reads everything it tells about the tree
from the database.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import dataclass, field
from typing import Any

from ledger import db, logs
from ledger.settings import Settings

HELP = "build the Merkle tree, sign checkpoints, send them to witnesses (ledger run starts it)"


@dataclass(slots=True)
class TreeContext:
    """What the tree's services take from the API's context: no pool, no appender."""

    settings: Settings
    url: str
    extras: dict[str, Any] = field(default_factory=dict)


def configure(p: argparse.ArgumentParser) -> None:
    del p  # no options: everything comes from the LEDGER_ settings


async def _serve(ctx: TreeContext) -> None:
    from ledger.api.app import TREE_SERVICES  # the one list, shared with `ledger serve --tree`

    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    stops = []
    try:
        for start in TREE_SERVICES:
            stops.append(await start(ctx))
        await done.wait()
    finally:
        for stop in reversed(stops):
            await stop()


def run(args: Any) -> int:
    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    url = db.resolve_url(settings)
    db.apply_schema(url)
    asyncio.run(_serve(TreeContext(settings, url)))
    return 0
