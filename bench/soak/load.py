"""The soak's clients: agents working the whole task lifecycle, an officer
deciding approvals, an auditor verifying, all through ``ledger.client``.

Every command carries a token ``op-<32 hex>`` of its own in its body (the
payload, a step's content, the result, a reason or comment), so the checks
can count how often each command is in the ledger. A command is retried with
the same Idempotency-Key until it is answered (the client's own retries, then
``persist``'s); every answer the clients got, and every transport error, is
noted with its time, so each outage's statuses can be told."""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from ledger.client import ApiError, Client

T = TypeVar("T")
PERSIST_SECONDS = 120.0  # longest a command is retried before it counts as given up
LEASE_SECONDS = 30
TERMINAL = {"done", "rejected", "cancelled"}


def op() -> str:
    return f"op-{uuid.uuid4().hex}"


@dataclass(slots=True)
class Ack:
    kind: str  # the event type the answer says was written
    stream: str
    version: int
    position: int


@dataclass
class Record:
    """What the clients saw and were told, shared by every client thread."""

    seen: list[tuple[float, str]] = field(default_factory=list)  # (time, status)
    acks: list[Ack] = field(default_factory=list)
    submitted: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)
    gave_up: int = 0
    claims_lost: int = 0  # a lease lapsed during an outage; the task went back to the queue
    claims_lost_why: list[str] = field(default_factory=list)
    claims_lost_tasks: list[str] = field(default_factory=list)
    verify_failures: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, status: str) -> None:
        with self.lock:
            self.seen.append((time.monotonic(), status))

    def ack(self, kind: str, task_id: str, version: int, position: int) -> None:
        with self.lock:
            self.acks.append(Ack(kind, f"task-{task_id}", version, position))


class RecordingTransport(httpx.HTTPTransport):
    def __init__(self, record: Record) -> None:
        super().__init__()
        self.record = record

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            self.record.note("transport-error")
            raise
        self.record.note(str(response.status_code))
        return response


def client(url: str, key: str, record: Record) -> Client:
    return Client(
        url, key, timeout=15.0, retries=2, backoff=0.1, transport=RecordingTransport(record)
    )


def persist(record: Record, fn: Callable[[str], T], key: str | None = None) -> T:
    """``fn(idempotency_key)`` until it is answered: the same key every time."""
    key = key or uuid.uuid4().hex
    deadline = time.monotonic() + PERSIST_SECONDS
    while True:
        try:
            return fn(key)
        except ApiError as exc:
            if exc.status not in (502, 503, 504) or time.monotonic() > deadline:
                raise
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


class Agent:
    def __init__(self, name: str, key: str, url: str, record: Record, rate: float) -> None:
        self.name, self.key, self.url, self.record, self.rate = name, key, url, record, rate
        self.awaiting: dict[str, int] = {}  # task id -> position of its approval request

    def run(self, stop: threading.Event, submitting: threading.Event) -> None:
        with client(self.url, self.key, self.record) as c:
            next_at = time.monotonic()
            while not stop.is_set():
                next_at = max(next_at + 1 / self.rate, time.monotonic() - 1)
                stop.wait(max(0.0, next_at - time.monotonic()))
                self._guard(lambda: self.cycle(c, submit=submitting.is_set()))

    def _guard(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except ApiError as exc:
            self.record.unexpected.append(f"{exc.status} {exc.problem.get('type')}: {exc.detail}")
        except httpx.TransportError:
            with self.record.lock:
                self.record.gave_up += 1

    def cycle(self, c: Client, submit: bool) -> bool:
        """Submit one task (unless draining), work the next one, finish approved ones.
        True when there was anything to do."""
        busy = False
        if submit:
            token = op()
            payload = {"symbol": "AAPL", "quantity": random.randint(1, 500), "op": token}
            sub = persist(
                self.record, lambda k: c.submit("position_check", payload, idempotency_key=k)
            )
            self.record.ack("TaskSubmitted", sub.id, sub.version, sub.position)
            with self.record.lock:
                self.record.submitted.add(sub.id)
            busy = True
        busy = self.work_next(c) or busy
        return self.finish_approved(c) or busy

    def work_next(self, c: Client) -> bool:
        task = persist(
            self.record,
            lambda k: c.claim_next(["position_check"], LEASE_SECONDS, idempotency_key=k),
        )
        if task is None:
            return False
        self.record.ack("TaskClaimed", task.id, task.version, task.position)
        try:
            step = {"op": op(), "price": 100.25}
            w = persist(
                self.record, lambda k: c.record_step(task.id, "note", step, idempotency_key=k)
            )
            self.record.ack("TaskStepRecorded", task.id, w.version, w.position)
            if random.random() < 0.25:
                reason = op()
                t = persist(
                    self.record, lambda k: c.request_approval(task.id, reason, idempotency_key=k)
                )
                self.record.ack("TaskApprovalRequested", task.id, t.version, t.position)
                self.awaiting[task.id] = t.position
            else:
                self._complete(c, task.id)
        except ApiError as exc:
            if exc.status not in (403, 409):
                raise
            with self.record.lock:  # the lease lapsed meanwhile: another agent takes it
                self.record.claims_lost += 1
                self.record.claims_lost_why.append(f"work {exc.status} {exc.detail}")
                self.record.claims_lost_tasks.append(task.id)
        return True

    def _complete(self, c: Client, task_id: str) -> None:
        result = {"op": op(), "notional_estimate": 1.0}
        t = persist(self.record, lambda k: c.complete(task_id, result, idempotency_key=k))
        self.record.ack("TaskCompleted", task_id, t.version, t.position)

    def finish_approved(self, c: Client) -> bool:
        busy = False
        for task_id, asked_at in list(self.awaiting.items()):
            # read-your-writes: the view as of the approval request at least
            t = persist(
                self.record,
                lambda _k, i=task_id, p=asked_at: c.get(i, min_position=p),  # type: ignore[misc]
            )
            if t.status == "awaiting_approval":
                continue
            del self.awaiting[task_id]
            if t.status == "running" and t.worker == self.name:
                try:
                    self._complete(c, task_id)
                except ApiError as exc:
                    if exc.status not in (403, 409):
                        raise
                    with self.record.lock:
                        self.record.claims_lost += 1
                        self.record.claims_lost_why.append(
                            f"finish {exc.status} {exc.detail} (read {t.status} v{t.version} "
                            f"at {t.position}, asked {asked_at})"
                        )
                        self.record.claims_lost_tasks.append(task_id)
                busy = True
        return busy


def officer(url: str, key: str, record: Record, stop: threading.Event) -> None:
    """Approves two in three of the tasks awaiting approval, rejects the rest;
    the decision's key and comment are the task's own, so a repeat is a replay."""
    with client(url, key, record) as c:
        while not stop.wait(0.3):
            try:
                page = c.request("GET", "/tasks", params={"status": "awaiting_approval"}).json()
                for item in page["items"]:
                    task_id = item["id"]
                    # one decision per approval request: the key names the round
                    round_key = f"decide-{task_id}-{item['version']}"
                    token = "op-" + hashlib.md5(round_key.encode()).hexdigest()
                    decide = c.approve if int(token[-1], 16) % 3 else c.reject
                    try:
                        t = persist(
                            record,
                            lambda k, i=task_id, d=decide, o=token: d(i, o, idempotency_key=k),  # type: ignore[misc]
                            key=round_key,
                        )
                    except ApiError as exc:
                        if exc.status != 409:  # decided already, or cancelled
                            raise
                        continue
                    kind = "TaskApproved" if decide == c.approve else "TaskRejected"
                    record.ack(kind, task_id, t.version, t.position)
            except ApiError as exc:
                record.unexpected.append(f"officer: {exc}")
            except httpx.TransportError:
                pass  # an outage: the next round tries again


def auditor(url: str, key: str, record: Record, stop: threading.Event) -> None:
    """Verifies what is new and keeps the signed checkpoints as they come."""
    with client(url, key, record) as c:
        while not stop.wait(3.0):
            try:
                v = c.request("GET", "/audit/verify").json()
                if not v["ok"]:
                    record.verify_failures.append(str(v))
                note = c.request("GET", "/audit/checkpoint").text
                if not record.checkpoints or record.checkpoints[-1] != note:
                    record.checkpoints.append(note)
            except (ApiError, httpx.TransportError):
                pass  # an outage; verification is checked in full at the end
