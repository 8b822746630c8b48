"""``ledger project`` and ``ledger projections ...``: the projections' own
program (``python -m projections``), run in this Python. The ``projections``
package builds on ``ledger``, never the other way round, so this hands over
(exec) instead of importing it."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

PROJECT_HELP = "run the projection runner (folds the ledger into the views)"
PROJECTIONS_HELP = "list, check or rebuild the views"

# Handed over before ledger's parser sees them: argparse would take their own
# options (``--only NAME``, ``-h``) for ledger's and refuse them.
HANDED_OVER = ("project", "projections")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER, help="see 'python -m projections -h'")


def run(args: Any) -> int:
    """Hand over to ``python -m projections`` with the same arguments
    (``ledger project ...`` is ``python -m projections run ...``)."""
    sub = ["run"] if args.command == "project" else []
    os.execv(sys.executable, [sys.executable, "-m", "projections", *sub, *args.rest])
    return 2  # pragma: no cover - execv does not return
