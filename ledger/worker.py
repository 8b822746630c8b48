"""The worker ``ledger worker`` runs (its command line: ``ledger.cli.worker``):
an agent that claims tasks, runs a handler, records its steps, renews its
lease while it works, and completes or fails each task.

Handlers take the claimed task and a step recorder and return the result
object; raising :class:`TaskFailure` fails the task (``retryable`` as given),
any other exception fails it as retryable. The demo handler
``position_check`` prices a position at a fixed 100.25.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.client import ApiError, Client, Task

DEMO_PRICE = 100.25


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
                say(f"lease renewal of {self.task_id} failed: {exc}")


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
        say(f"lost the claim on {task.id} while working: {keeper.lost}")
    return client.complete(task.id, result)


def say(msg: str) -> None:
    print(f"worker: {msg}", file=sys.stderr, flush=True)
