"""A TCP proxy in front of the API that can cut connections mid-request.

While ``cut_probability`` is above 0, each request it forwards is, with that
probability, let through to the server and its answer then dropped: the
connection is aborted the moment the server starts answering. The server
did the work; the client never heard. A client that retries with the same
Idempotency-Key must get the first answer, and the ledger must hold the
command once."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from typing import Any

from tests.support import free_port


class CuttingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.cut_probability = 0.0
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._thread = threading.Thread(target=self._run, name="soak-proxy", daemon=True)
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # the API is down: the client sees its connection closed
            cwriter.transport.abort()
            return
        cut = [False]

        def abort() -> None:
            cwriter.transport.abort()
            swriter.transport.abort()

        async def up() -> None:
            with contextlib.suppress(OSError):
                while data := await creader.read(65536):
                    swriter.write(data)
                    await swriter.drain()
                    if self.cut_probability and random.random() < self.cut_probability:
                        cut[0] = True

        async def down() -> None:
            with contextlib.suppress(OSError):
                while data := await sreader.read(65536):
                    if cut[0]:
                        self.cuts += 1
                        break
                    cwriter.write(data)
                    await cwriter.drain()
            abort()

        with contextlib.suppress(Exception):
            await asyncio.wait(
                [asyncio.ensure_future(up()), asyncio.ensure_future(down())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        abort()
