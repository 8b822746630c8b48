"""The ledger as the soak runs it: ``ledger run`` on a PostgreSQL of its own,
restarted whenever it exits, as a service manager would (``Restart=always``),
and the processes a fault kills found among its children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from tests.support import ROOT, free_port


class Service:
    def __init__(self, db_url: str, home: Path, log: Path, **env: str) -> None:
        self.port = free_port()
        self.home = home
        self.log = log
        self.env = {
            **os.environ,
            "LEDGER_DATABASE_URL": db_url,
            "LEDGER_HOME": str(home),
            "LEDGER_LOG_FORMAT": "json",
            "LEDGER_LOG_LEVEL": "warning",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts: list[float] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="soak-supervisor")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ledger", "run", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, timeout: float = 60) -> None:
        self._spawn()
        self.wait_healthy(timeout)
        self._thread.start()

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"ledger run did not answer /health within {timeout} s")

    def _supervise(self) -> None:
        while not self._stopping.wait(0.2):
            if self.proc is not None and self.proc.poll() is not None:
                self.restarts.append(time.monotonic())
                self._spawn()

    def children(self) -> list[psutil.Process]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            return list(psutil.Process(self.proc.pid).children(recursive=True))
        except psutil.Error:
            return []

    def _child(self, *words: str) -> int | None:
        for p in self.children():
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if all(w in cmd for w in words):
                return int(p.pid)
        return None

    def api_pid(self) -> int | None:
        return self._child("ledger", "serve")

    def runner_pid(self) -> int | None:
        return self._child("-m", "projections")

    def tree_builder_pid(self) -> int | None:
        """The process whose thread builds the tree and signs: a process of its
        own when ``ledger run`` starts one, else (as today) the API's."""
        return self._child("-m", "ledger.proofs") or self._child("tree") or self.api_pid()

    def kill(self, pid: int | None) -> bool:
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
