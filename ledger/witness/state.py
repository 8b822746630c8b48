"""The witness's state in files under its home: ``state.json`` (per origin,
the latest checkpoint cosigned) and ``forks.ndjson`` (every validly signed
checkpoint that contradicted it). An update holds an exclusive ``flock`` on
``state.lock`` from the read to the durable write (temporary file, fsync,
rename), so two requests, or two processes, never roll the state back.
"""

from __future__ import annotations

import base64
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from ledger.witness.protocol import Answer, Recorded


class FileState:
    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.path = home / "state.json"
        self.lock_path = home / "state.lock"
        self.forks_path = home / "forks.ndjson"
        self._mutex = threading.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        return data

    @staticmethod
    def _recorded(entry: dict[str, Any] | None) -> Recorded | None:
        if entry is None:
            return None
        return Recorded(int(entry["size"]), base64.b64decode(entry["root"]), entry["note"])

    def get(self, origin: str) -> Recorded | None:
        return self._recorded(self._read().get(origin))

    def update(
        self, origin: str, decide: Callable[[Recorded | None], tuple[Answer, Recorded | None]]
    ) -> Answer:
        with self._mutex, open(self.lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            answer, new = decide(self._recorded(data.get(origin)))
            if new is not None:
                data[origin] = {
                    "size": new.size,
                    "root": base64.b64encode(new.root).decode(),
                    "note": new.note,
                }
                tmp = self.path.with_name(f".state.{os.getpid()}.tmp")
                with open(tmp, "wb") as f:
                    f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            return answer

    def record_fork(self, origin: str, reason: str, body: str) -> None:
        line = {"at": time.time(), "origin": origin, "reason": reason, "request": body}
        with open(self.forks_path, "ab") as f:
            f.write(orjson.dumps(line) + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def forks(self) -> list[dict[str, Any]]:
        try:
            text = self.forks_path.read_bytes()
        except FileNotFoundError:
            return []
        return [orjson.loads(line) for line in text.splitlines() if line.strip()]
