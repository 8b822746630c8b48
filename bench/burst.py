"""A burst: N commands sent at once, each on a connection of its own.

    python -m bench.burst URL AGENT_KEY [N]

Opens N connections first, then sends ``POST /tasks`` on all of them
together (plain asyncio streams: the client costs next to nothing, so the
burst arrives as one) and prints one JSON document: how long it took, and
for each answer its status, ``Retry-After``, media type and task id. Used by
the backpressure test and the soak.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson


def raise_open_files(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        cap = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (cap, hard))


def _request(host: str, key: str, n: int) -> bytes:
    body = orjson.dumps({"task_type": "position_check", "payload": {"burst": n}})
    head = (
        f"POST /tasks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Idempotency-Key: {uuid.uuid4().hex}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _parse(raw: bytes) -> dict[str, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    out: dict[str, Any] = {
        "status": status,
        "retry_after": headers.get("retry-after"),
        "media": headers.get("content-type", ""),
    }
    if status == 201:
        with contextlib.suppress(ValueError):
            out["id"] = orjson.loads(body)["id"]
    return out


async def burst(url: str, key: str, n: int, timeout: float = 60.0) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    go = asyncio.Event()
    ready = [0]  # connections opened, or failed to open

    async def one(i: int) -> dict[str, Any]:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            ready[0] += 1
            return {"status": 0, "error": f"connect: {exc}"}
        ready[0] += 1
        try:
            await go.wait()
            t0 = time.monotonic()
            writer.write(_request(f"{host}:{port}", key, i))
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), timeout)
            answer = _parse(raw) if raw else {"status": 0, "error": "no answer"}
            answer["seconds"] = round(time.monotonic() - t0, 4)
            return answer
        except (OSError, TimeoutError, ValueError, IndexError) as exc:
            return {"status": 0, "error": repr(exc)}
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    deadline = time.monotonic() + timeout
    while ready[0] < n and time.monotonic() < deadline:  # every connection open first
        await asyncio.sleep(0.01)
    t0 = time.monotonic()
    go.set()
    answers = await asyncio.gather(*tasks)
    return {"n": n, "seconds": round(time.monotonic() - t0, 3), "answers": answers}


def main(argv: list[str]) -> int:
    url, key = argv[0], argv[1]
    n = int(argv[2]) if len(argv) > 2 else 2000
    raise_open_files(n + 256)
    result = asyncio.run(burst(url, key, n))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
