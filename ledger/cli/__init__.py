"""The ``ledger`` command line. Every command is listed in :data:`COMMANDS`
with the module of this package that configures and runs it (``serve`` has
``run`` and ``serve``; ``projections`` hands ``project`` and ``projections``
over to ``python -m projections``). Operator commands talk to PostgreSQL
directly (the same embedded server as ``make run`` when DATABASE_URL is
unset).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from ledger import logs
from ledger.cli import (
    bundle,
    export,
    keys,
    privacy,
    projections,
    retention,
    serve,
    signing,
    tree,
    verify,
    witness,
    worker,
)
from ledger.exits import guarded
from ledger.settings import Settings

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[Any], int]


class Command(NamedTuple):
    help: str  # one line for `ledger -h`
    configure: Configure
    run: Run  # args -> exit code


COMMANDS: dict[str, Command] = {
    "run": Command(serve.RUN_HELP, serve.configure, serve.run),
    "serve": Command(serve.SERVE_HELP, serve.configure, serve.serve),
    "tree": Command(tree.HELP, tree.configure, tree.run),
    "keys": Command(keys.HELP, keys.configure, keys.run),
    "verify": Command(verify.HELP, verify.configure, verify.run),
    "export": Command(export.HELP, export.configure, export.run),
    "audit-bundle": Command(bundle.HELP, bundle.configure, bundle.run),
    "signing-key": Command(signing.HELP, signing.configure, signing.run),
    "retention": Command(retention.HELP, retention.configure, retention.run),
    "privacy": Command(privacy.HELP, privacy.configure, privacy.run),
    "worker": Command(worker.HELP, worker.configure, worker.run),
    "witness": Command(witness.HELP, witness.configure, witness.run),
    "project": Command(projections.PROJECT_HELP, projections.configure, projections.run),
    "projections": Command(projections.PROJECTIONS_HELP, projections.configure, projections.run),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ledger", description="Hash-chained audit ledger")
    sub = p.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        # the projections' program answers -h itself
        add_help = command.run is not projections.run
        command.configure(sub.add_parser(name, help=command.help, add_help=add_help))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in projections.HANDED_OVER:
        args = argparse.Namespace(command=argv[0], rest=argv[1:])
        return guarded("ledger", lambda: projections.run(args))
    args = build_parser().parse_args(argv)
    return guarded("ledger", lambda: _run(args))


def _run(args: Any) -> int:
    # Logs go to stderr: stdout is the command's data (a key, an export, a
    # vkey), which is what `> FILE` and `$(...)` take.
    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    return COMMANDS[args.command].run(args)
