"""A typed Python client for the ledger's task API (SPEC §4), on httpx.

Every command is sent with an ``Idempotency-Key`` (a fresh one per call unless
you pass your own) and retried with that same key when the request may not
have reached an answer: a timeout, a broken connection, 502/503/504. The
ledger answers a retried command as it answered the first time and writes it
once, so a retry never submits, claims or completes twice.

    with Client("http://127.0.0.1:8000", api_key) as ledger:
        sub = ledger.submit("position_check", {"symbol": "AAPL", "quantity": 250})
        task = ledger.get(sub.id)
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any

import httpx

RETRY_STATUSES = frozenset({502, 503, 504})


class ApiError(Exception):
    """The ledger refused a request: ``status`` and its RFC 9457 ``problem``."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")
        self.status = status
        self.problem = problem

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    agent_name: str
    task_type: str
    status: str
    payload: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    created_at: str
    updated_at: str
    version: int
    position: int
    worker: str | None = None
    lease_expires_at: str | None = None
    priority: int = 0
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Task:
        """From a ``GET /tasks/{id}`` document (the SPEC §4 fields are required)."""
        given = {f.name: d[f.name] for f in fields(cls) if f.name in d and f.name != "raw"}
        return cls(**given, raw=d)


@dataclass(frozen=True, slots=True)
class Submitted:
    id: str
    status: str
    version: int
    position: int


@dataclass(frozen=True, slots=True)
class Written:
    version: int
    position: int


@dataclass(frozen=True, slots=True)
class Replay:
    state: Task | None
    events: list[dict[str, Any]]


class Client:
    """Synchronous client. ``retries``: extra attempts after the first, with the
    same Idempotency-Key, ``backoff`` seconds apart (doubling)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        if_match: int | None = None,
    ) -> httpx.Response:
        """One logical request, retried on timeouts and 502/503/504 with the same
        Idempotency-Key (commands get a fresh key when none is given)."""
        headers: dict[str, str] = {}
        if method != "GET":
            headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        if if_match is not None:
            headers["If-Match"] = str(if_match)
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            wait = delay
            try:
                r = self._http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TransportError:
                if last:
                    raise
            else:
                if r.status_code not in RETRY_STATUSES or last:
                    if r.status_code >= 400:
                        raise ApiError(r.status_code, _problem(r))
                    return r
                wait = max(delay, _retry_after(r))
            time.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _task(self, path: str, body: Any = None, **kw: Any) -> Task:
        return Task.from_json(self.request("POST", path, json=body, **kw).json())

    # -- commands ------------------------------------------------------------

    def submit(
        self,
        task_type: str,
        payload: dict[str, Any],
        priority: int = 0,
        *,
        idempotency_key: str | None = None,
    ) -> Submitted:
        body = {"task_type": task_type, "payload": payload, "priority": priority}
        d = self.request("POST", "/tasks", json=body, idempotency_key=idempotency_key).json()
        return Submitted(d["id"], d["status"], d["version"], d["position"])

    def claim(self, task_id: str, lease_seconds: int | None = None, **kw: Any) -> Task:
        body = {"lease_seconds": lease_seconds} if lease_seconds else None
        return self._task(f"/tasks/{task_id}/claim", body, **kw)

    def claim_next(
        self,
        task_types: list[str] | None = None,
        lease_seconds: int | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Task | None:
        """Claim the next queued task (of ``task_types``); None when none is queued.
        A caller retrying beyond this client's own retries passes the same
        ``idempotency_key``, so one claim is never taken as two."""
        body: dict[str, Any] = {}
        if task_types:
            body["task_types"] = task_types
        if lease_seconds:
            body["lease_seconds"] = lease_seconds
        r = self.request("POST", "/tasks/claim", json=body, idempotency_key=idempotency_key)
        if r.status_code == 204:
            return None
        return Task.from_json(r.json())

    def renew_lease(self, task_id: str, lease_seconds: int | None = None, **kw: Any) -> Task:
        body = {"lease_seconds": lease_seconds} if lease_seconds else None
        return self._task(f"/tasks/{task_id}/lease", body, **kw)

    def record_step(self, task_id: str, kind: str, content: Any, **kw: Any) -> Written:
        d = self.request(
            "POST", f"/tasks/{task_id}/steps", json={"kind": kind, "content": content}, **kw
        ).json()
        return Written(d["version"], d["position"])

    def request_approval(self, task_id: str, reason: str, **kw: Any) -> Task:
        return self._task(f"/tasks/{task_id}/approval-request", {"reason": reason}, **kw)

    def approve(self, task_id: str, comment: str, **kw: Any) -> Task:
        return self._task(f"/tasks/{task_id}/approve", {"comment": comment}, **kw)

    def reject(self, task_id: str, comment: str, **kw: Any) -> Task:
        return self._task(f"/tasks/{task_id}/reject", {"comment": comment}, **kw)

    def complete(self, task_id: str, result: dict[str, Any], **kw: Any) -> Task:
        return self._task(f"/tasks/{task_id}/complete", {"result": result}, **kw)

    def fail(self, task_id: str, error: str, retryable: bool = False, **kw: Any) -> Task:
        body = {"error": error, "retryable": retryable}
        return self._task(f"/tasks/{task_id}/fail", body, **kw)

    def requeue(self, task_id: str, reason: str, **kw: Any) -> Task:
        return self._task(f"/tasks/{task_id}/requeue", {"reason": reason}, **kw)

    def cancel(self, task_id: str, reason: str, **kw: Any) -> Task:
        return self._task(f"/tasks/{task_id}/cancel", {"reason": reason}, **kw)

    # -- reads ---------------------------------------------------------------

    def get(self, task_id: str, *, min_position: int | None = None) -> Task:
        """The task; ``min_position``: wait (bounded) until the views include it."""
        params = {"min_position": min_position} if min_position is not None else None
        return Task.from_json(self.request("GET", f"/tasks/{task_id}", params=params).json())

    def events(self, task_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.request("GET", f"/tasks/{task_id}/events").json()
        return out

    def replay(self, task_id: str, *, at: str | None = None, position: int | None = None) -> Replay:
        params: dict[str, Any] = {"at": at} if at is not None else {"position": position}
        d = self.request("GET", f"/tasks/{task_id}/replay", params=params).json()
        return Replay(Task.from_json(d["state"]) if d["state"] else None, d["events"])

    def head(self) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", "/audit/head").json()
        return out


# The longest a Retry-After header makes the client wait before a retry (seconds).
MAX_RETRY_AFTER = 5.0


def _retry_after(r: httpx.Response) -> float:
    """The server's Retry-After in seconds (RFC 9110 §10.2.3, delay-seconds form),
    capped; 0 when absent or given as a date."""
    value = r.headers.get("retry-after", "")
    return min(float(value), MAX_RETRY_AFTER) if value.isdigit() else 0.0


def _problem(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {"status": r.status_code, "detail": r.text[:500]}
    return body if isinstance(body, dict) else {"status": r.status_code, "detail": str(body)}
