"""``witness`` rows: what two witnesses (``ledger witness`` processes, quorum 2)
cost. The latency from an event's commit (``POST /tasks`` answered) to a
checkpoint covering it with both cosignatures (``GET /log/checkpoint``), the
client asking for a fresh checkpoint once as ``GET /audit/checkpoint`` does;
and HTTP submit throughput on the same database set-up with and without the
witnesses configured."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench import servers
from bench.results import Row
from bench.workloads import SUBMIT_BODY, Bench, _guard, _http_rows, make_key
from ledger.proofs import cosignature, signing

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "ledger.example/audit-ledger"


@contextlib.contextmanager
def _witnesses(home: Path, log_vkey: str, n: int = 2) -> Iterator[list[tuple[str, str]]]:
    """``n`` witness processes; yields (url, vkey) each."""
    procs: list[subprocess.Popen[bytes]] = []
    out: list[tuple[str, str]] = []
    try:
        for i in range(1, n + 1):
            wh = home / f"w{i}"
            base = [sys.executable, "-m", "ledger", "witness", "--home", str(wh)]
            vkey = subprocess.run(
                [*base, "--name", f"witness.example/w{i}", "--print-key"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout.strip()
            port = servers.free_port()
            procs.append(
                subprocess.Popen(
                    [*base, "--log", log_vkey, "--port", str(port)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env={**os.environ, "LEDGER_LOG_LEVEL": "warning"},
                )
            )
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/health", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or procs[-1].poll() is not None:
                        raise RuntimeError("a witness did not start") from None
                    time.sleep(0.05)
            out.append((url, vkey))
        yield out
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=15)


def _env(url: str, home: str, witnesses: list[tuple[str, str]]) -> dict[str, str]:
    env = {
        "LEDGER_DATABASE_URL": url,
        "LEDGER_HOME": home,
        "LEDGER_LOG_LEVEL": "warning",
        "LEDGER_LOG_FORMAT": "json",
    }
    if witnesses:
        env["LEDGER_WITNESSES"] = ",".join(f"{u} {k}" for u, k in witnesses)
        env["LEDGER_WITNESS_QUORUM"] = str(len(witnesses))
    return env


def _latency_row(b: Bench, url: str, home: str, ws: list[tuple[str, str]]) -> Row:
    row = Row(
        "witness.latency", "commit to quorum-cosigned checkpoint", "ledger + 2 witnesses", "ms"
    )
    keys = [cosignature.CosignerKey.parse(k) for _, k in ws]
    count = 5 if b.config.mode != "full" else 20
    agent = {"Authorization": f"Bearer {make_key(url, 'bench-w-agent', 'agent')}"}
    auditor = {"Authorization": f"Bearer {make_key(url, 'bench-w-auditor', 'auditor')}"}
    # as deployed: the witness submitter runs in `ledger tree`, beside the checkpointer
    with servers.ledger("run", _env(url, home, ws), 1) as port:
        base = f"http://127.0.0.1:{port}"
        all_ms: list[float] = []
        with httpx.Client(base_url=base, timeout=30) as c:
            for _ in range(b.config.reps):
                got: list[float] = []
                for _ in range(count):
                    t0 = time.perf_counter()
                    r = c.post(
                        "/tasks",
                        content=SUBMIT_BODY,
                        headers={**agent, "Content-Type": "application/json"},
                    )
                    position = int(r.json()["position"])
                    t_commit = time.perf_counter()
                    c.get("/audit/checkpoint", headers=auditor)  # asks for a fresh one
                    while True:
                        cp = c.get("/log/checkpoint")
                        if (
                            cp.status_code == 200
                            and int(cp.headers["x-ledger-tree-size"]) >= position
                            and len(cosignature.count_valid(cp.text, keys)[0]) == len(keys)
                        ):
                            break
                        if time.perf_counter() - t0 > 30:
                            raise RuntimeError(f"position {position} not cosigned in 30 s")
                        time.sleep(0.002)
                    got.append((time.perf_counter() - t_commit) * 1000)
                row.samples.append(statistics.median(got))
                all_ms += got
        s = sorted(all_ms)
        row.p50_ms = [s[len(s) // 2]]
        row.p99_ms = [s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]]
    row.note = f"{count} sequential commits per repetition; polls /log/checkpoint every 2 ms"
    return row


def _one(b: Bench, key: str, system: str, home: Path) -> Row:
    log_vkey = signing.create_key_file(home / "signing.key", ORIGIN).verifier.vkey
    with _witnesses(home, log_vkey) as ws, b.server.database(key.replace(".", "_")) as url:
        if key == "witness.latency":
            return _latency_row(b, url, str(home), ws)
        env = _env(url, str(home), ws if key.endswith(".on") else [])
        row = _http_rows(
            b, key, system, lambda w: servers.ledger("run", env, w), url, b.config.workers
        )
    row.workload = f"HTTP submit, {b.config.connections} conns, witnessing off/on"
    return row


def witnessing(b: Bench) -> list[Row]:
    """Each database its own log, so each gets witnesses of its own."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-witness-") as tmp:
        for key, system in (
            ("witness.latency", "ledger + 2 witnesses"),
            ("witness.http.off", "ledger, no witnesses"),
            ("witness.http.on", "ledger + 2 witnesses (quorum 2)"),
        ):
            home = Path(tmp) / key
            rows.append(_guard(key, "witnessing", system, lambda: _one(b, key, system, home)))  # noqa: B023
    return rows
