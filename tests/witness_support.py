"""Witnesses as real processes (``ledger witness``) for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support import ROOT, free_port, wait_until


def witness_key(home: Path, name: str) -> str:
    """The witness's verifier key (made on first use), as its operator prints it."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger",
            "witness",
            "--home",
            str(home),
            "--name",
            name,
            "--print-key",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


class WitnessProcess:
    def __init__(self, home: Path, log_vkeys: list[str], port: int | None = None) -> None:
        self.home = home
        self.log_vkeys = log_vkeys
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "ledger",
            "witness",
            "--home",
            str(self.home),
            "--port",
            str(self.port),
        ]
        for k in self.log_vkeys:
            args += ["--log", k]
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ},
        )
        proc = self.proc

        def up() -> bool:
            assert proc.poll() is None, f"the witness exited with {proc.returncode}"
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=60, what="the witness answering")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)
        self.proc = None


@contextmanager
def witnesses(homes: list[Path], log_vkeys: list[str]) -> Iterator[list[WitnessProcess]]:
    ws = [WitnessProcess(h, log_vkeys) for h in homes]
    try:
        for w in ws:
            w.start()
        yield ws
    finally:
        for w in ws:
            w.kill()
