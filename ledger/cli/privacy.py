"""``ledger privacy rotate-kek``: wrap every live data key under a new KEK
and replace the KEK file (docs/privacy.md §3). Running services pick the new
KEK up from the file the first time they meet a key wrapped under it."""

from __future__ import annotations

import argparse
from typing import Any

from ledger import db
from ledger.privacy import rotation
from ledger.privacy.service import kek_path
from ledger.settings import Settings

HELP = "rotate the key-encryption key of protected fields (rotate-kek)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("rotate-kek",))


def run(args: Any) -> int:
    settings = Settings()
    path = kek_path(settings)
    if not path.exists():
        print(f"no KEK at {path}: nothing has been sealed with one yet")
        return 1
    with db.connect(settings) as conn:
        out = rotation.rotate(conn, path)
    print(
        f"KEK {out['previous']} -> {out['kek_id']}: {out['rewrapped']} data key(s) wrapped again"
        + (
            f"; {out['unreadable']} key(s) under another KEK left as they were"
            if out["unreadable"]
            else ""
        )
    )
    return 0
