"""Erasure under load, on a real server and PostgreSQL: agents keep
submitting and working tasks about the subject and another one while the
subject is forgotten. Afterwards no key of the subject survives, nothing
about it is readable through the API, from any table or in the logs, and the
chain still verifies."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from psycopg import sql

from ledger.privacy.fields import MARK, envelopes
from tests.support import auth, ledger_process, wait_until

FORGOTTEN = "client:C-1042"
NAMES = {"C-1042": "Ada Lovelace", "C-7": "Grace Hopper"}
SECRET = "Ada Lovelace"


def payload(client_id: str) -> dict[str, Any]:
    return {"client_id": client_id, "client_name": NAMES[client_id], "date_of_birth": "1815-12-10"}


class Agents:
    """Agents in threads: submit, claim, record a step, complete; again."""

    def __init__(self, base: str, keyring: dict[str, str]) -> None:
        self.base, self.keyring = base, keyring
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.tasks: dict[str, str] = {}  # task id -> client id
        self.statuses: list[int] = []
        self.unexpected: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(4)]

    def run(self, i: int) -> None:
        agent, worker = self.keyring["agent"], self.keyring["agent2"]
        with httpx.Client(base_url=self.base, timeout=30) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                cid = "C-1042" if (i + n) % 2 else "C-7"
                body = {"task_type": "kyc_review", "payload": payload(cid)}
                r = c.post("/tasks", json=body, headers=auth(agent))
                self.saw(r)
                if r.status_code != 201:
                    continue
                tid = r.json()["id"]
                with self.lock:
                    self.tasks[tid] = cid
                for path, b in (
                    ("claim", None),
                    ("steps", {"kind": "note", "content": f"checked {NAMES[cid]}"}),
                    ("complete", {"result": {"findings": f"{NAMES[cid]} is fine"}}),
                ):
                    r = c.post(f"/tasks/{tid}/{path}", json=b, headers=auth(worker))
                    self.saw(r)
                    if r.status_code >= 300:
                        break

    def saw(self, r: httpx.Response) -> None:
        with self.lock:
            self.statuses.append(r.status_code)
            # 409: the subject was forgotten meanwhile, nothing more is recorded about it
            if r.status_code not in (200, 201, 409):
                self.unexpected.append(f"{r.status_code} {r.text}")


def test_erase_under_load(
    db_url: str,
    tmp_path: Path,
    keyring: dict[str, str],
    super_conn: psycopg.Connection[Any],
) -> None:
    logs = tmp_path / "ledger.log"
    home = tmp_path / "home"
    run = ledger_process(
        "run", db_url, home, logs, LEDGER_LOG_LEVEL="debug", LEDGER_LOG_FORMAT="json"
    )
    with run as (_proc, base):
        agents = Agents(base, keyring)
        for t in agents.threads:
            t.start()
        try:
            wait_until(lambda: len(agents.tasks) >= 12, timeout=60, what="tasks under way")
            with httpx.Client(base_url=base, timeout=30) as c:
                r = c.post(
                    "/privacy/erasures",
                    json={"subject": FORGOTTEN, "reason": "art. 17 request 88"},
                    headers=auth(keyring["officer"]),
                )
                assert r.status_code == 201, r.text
                eid = r.json()["id"]
                r = c.post(
                    f"/privacy/erasures/{eid}/approve",
                    json={"comment": "verified"},
                    headers=auth(keyring["admin"]),
                )
                assert r.status_code == 200, r.text
                seen = len(agents.statuses)
                wait_until(lambda: len(agents.statuses) >= seen + 40, timeout=60, what="more load")
        finally:
            agents.stop.set()
            for t in agents.threads:
                t.join(timeout=60)
        assert not agents.unexpected, agents.unexpected[:3]
        assert 409 in agents.statuses  # the load did run into the erasure

        with httpx.Client(base_url=base, timeout=30) as c:
            verified = c.get("/audit/verify", headers=auth(keyring["auditor"])).json()
            assert verified["ok"] is True, verified
            for tid, cid in agents.tasks.items():
                got = c.get(f"/tasks/{tid}", headers=auth(keyring["officer"])).json()
                name = got["payload"]["client_name"]
                if cid == "C-1042":
                    assert name[MARK]["status"] == "erased", got
                else:
                    assert name == NAMES[cid]
            officer_events = c.get("/events?limit=1000", headers=auth(keyring["officer"])).text
            assert SECRET not in officer_events and NAMES["C-7"] in officer_events
            export = c.get("/audit/export", headers=auth(keyring["auditor"])).content
            assert SECRET.encode() not in export

    # every key of the subject is destroyed, and every value sealed for it used one of them
    live = super_conn.execute(
        "SELECT count(*) FROM data_keys WHERE subject = %s AND wrapped IS NOT NULL", (FORGOTTEN,)
    ).fetchone()[0]
    assert live == 0
    destroyed = {
        k
        for (k,) in super_conn.execute(
            "SELECT key_id FROM data_keys WHERE subject = %s", (FORGOTTEN,)
        ).fetchall()
    }
    sealed_for_subject = 0
    for (raw,) in super_conn.execute("SELECT canonical FROM events").fetchall():
        for inner in envelopes(orjson.loads(bytes(raw))["data"]):
            if inner["subject"] == FORGOTTEN:
                sealed_for_subject += 1
                assert inner["kid"] in destroyed
    assert sealed_for_subject >= 12

    # no table holds the plaintext, as text or as bytes
    assert_nowhere_in_database(super_conn, SECRET)
    # nor did any log line of the service (its API and its projections) carry it
    logged = logs.read_text()
    assert '"service_started"' in logged and '"events_appended"' in logged  # logs were kept
    assert SECRET not in logged and SECRET.encode().hex() not in logged


def assert_nowhere_in_database(conn: psycopg.Connection[Any], secret: str) -> None:
    """Every row of every table, as text (bytea shows as hex): no ``secret``."""
    needles = (secret, secret.encode().hex())
    tables = conn.execute(
        "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
    ).fetchall()
    assert len(tables) > 10
    for (table,) in tables:
        for needle in needles:
            query = sql.SQL("SELECT count(*) FROM {} t WHERE strpos(t::text, %s) > 0").format(
                sql.SQL(table)
            )
            hit = conn.execute(query, (needle,)).fetchone()[0]
            assert hit == 0, f"{table} holds {secret!r}"
