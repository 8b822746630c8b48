"""``ledger keys create | revoke | list``: API keys, straight on the database.
Each change is an event on the chain (stream ``principal-<name>``)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import psycopg
from psycopg.rows import class_row

from ledger import db, errors, keys
from ledger.appender import append_sync
from ledger.events import Envelope, StreamAppend, system_meta

HELP = "create, revoke and list API keys"


def configure(k: argparse.ArgumentParser) -> None:
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


def operator_meta() -> dict[str, Any]:
    return system_meta("cli", actor=os.environ.get("LEDGER_OPERATOR", "operator"), role="admin")


def append_one(conn: psycopg.Connection[Any], append: StreamAppend) -> list[Envelope]:
    (res,) = append_sync(conn, [append])
    if isinstance(res, errors.LedgerError):
        raise res
    return res


def principal_state(conn: psycopg.Connection[Any], name: str) -> keys.PrincipalState | None:
    with conn.cursor(row_factory=class_row(keys.PrincipalState)) as cur:
        return cur.execute(db.q("events", "principal_state"), {"name": name}).fetchone()


def run(args: Any) -> int:
    with db.connect() as conn:
        if args.keys_cmd == "list":
            for name, role, created, revoked in conn.execute(db.q("events", "principals_list")):
                state = f"revoked at {revoked}" if revoked else "active"
                print(f"{name}\t{role}\tcreated at {created}\t{state}")
            return 0
        keys.check_name(args.name)
        current = principal_state(conn, args.name)
        try:
            if args.keys_cmd == "create":
                key, append = keys.plan_create(
                    args.name,
                    args.role,
                    operator_meta(),
                    current,
                    replace=args.replace,
                    how_to_replace="add --replace",
                )
                append_one(conn, append)
                print(key)
                print(
                    f"created {args.role} key for {args.name!r}; it is shown only once",
                    file=sys.stderr,
                )
            else:
                append = keys.plan_revoke(args.name, current, operator_meta(), args.reason)
                recorded = append_one(conn, append)
                print(
                    f"revoked {args.name!r} at position {recorded[0]['position']}", file=sys.stderr
                )
        except (errors.Conflict, errors.NotFound) as exc:
            print(f"ledger: {exc.detail}", file=sys.stderr)
            return 1
    return 0
