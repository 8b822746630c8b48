"""The ``ledger`` command line. Every command is listed in :data:`COMMANDS`
with the module of this package that configures and runs it (``serve`` has
``run`` and ``serve``; ``projections`` hands ``project`` and ``projections``
over to ``python -m projections``). Operator commands talk to PostgreSQL
directly (the same embedded server as ``make run`` when DATABASE_URL is
unset).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

from ledger.cli.projections import HANDED_OVER
from ledger.exits import guarded

Configure = Callable[[argparse.ArgumentParser], None]
Run = Callable[[Any], int]


class Command(NamedTuple):
    module: str  # under ledger.cli, imported only when the command is run or listed
    help: str  # the name of the module's one line for `ledger -h`
    run: str  # the name of its function: args -> exit code


COMMANDS: dict[str, Command] = {
    "run": Command("serve", "RUN_HELP", "run"),
    "serve": Command("serve", "SERVE_HELP", "serve"),
    "tree": Command("tree", "HELP", "run"),
    "keys": Command("keys", "HELP", "run"),
    "verify": Command("verify", "HELP", "run"),
    "export": Command("export", "HELP", "run"),
    "audit-bundle": Command("bundle", "HELP", "run"),
    "signing-key": Command("signing", "HELP", "run"),
    "retention": Command("retention", "HELP", "run"),
    "privacy": Command("privacy", "HELP", "run"),
    "worker": Command("worker", "HELP", "run"),
    "witness": Command("witness", "HELP", "run"),
    "project": Command("projections", "PROJECT_HELP", "run"),
    "projections": Command("projections", "PROJECTIONS_HELP", "run"),
}
# Commands that need no database and no settings: they start without loading
# either (an auditor's `ledger verify` is up in a tenth of a second, not one).
OFFLINE = {"verify"}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"ledger.cli.{COMMANDS[name].module}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``only`` (what running it needs)."""
    p = argparse.ArgumentParser(prog="ledger", description="Hash-chained audit ledger")
    sub = p.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = _module(name)
        # the projections' program answers -h itself
        add_help = command.module != "projections"
        module.configure(
            sub.add_parser(name, help=getattr(module, command.help), add_help=add_help)
        )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in HANDED_OVER:  # to python -m projections, options and all
        args = argparse.Namespace(command=argv[0], rest=argv[1:])
        return guarded("ledger", lambda: _module(argv[0]).run(args))
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    return guarded("ledger", lambda: _run(args))


def _run(args: Any) -> int:
    run: Run = getattr(_module(args.command), COMMANDS[args.command].run)
    if args.command in OFFLINE:
        return run(args)
    from ledger import logs
    from ledger.settings import Settings

    # Logs go to stderr: stdout is the command's data (a key, an export, a
    # vkey), which is what `> FILE` and `$(...)` take.
    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    return run(args)
