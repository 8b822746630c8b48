"""The client's retries, on the wire level alone (no server: what is tested is
how the client reacts to answers): a 503's Retry-After is waited out (capped),
and every retry of a command carries the same Idempotency-Key."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ledger import client as client_module
from ledger.client import Client


def _client(answers: list[httpx.Response], seen: list[httpx.Request]) -> Client:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return Client("http://ledger.test", "k", transport=httpx.MockTransport(handle), backoff=0.1)


def _busy(retry_after: str) -> httpx.Response:
    return httpx.Response(
        503, headers={"Retry-After": retry_after}, json={"type": "x", "status": 503}
    )


def test_a_503_is_retried_after_what_retry_after_asks_with_the_same_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", waits.append)
    seen: list[httpx.Request] = []
    created = httpx.Response(201, json={"id": "t", "status": "queued", "version": 1, "position": 7})
    with _client([_busy("2"), _busy("600"), created], seen) as c:
        sub = c.submit("position_check", {})
    assert sub.position == 7
    assert waits == [2.0, client_module.MAX_RETRY_AFTER]  # asked 2 s, then capped
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(seen) == 3 and len(keys) == 1


def test_without_retry_after_the_backoff_doubles(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[Any] = []
    monkeypatch.setattr(client_module.time, "sleep", waits.append)
    seen: list[httpx.Request] = []
    ok = httpx.Response(200, json={"position": 1, "hash": "0" * 64})
    with _client([httpx.Response(502), httpx.Response(504), ok], seen) as c:
        assert c.head()["position"] == 1
    assert waits == [0.1, 0.2]
