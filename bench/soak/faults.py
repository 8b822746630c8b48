"""The faults the soak injects, and how long the service takes to recover.

After each fault a prober (an agent of its own, straight to the API) times
three things from the moment the fault ended (the process killed, the
database started again, the cut window closed): a command acknowledged
again (``write``), the task view folding it (``view``), and a signed
checkpoint covering it (``checkpoint``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.pgctl import OwnPostgres
from bench.soak.proxy import CuttingProxy
from bench.soak.service import Service

FAULTS = [
    "api-kill",  # SIGKILL of the API process (ledger serve)
    "runner-kill",  # SIGKILL of the projection runner (python -m projections)
    "builder-kill",  # SIGKILL of the process that builds the tree and signs
    "pg-stop",  # pg_ctl stop -m fast, down for OUTAGE_SECONDS, started again
    "pg-crash",  # pg_ctl stop -m immediate (a crash), down, started again
    "sessions-ended",  # pg_terminate_backend of every session of the ledger, repeatedly
    "connections-cut",  # connections cut mid-request, for CUT_SECONDS
]
OUTAGE_SECONDS = 3.0
CUT_SECONDS = 4.0
CUT_PROBABILITY = 0.3
RECOVERY_LIMIT = 90.0


@dataclass
class Injected:
    kind: str
    began: float
    ended: float
    recovered: dict[str, float] = field(default_factory=dict)  # what -> seconds after ended
    note: str = ""

    @property
    def happened(self) -> bool:
        return not self.note.startswith("no ")


class Faults:
    def __init__(
        self,
        service: Service,
        pg: OwnPostgres,
        dbname: str,
        proxy: CuttingProxy,
        prober_key: str,
        auditor_key: str,
    ) -> None:
        self.service, self.pg, self.dbname, self.proxy = service, pg, dbname, proxy
        self.prober_key, self.auditor_key = prober_key, auditor_key
        self.done: list[Injected] = []

    def inject(self, kind: str) -> Injected:
        actions: dict[str, Callable[[], str]] = {
            "api-kill": lambda: self._kill(self.service.api_pid, "api"),
            "runner-kill": lambda: self._kill(self.service.runner_pid, "runner"),
            "builder-kill": lambda: self._kill(self.service.tree_builder_pid, "builder"),
            "pg-stop": lambda: self._pg("fast"),
            "pg-crash": lambda: self._pg("immediate"),
            "sessions-ended": self._end_sessions,
            "connections-cut": self._cut,
        }
        began = time.monotonic()
        note = actions[kind]()
        fault = Injected(kind, began, time.monotonic(), note=note)
        self._probe(fault)
        self.done.append(fault)
        return fault

    def _kill(self, find: Callable[[], int | None], what: str) -> str:
        deadline = time.monotonic() + 20  # one being restarted: wait for it
        while (pid := find()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if not self.service.kill(pid):
            return f"no {what} process to kill"
        return f"killed {what} pid {pid}"

    def _pg(self, mode: str) -> str:
        self.pg.stop(mode)
        time.sleep(OUTAGE_SECONDS)  # the outage: clients keep sending meanwhile
        self.pg.start()
        return f"down {OUTAGE_SECONDS:g} s"

    def _end_sessions(self) -> str:
        ended = 0
        for _ in range(5):
            ended += self.pg.terminate_sessions(self.dbname)
            time.sleep(0.2)
        return f"{ended} sessions ended"

    def _cut(self) -> str:
        before = self.proxy.cuts
        self.proxy.cut_probability = CUT_PROBABILITY
        time.sleep(CUT_SECONDS)
        self.proxy.cut_probability = 0.0
        return f"{self.proxy.cuts - before} answers cut"

    def _probe(self, fault: Injected) -> None:
        deadline = fault.ended + RECOVERY_LIMIT
        base = self.service.url
        with httpx.Client(base_url=base, timeout=10) as c:
            agent = {"Authorization": f"Bearer {self.prober_key}"}
            auditor = {"Authorization": f"Bearer {self.auditor_key}"}

            def until(what: str, ok: Callable[[], Any]) -> Any:
                while time.monotonic() < deadline:
                    try:
                        got = ok()
                    except httpx.HTTPError:
                        got = None
                    if got:
                        fault.recovered[what] = time.monotonic() - fault.ended
                        return got
                    time.sleep(0.05)
                return None

            def submit() -> Any:
                r = c.post(
                    "/tasks",
                    json={"task_type": "position_check", "payload": {"probe": fault.kind}},
                    headers={**agent, "Idempotency-Key": uuid.uuid4().hex},
                )
                return r.json() if r.status_code == 201 else None

            sub = until("write", submit)
            if sub is None:
                return
            params = {"min_position": sub["position"]}
            until(
                "view",
                lambda: (
                    c.get(f"/tasks/{sub['id']}", params=params, headers=agent).status_code == 200
                ),
            )

            def signed() -> bool:
                r = c.get("/audit/checkpoint", headers=auditor)
                return r.status_code == 200 and int(r.text.split("\n")[1]) >= sub["position"]

            until("checkpoint", signed)
