"""``ledger`` command line: run | serve | keys | verify | export (and more as
modules register). Operator commands talk to PostgreSQL directly (the same
embedded server as ``make run`` when DATABASE_URL is unset)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from ledger import checkpoints, db, errors, keys, offline, store
from ledger.appender import append_sync
from ledger.settings import Settings
from ledger.verify import verify_file

# Sub-commands other modules add: name -> (configure(parser), run(args) -> exit code)
EXTRA_COMMANDS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[Any], int]]
] = {}
EXTRA_COMMANDS.update(offline.COMMANDS)  # proofs: audit-bundle
EXTRA_COMMANDS.update(checkpoints.COMMANDS)  # proofs: signing-key show | rotate

# -- tasks: the agents' worker --
from ledger import worker as _worker  # noqa: E402

EXTRA_COMMANDS["worker"] = (_worker.configure, _worker.run)

# -- projections: the runner (ledger project) and ledger projections list|rebuild|check --
from projections import cli as _projections_cli  # noqa: E402

EXTRA_COMMANDS.update(_projections_cli.COMMANDS)


def _err(msg: str) -> None:
    print(f"ledger: {msg}", file=sys.stderr)


@contextlib.contextmanager
def connect(settings: Settings | None = None) -> Iterator[psycopg.Connection[Any]]:
    """A service-role connection with the schema in place."""
    settings = settings or Settings()
    url = db.resolve_url(settings)
    db.apply_schema(url)
    with psycopg.connect(url, autocommit=True) as conn:
        db.session_setup(settings.db_role)(conn)
        conn.autocommit = True
        yield conn


def operator_meta() -> dict[str, Any]:
    return {
        "actor": os.environ.get("LEDGER_OPERATOR", "operator"),
        "role": "admin",
        "request_id": f"cli-{uuid.uuid4().hex[:12]}",
    }


def _one(conn: psycopg.Connection[Any], cmd: Any) -> Any:
    (res,) = append_sync(conn, [cmd])
    if isinstance(res, errors.LedgerError):
        raise res
    return res


def cmd_keys(args: Any) -> int:
    with connect() as conn:
        if args.keys_cmd == "create":
            keys.check_name(args.name)
            current = conn.execute(
                db.q("events", "principal_state"), {"name": args.name}
            ).fetchone()
            try:
                key, cmd = keys.plan_create(
                    args.name,
                    args.role,
                    operator_meta(),
                    current,
                    replace=args.replace,
                    how_to_replace="add --replace",
                )
                _one(conn, cmd)
            except errors.Conflict as exc:
                _err(exc.detail)
                return 1
            print(key)
            print(
                f"created {args.role} key for {args.name!r}; it is shown only once", file=sys.stderr
            )
        elif args.keys_cmd == "revoke":
            keys.check_name(args.name)
            row = conn.execute(db.q("events", "principal_by_name"), {"name": args.name}).fetchone()
            if row is None:
                _err(f"no principal named {args.name!r}")
                return 1
            if row[2] is not None:
                _err(f"the key of {args.name!r} was already revoked at position {row[2]}")
                return 1
            recorded = _one(conn, keys.revoke_command(args.name, operator_meta(), args.reason))
            print(f"revoked {args.name!r} at position {recorded[0].position}", file=sys.stderr)
        else:
            for name, role, created, revoked in conn.execute(db.q("events", "principals_list")):
                state = f"revoked at {revoked}" if revoked else "active"
                print(f"{name}\t{role}\tcreated at {created}\t{state}")
    return 0


def _parse_head(text: str) -> tuple[int, str]:
    pos, _, h = text.partition(":")
    if not pos.isdigit() or len(h) != 64:
        raise argparse.ArgumentTypeError("expected POSITION:HASH (64 hex digits)")
    return int(pos), h.lower()


def _parse_hash(text: str) -> str:
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError("expected 64 hex digits")
    return text.lower()


def cmd_verify(args: Any) -> int:
    if offline.wants(args):  # against a signed checkpoint, or an audit bundle (SPEC §5)
        return offline.cmd_verify(args)
    if args.file is None:
        _err("give an export bundle FILE (or - for stdin)")
        return 2
    opened = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    with opened as f:
        result = verify_file(f, anchor=args.anchor, expect_head=args.expect_head)
    if result.ok:
        print(
            f"OK: positions {result.verified_from}..{result.verified_to} verify "
            f"({result.count} events); head {result.verified_to}:{result.head_hash}"
        )
        return 0
    bad = result.first_bad_position
    if bad is None:
        print(f"FAILED: {result.reason}")
        return 1
    print(f"FAILED at position {bad}: {result.reason}")
    good_to = min(result.verified_to or 0, bad - 1)
    if result.verified_from is not None and good_to >= result.verified_from:
        print(f"(positions {result.verified_from}..{good_to} verified before it)")
    return 1


def cmd_export(args: Any) -> int:
    with connect() as conn:
        head_pos, _ = store.head(conn)
        last = min(args.to, head_pos) if args.to else head_pos
        out = sys.stdout.buffer
        for page in store.export_pages(conn, args.from_, last):
            out.write(page)
        out.flush()
        print(f"exported positions {args.from_}..{last}", file=sys.stderr)
    return 0


def cmd_serve(args: Any) -> int:
    import uvicorn

    settings = Settings()
    url = db.resolve_url(settings)
    if args.workers > 1 and not settings.database_url:
        # one embedded server for every worker: resolve it here and hand it down
        os.environ["LEDGER_DATABASE_URL"] = url
    _refuse_another_origin(settings, url)
    uvicorn.run(
        "ledger.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    return 0


# Background processes `ledger run` starts beside the API: argv lists.
RUN_COMPANIONS: list[list[str]] = [["projections"]]  # python -m projections: the runner


def _refuse_another_origin(settings: Settings, url: str) -> None:
    """Before anything starts: a LEDGER_ORIGIN other than the ledger's own is a
    one-line refusal (OriginMismatch), not a traceback out of a started server."""
    db.apply_schema(url)
    checkpoints.settings_with_stored_origin(settings, url)


def cmd_run(args: Any) -> int:
    """The API and its companion processes (projection runner), one database."""
    settings = Settings()
    url = db.resolve_url(settings)
    _refuse_another_origin(settings, url)
    env = {**os.environ, "LEDGER_DATABASE_URL": url}
    print(f"ledger: database {db.redact(url)}", file=sys.stderr)
    print(f"ledger: serving on http://{args.host}:{args.port}  (Ctrl-C stops)", file=sys.stderr)
    procs = [subprocess.Popen([sys.executable, "-m", *argv], env=env) for argv in RUN_COMPANIONS]
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger",
            "serve",
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--workers",
            str(args.workers),
        ],
        env=env,
    )
    procs.append(api)

    stopping: list[bool] = []

    def stop(*_: Any) -> None:
        stopping.append(True)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    companions = dict(zip(range(len(RUN_COMPANIONS)), procs[:-1], strict=True))
    restarts = [0.0] * len(RUN_COMPANIONS)
    try:
        while (code := api.poll()) is None:
            time.sleep(0.5)
            for i, p in companions.items():
                if stopping or p.poll() in (None, 0) or time.monotonic() < restarts[i]:
                    continue  # running, or it stopped cleanly: asked to (a signal), not a crash
                # a companion died (a runner killed, a crash): start it again,
                # at most every 5 s, so the views never quietly stop moving
                _err(f"{' '.join(RUN_COMPANIONS[i])} exited with {p.returncode}; restarting it")
                restarts[i] = time.monotonic() + 5.0
                fresh = subprocess.Popen([sys.executable, "-m", *RUN_COMPANIONS[i]], env=env)
                companions[i] = fresh
                procs[i] = fresh
    except KeyboardInterrupt:
        code = 0
    stop()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    if stopping and code in (-signal.SIGTERM, -signal.SIGINT):
        code = 0  # asked to stop, and stopped (uvicorn re-raises the signal it handled)
    return code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ledger", description="Hash-chained audit ledger")
    sub = p.add_subparsers(dest="command", required=True)

    for name, help_ in (
        ("run", "serve the API and its projection runner"),
        ("serve", "serve the API only"),
    ):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, default=8000)
        s.add_argument("--workers", type=int, default=1)

    k = sub.add_parser("keys", help="create, revoke and list API keys")
    ks = k.add_subparsers(dest="keys_cmd", required=True)
    kc = ks.add_parser("create", help="create a key; prints it alone on stdout")
    kc.add_argument("--name", required=True)
    kc.add_argument("--role", required=True, choices=keys.ROLES)
    kc.add_argument(
        "--replace",
        action="store_true",
        help="the principal exists: issue a new key (its old key stops working)",
    )
    kr = ks.add_parser("revoke", help="revoke a principal's key")
    kr.add_argument("name")
    kr.add_argument("--reason")
    ks.add_parser("list", help="list principals")

    v = sub.add_parser("verify", help="verify an export bundle offline (no database, no network)")
    v.add_argument("file", nargs="?", help="NDJSON export bundle or audit bundle, or - for stdin")
    v.add_argument("--anchor", type=_parse_hash, help="hash of the event before the bundle's first")
    v.add_argument(
        "--expect-head",
        type=_parse_head,
        metavar="POS:HASH",
        help="a head saved earlier: fail unless that event is in the bundle unchanged",
    )
    offline.add_verify_arguments(v)

    e = sub.add_parser("export", help="write an NDJSON export bundle to stdout")
    e.add_argument("--from", dest="from_", type=int, default=1)
    e.add_argument("--to", type=int, default=None)

    for name, (configure, _run) in EXTRA_COMMANDS.items():
        configure(sub.add_parser(name, help=EXTRA_HELP.get(name)))
    return p


# One line each in `ledger -h` for the commands other modules contribute.
EXTRA_HELP = {
    "audit-bundle": "write one task's events, inclusion proofs, checkpoint and key to one file",
    "signing-key": "show or rotate the checkpoint signing key",
    "worker": "claim tasks of given types and work them (the demo handler by default)",
    "project": "run the projection runner (folds the ledger into the views)",
    "projections": "list, check or rebuild the views",
}


COMMANDS: dict[str, Callable[[Any], int]] = {
    "run": cmd_run,
    "serve": cmd_serve,
    "keys": cmd_keys,
    "verify": cmd_verify,
    "export": cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS.get(args.command) or EXTRA_COMMANDS[args.command][1]
    try:
        return handler(args)
    except errors.LedgerError as exc:
        _err(exc.detail)
        return 2
    except psycopg.OperationalError as exc:
        _err(f"cannot reach the database: {exc}")
        return 2
    except BrokenPipeError:
        return 1
    except FileNotFoundError as exc:
        _err(str(exc))
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
