"""``ledger worker``: claim tasks, run their handler (``ledger.worker``),
complete or fail them."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from ledger.client import ApiError, Client, Task
from ledger.worker import HANDLERS, say, work_one

HELP = "claim tasks of given types and work them (the demo handler by default)"


def configure(p: argparse.ArgumentParser) -> None:
    p.description = "claim tasks, run their handler, complete or fail them"
    p.add_argument("--url", default=os.environ.get("LEDGER_URL", "http://127.0.0.1:8000"))
    p.add_argument(
        "--key",
        default=os.environ.get("LEDGER_API_KEY"),
        help="an agent's API key (default: $LEDGER_API_KEY)",
    )
    p.add_argument(
        "--type",
        dest="types",
        action="append",
        help=f"task types to work (repeatable; default: {', '.join(HANDLERS)})",
    )
    p.add_argument(
        "--task", dest="task_ids", action="append", help="claim this task id (repeatable)"
    )
    p.add_argument("--lease-seconds", type=int, default=30)
    p.add_argument("--poll", type=float, default=1.0, help="seconds between empty polls")
    p.add_argument("--max-tasks", type=int, default=0, help="stop after this many (0: no limit)")
    p.add_argument("--once", action="store_true", help="stop when no task is queued")


def run(args: Any) -> int:
    if not args.key:
        say("an agent key is needed: --key KEY or LEDGER_API_KEY")
        return 2
    types = args.types or list(HANDLERS)
    unknown = [t for t in types if t not in HANDLERS]
    if unknown:
        say(f"no handler for {', '.join(unknown)}; known: {', '.join(HANDLERS)}")
        return 2
    done = 0
    pending = list(args.task_ids or [])
    with Client(args.url, args.key) as client, Client(args.url, args.key) as renewer:
        while True:
            try:
                if args.task_ids is not None:
                    if not pending:
                        break
                    task: Task | None = client.claim(pending.pop(0), args.lease_seconds)
                else:
                    task = client.claim_next(types, args.lease_seconds)
            except ApiError as exc:
                if exc.status in (404, 405) and args.task_ids is None:
                    say("this server has no POST /tasks/claim; name tasks with --task ID")
                    return 2
                say(f"claim refused: {exc}")
                if exc.status in (401, 403):
                    return 2
                continue
            if task is None:
                if args.once:
                    break
                time.sleep(args.poll)
                continue
            say(f"claimed {task.id} ({task.task_type})")
            try:
                final = work_one(client, task, HANDLERS, args.lease_seconds, renewer)
            except ApiError as exc:
                say(f"task {task.id}: {exc}")
                continue
            done += 1
            outcome = final.result if final.status == "done" else final.error
            print(
                f"{final.id} {final.status} version={final.version} position={final.position} "
                f"{json.dumps(outcome)}",
                flush=True,
            )
            if args.max_tasks and done >= args.max_tasks:
                break
    return 0
