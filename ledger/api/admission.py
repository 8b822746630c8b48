"""Admission: at most ``max_inflight`` requests are worked on at once; the
rest wait their turn (a waiting request costs the event loop nothing) for at
most ``wait_seconds``, then get a 503 with Retry-After without having read
their body. So a burst of thousands of requests is worked through a few
hundred at a time, and what the service is doing stays bounded: every
iteration of the event loop stays short, and ``/health`` (never held back)
is answered in milliseconds during the burst, not after it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from ledger.api.errors import problem

log = structlog.get_logger("ledger.http")


class Admission:
    def __init__(
        self, app: Any, max_inflight: int, wait_seconds: float, exempt: frozenset[str]
    ) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self.wait_seconds = wait_seconds
        self.exempt = exempt
        self._slots: asyncio.Semaphore | None = None
        self._last_refusal_log = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.max_inflight <= 0 or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # made in the serving loop
            self._slots = asyncio.Semaphore(self.max_inflight)
        try:
            if self._slots.locked():  # the slow path only when every slot is taken
                await asyncio.wait_for(self._slots.acquire(), self.wait_seconds)
            else:
                await self._slots.acquire()
        except TimeoutError:
            now = time.monotonic()
            if now - self._last_refusal_log > 1.0:
                self._last_refusal_log = now
                log.warning("request_refused_overloaded", inflight=self.max_inflight)
            answer = problem(
                503,
                "Service overloaded",
                f"more than {self.max_inflight} requests are being worked on and this one "
                f"waited {self.wait_seconds:g} s for its turn; nothing was done; retry shortly",
                "overloaded",
                scope["path"],
            )
            await answer(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()
