"""``ledger worker``: an agent that claims tasks, runs a handler, records its
steps, renews its lease while it works, and completes or fails each task.

Handlers take the claimed task and a step recorder and return the result
object; raising :class:`TaskFailure` fails the task (``retryable`` as given),
any other exception fails it as retryable. The demo handler
``position_check`` prices a position at a fixed 100.25.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.client import ApiError, Client, Task

DEMO_PRICE = 100.25
HELP = "claim tasks of given types and work them (the demo handler by default)"


class TaskFailure(Exception):
    def __init__(self, error: str, retryable: bool = False) -> None:
        super().__init__(error)
        self.error = error
        self.retryable = retryable


@dataclass(slots=True)
class Steps:
    """Records steps of the task being worked (the execution trace)."""

    client: Client
    task_id: str

    def record(self, kind: str, content: Any) -> None:
        self.client.record_step(self.task_id, kind, content)


Handler = Callable[[Task, Steps], dict[str, Any]]


def position_check(task: Task, steps: Steps) -> dict[str, Any]:
    """``{"symbol": "AAPL", "quantity": 250}`` → the position's notional estimate."""
    symbol = task.payload.get("symbol")
    quantity = task.payload.get("quantity")
    if not isinstance(symbol, str) or not symbol:
        raise TaskFailure("payload.symbol must be a non-empty string")
    if isinstance(quantity, bool) or not isinstance(quantity, int | float) or quantity <= 0:
        raise TaskFailure("payload.quantity must be a positive number")
    steps.record("tool_call", {"tool": "price_lookup", "symbol": symbol, "price": DEMO_PRICE})
    notional = quantity * DEMO_PRICE
    steps.record("note", f"{quantity} {symbol} at {DEMO_PRICE} = {notional}")
    return {
        "symbol": symbol,
        "quantity": quantity,
        "status": "processed",
        "notional_estimate": notional,
    }


HANDLERS: dict[str, Handler] = {"position_check": position_check}


class _LeaseKeeper:
    """Renews the claim every third of the lease while the handler runs."""

    def __init__(self, client: Client, task_id: str, lease_seconds: int) -> None:
        self.client = client
        self.task_id = task_id
        self.lease_seconds = lease_seconds
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(max(self.lease_seconds / 3, 0.2)):
            try:
                self.client.renew_lease(self.task_id, self.lease_seconds)
            except ApiError as exc:
                self.lost = exc.detail  # requeued or taken over: stop renewing
                return
            except Exception as exc:  # network trouble: try again next period
                _say(f"lease renewal of {self.task_id} failed: {exc}")


def work_one(
    client: Client,
    task: Task,
    handlers: dict[str, Handler],
    lease_seconds: int,
    renewer: Client | None = None,
) -> Task:
    """Run the handler on a claimed task and complete or fail it."""
    handler = handlers.get(task.task_type)
    if handler is None:
        return client.fail(task.id, f"no handler for task type {task.task_type!r}", False)
    with _LeaseKeeper(renewer or client, task.id, lease_seconds) as keeper:
        try:
            result = handler(task, Steps(client, task.id))
        except TaskFailure as exc:
            return client.fail(task.id, exc.error, exc.retryable)
        except ApiError:
            raise
        except Exception as exc:
            return client.fail(task.id, f"{type(exc).__name__}: {exc}", True)
    if keeper.lost:
        _say(f"lost the claim on {task.id} while working: {keeper.lost}")
    return client.complete(task.id, result)


def _say(msg: str) -> None:
    print(f"worker: {msg}", file=sys.stderr, flush=True)


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
        _say("an agent key is needed: --key KEY or LEDGER_API_KEY")
        return 2
    types = args.types or list(HANDLERS)
    unknown = [t for t in types if t not in HANDLERS]
    if unknown:
        _say(f"no handler for {', '.join(unknown)}; known: {', '.join(HANDLERS)}")
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
                    _say("this server has no POST /tasks/claim; name tasks with --task ID")
                    return 2
                _say(f"claim refused: {exc}")
                if exc.status in (401, 403):
                    return 2
                continue
            if task is None:
                if args.once:
                    break
                time.sleep(args.poll)
                continue
            _say(f"claimed {task.id} ({task.task_type})")
            try:
                final = work_one(client, task, HANDLERS, args.lease_seconds, renewer)
            except ApiError as exc:
                _say(f"task {task.id}: {exc}")
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
