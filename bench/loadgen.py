"""HTTP load generator: its own process, asyncio sockets, keep-alive.

``python -m bench.loadgen '{"port": 8000, "path": "/tasks", ...}'`` opens
``connections`` keep-alive connections to 127.0.0.1, each sending one request
after the other for ``seconds`` (after ``warmup`` seconds that are not
counted), and prints one JSON object: requests, non-2xx answers, elapsed
seconds and latency percentiles. The same client runs against every HTTP
comparator, so whatever it costs is paid alike.

A body may contain ``{n}``: it is replaced by a counter unique per request.
A path may contain ``{rand}``: it is replaced by a uniformly random integer
in ``1..rand_max`` per request (random positions for proofs).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

import orjson


def _request(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        j = lower.index(b"\r\n", i + 2)
        n = int(head[i + 17 : j])
        if n:
            await reader.readexactly(n)
        return status
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return status
    return status


async def _connection(
    spec: dict[str, Any], start: float, warm_until: float, deadline: float, out: dict[str, Any]
) -> None:
    method = spec.get("method", "POST")
    path = spec["path"]
    headers = spec.get("headers", {})
    body_t: str = spec.get("body", "")
    templated = "{n}" in body_t
    randomized = "{rand}" in path
    rand_max = int(spec.get("rand_max", 1))
    rng = random.Random(spec.get("seed"))
    fixed_body = body_t.encode()
    fixed = _request(method, path, headers, fixed_body)
    reader, writer = await asyncio.open_connection("127.0.0.1", spec["port"])
    lat = out["latencies"]
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            if templated or randomized:
                out["n"] += 1
                body = body_t.replace("{n}", str(out["n"])).encode() if templated else fixed_body
                p = path.replace("{rand}", str(rng.randint(1, rand_max))) if randomized else path
                req = _request(method, p, headers, body)
            else:
                req = fixed
            writer.write(req)
            status = await _read_response(reader)
            t1 = time.perf_counter()
            if 200 <= status < 300:
                out["total"] += 1
            if t0 >= warm_until:
                if 200 <= status < 300:
                    out["ok"] += 1
                    lat.append(t1 - t0)
                    out["last"] = max(out["last"], t1)
                else:
                    out["bad"] += 1
                    out["statuses"][status] = out["statuses"].get(status, 0) + 1
    except (OSError, asyncio.IncompleteReadError) as exc:
        out["errors"].append(repr(exc))
    finally:
        writer.close()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ok": 0,
        "total": 0,
        "bad": 0,
        "n": 0,
        "latencies": [],
        "statuses": {},
        "errors": [],
        "last": 0.0,
    }
    start = time.perf_counter()
    warm_until = start + float(spec.get("warmup", 0.5))
    deadline = warm_until + float(spec["seconds"])
    conns = int(spec.get("connections", 64))
    await asyncio.gather(
        *(_connection(spec, start, warm_until, deadline, out) for _ in range(conns))
    )
    elapsed = max(out["last"], deadline) - warm_until
    lat = sorted(out["latencies"])
    return {
        "requests": out["ok"],
        "total": out["total"],
        "non_2xx": out["bad"],
        "statuses": {str(k): v for k, v in out["statuses"].items()},
        "errors": out["errors"][:5],
        "seconds": elapsed,
        "per_second": out["ok"] / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import uvloop  # uvicorn[standard] brings it; the servers run on it too
    except ImportError:  # pragma: no cover
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")


if __name__ == "__main__":
    main()
