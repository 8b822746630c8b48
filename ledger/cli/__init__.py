"""The ``ledger`` command line. Every command is listed in :data:`COMMANDS`
with the module that configures and runs it. Operator commands talk to
PostgreSQL directly (the same embedded server as ``make run`` when
DATABASE_URL is unset).

``ledger project`` and ``ledger projections ...`` are the projections' own
program (``python -m projections``), run in this Python: the ``projections``
package builds on ``ledger``, never the other way round.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from ledger import logs, worker
from ledger.cli import (
    bundle,
    export,
    keys,
    privacy,
    retention,
    serve,
    signing,
    verify,
    witness,
)
from ledger.exits import guarded
from ledger.settings import Settings

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[Any], int]


def _projections_program(args: Any) -> int:
    """Hand over to ``python -m projections`` with the same arguments
    (``ledger project ...`` is ``python -m projections run ...``)."""
    sub = ["run"] if args.command == "project" else []
    os.execv(sys.executable, [sys.executable, "-m", "projections", *sub, *args.rest])
    return 2  # pragma: no cover - execv does not return


# Handed over before ledger's parser sees them: argparse would take their own
# options (``--only NAME``, ``-h``) for ledger's and refuse them.
HANDED_OVER = ("project", "projections")


def _pass_through(p: argparse.ArgumentParser) -> None:
    p.add_argument("rest", nargs=argparse.REMAINDER, help="see 'python -m projections -h'")


class Command(NamedTuple):
    help: str  # one line for `ledger -h`
    configure: Configure
    run: Run  # args -> exit code


COMMANDS: dict[str, Command] = {
    "run": Command(serve.RUN_HELP, serve.configure, serve.run),
    "serve": Command(serve.SERVE_HELP, serve.configure, serve.serve),
    "keys": Command(keys.HELP, keys.configure, keys.run),
    "verify": Command(verify.HELP, verify.configure, verify.run),
    "export": Command(export.HELP, export.configure, export.run),
    "audit-bundle": Command(bundle.HELP, bundle.configure, bundle.run),
    "signing-key": Command(signing.HELP, signing.configure, signing.run),
    "retention": Command(retention.HELP, retention.configure, retention.run),
    "privacy": Command(privacy.HELP, privacy.configure, privacy.run),
    "worker": Command(worker.HELP, worker.configure, worker.run),
    "witness": Command(witness.HELP, witness.configure, witness.run),
    "project": Command(
        "run the projection runner (folds the ledger into the views)",
        _pass_through,
        _projections_program,
    ),
    "projections": Command("list, check or rebuild the views", _pass_through, _projections_program),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ledger", description="Hash-chained audit ledger")
    sub = p.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        # the projections' program answers -h itself
        add_help = command.run is not _projections_program
        command.configure(sub.add_parser(name, help=command.help, add_help=add_help))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in HANDED_OVER:
        args = argparse.Namespace(command=argv[0], rest=argv[1:])
        return guarded("ledger", lambda: _projections_program(args))
    args = build_parser().parse_args(argv)
    return guarded("ledger", lambda: _run(args))


def _run(args: Any) -> int:
    # Logs go to stderr: stdout is the command's data (a key, an export, a
    # vkey), which is what `> FILE` and `$(...)` take.
    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    return COMMANDS[args.command].run(args)
