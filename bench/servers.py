"""Real uvicorn processes on 127.0.0.1 and the load generator process."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def uvicorn(factory: str, env: dict[str, str], workers: int) -> Iterator[int]:
    """``uvicorn --factory FACTORY`` on a free port; yields the port once it answers."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        factory,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{factory} exited with {proc.returncode} before answering")
            try:
                httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2.0)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{factory} did not answer within 60 s") from None
                time.sleep(0.1)
        yield port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def ledger(command: str, env: dict[str, str], workers: int) -> Iterator[int]:
    """``ledger run`` or ``ledger serve`` exactly as deployed (its own session,
    so its companions go with it) on a free port; yields the port once
    ``/health`` answers. Stopped with SIGTERM to the whole group."""
    import signal

    port = free_port()
    cmd = [sys.executable, "-m", "ledger", command, "--port", str(port)]
    cmd += ["--workers", str(workers)]
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd,
        env=full_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # its start-up lines; a failure shows as its exit code
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ledger {command} exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ledger {command} did not answer within 60 s")
            time.sleep(0.1)
        yield port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def routes(port: int) -> set[tuple[str, str]]:
    """(METHOD, path) pairs the server's OpenAPI document lists."""
    doc = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=10.0).json()
    return {(m.upper(), p) for p, ops in doc.get("paths", {}).items() for m in ops}


def load(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load generator in its own process; returns its JSON result."""
    budget = float(spec["seconds"]) + float(spec.get("warmup", 0.5)) + 60
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", json.dumps(spec)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=budget,
        check=True,
    )
    result: dict[str, Any] = orjson.loads(out.stdout)
    return result
