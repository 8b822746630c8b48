"""Security checks as tests: the role x endpoint matrix of SPEC §4 (parsed from
docs/SPEC.md, so the table and the service cannot drift apart), every cell's
status asserted and nothing written on a refusal; revoked and replaced keys
refused everywhere; API keys never in the logs; the actor never taken from
the body."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ledger.settings import Settings
from tests.support import ROOT, app_with_runner, auth, ledger_process

ROLES = ("agent", "officer", "auditor", "admin")


def spec_rows() -> dict[tuple[str, str], set[str]]:
    """(METHOD, path) -> roles, from the table of SPEC §4 ('any': every role)."""
    text = (ROOT / "docs" / "SPEC.md").read_text()
    section = text.split("## 4. HTTP API", 1)[1].split("\n## ", 1)[0]
    out: dict[tuple[str, str], set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        tokens = re.findall(r"`([^`]*)`", cells[0])
        method, first = tokens[0].split(" ", 1)
        paths = [first.split("?", 1)[0]]
        parent = paths[0].rsplit("/", 1)[0]
        paths += [parent + t for t in tokens[1:] if t.startswith("/")]
        roles = set(ROLES) if cells[1] == "any" else {r.strip() for r in cells[1].split(",")}
        for path in paths:
            out[(method, path.replace("{id}", "{task_id}"))] = roles
    return out


@dataclass(frozen=True)
class Cell:
    """How to call one route as it should succeed: the state the task must be
    in first (made by agent-1, the 'agent' key), the body, the success status."""

    setup: str  # none, queued, running, awaiting, failed
    body: dict[str, Any] | None
    ok: int
    query: Callable[[dict[str, Any]], dict[str, Any]] | None = None


CELLS: dict[tuple[str, str], Cell] = {
    ("POST", "/tasks"): Cell("none", {"task_type": "t", "payload": {"a": 1}}, 201),
    ("POST", "/tasks/claim"): Cell("queued", {}, 200),
    ("POST", "/tasks/{task_id}/claim"): Cell("queued", {}, 200),
    ("POST", "/tasks/{task_id}/lease"): Cell("running", {}, 200),
    ("POST", "/tasks/{task_id}/steps"): Cell("running", {"kind": "note", "content": "x"}, 201),
    ("POST", "/tasks/{task_id}/approval-request"): Cell("running", {"reason": "r"}, 200),
    ("POST", "/tasks/{task_id}/approve"): Cell("awaiting", {"comment": "c"}, 200),
    ("POST", "/tasks/{task_id}/reject"): Cell("awaiting", {"comment": "c"}, 200),
    ("POST", "/tasks/{task_id}/complete"): Cell("running", {"result": {}}, 200),
    ("POST", "/tasks/{task_id}/fail"): Cell("running", {"error": "e", "retryable": True}, 200),
    ("POST", "/tasks/{task_id}/requeue"): Cell("failed", {"reason": "r"}, 200),
    ("POST", "/tasks/{task_id}/cancel"): Cell("queued", {"reason": "r"}, 200),
    ("GET", "/tasks/{task_id}"): Cell("queued", None, 200),
    ("GET", "/tasks"): Cell("none", None, 200),
    ("GET", "/tasks/{task_id}/events"): Cell("queued", None, 200),
    ("GET", "/tasks/{task_id}/replay"): Cell(
        "queued", None, 200, query=lambda t: {"position": t["position"]}
    ),
    ("GET", "/events"): Cell("none", None, 200),
    ("GET", "/audit/head"): Cell("none", None, 200),
    ("GET", "/audit/verify"): Cell("none", None, 200),
    ("GET", "/audit/export"): Cell("none", None, 200),
}
# Beyond SPEC §4's table: keys are the admin's (SPEC §4, roles).
EXTRA: dict[tuple[str, str], set[str]] = {
    ("GET", "/admin/keys"): {"admin"},
    ("POST", "/admin/keys"): {"admin"},
}
CELLS[("GET", "/admin/keys")] = Cell("none", None, 200)
CELLS[("POST", "/admin/keys")] = Cell("none", {"name": "new-key", "role": "agent"}, 201)


def matrix() -> Iterator[tuple[str, str, str, bool]]:
    rows = {**spec_rows(), **EXTRA}
    for (method, path), roles in sorted(rows.items()):
        for role in ROLES:
            yield method, path, role, role in roles


def test_the_matrix_covers_every_row_of_spec_section_4() -> None:
    rows = spec_rows()
    assert len(rows) == 20, sorted(rows)
    assert set(rows) <= set(CELLS), set(rows) - set(CELLS)
    assert rows[("POST", "/tasks/{task_id}/cancel")] == {"agent", "officer"}
    assert rows[("GET", "/tasks/{task_id}/replay")] == {"officer", "auditor"}
    assert rows[("GET", "/audit/head")] == set(ROLES)


class Ledger:
    """The client and keys, and tasks in the states the cells need."""

    def __init__(self, client: Any, keys: dict[str, str]) -> None:
        self.c, self.keys = client, keys

    def head(self) -> dict[str, Any]:
        return dict(self.c.get("/audit/head", headers=auth(self.keys["auditor"])).json())

    def task(self, state: str) -> dict[str, Any]:
        agent = auth(self.keys["agent"])
        r = self.c.post("/tasks", headers=agent, json={"task_type": "t", "payload": {}})
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        steps = {
            "queued": [],
            "running": ["claim"],
            "awaiting": ["claim", "approval-request"],
            "failed": ["claim", "fail"],
        }[state]
        bodies = {
            "claim": {},
            "approval-request": {"reason": "r"},
            "fail": {"error": "e", "retryable": True},
        }
        out = r.json()
        for step in steps:
            r = self.c.post(f"/tasks/{tid}/{step}", headers=agent, json=bodies[step])
            assert r.status_code == 200, r.text
            out = r.json()
        return {"id": tid, "position": out["position"]}


def _request(ledger: Ledger, method: str, path: str, cell: Cell) -> Callable[[str], Any]:
    """Make the state the cell needs; returns the call to make with a key."""
    task = ledger.task(cell.setup) if cell.setup != "none" else None
    url = path.replace("{task_id}", task["id"]) if task else path
    params = cell.query(task) if cell.query and task else None
    return lambda key: ledger.c.request(
        method, url, headers=auth(key), json=cell.body, params=params
    )


@pytest.fixture
def ledger(client: Any, keyring: dict[str, str]) -> Ledger:
    return Ledger(client, keyring)


def test_every_cell_of_the_role_matrix(ledger: Ledger) -> None:
    """Each role on each route: the success status where SPEC §4 admits it,
    else a 403 problem with nothing written."""
    wrong: list[str] = []
    for method, path, role, allowed in matrix():
        cell = CELLS[(method, path)]
        if cell.body and "name" in cell.body:
            cell = Cell(cell.setup, {**cell.body, "name": f"new-{role}"}, cell.ok)
        call = _request(ledger, method, path, cell)
        before = ledger.head()
        r = call(ledger.keys[role])
        expected = cell.ok if allowed else 403
        if r.status_code != expected:
            wrong.append(
                f"{role} {method} {path}: {r.status_code} (expected {expected}) {r.text[:200]}"
            )
            continue
        if not allowed:
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["status"] == 403
            if ledger.head() != before:
                wrong.append(f"{role} {method} {path}: refused but the ledger moved")
    assert not wrong, "\n".join(wrong)


@pytest.fixture
def uncached(settings: Settings, keyring: dict[str, str]) -> Iterator[Ledger]:
    """A service that looks every key up afresh (a revocation made by another
    process shows at once), with the shared keys."""
    with TestClient(app_with_runner(settings.model_copy(update={"auth_cache_seconds": 0}))) as c:
        yield Ledger(c, keyring)


def test_revoked_and_replaced_keys_are_refused_everywhere(uncached: Ledger) -> None:
    ledger = uncached
    admin = auth(ledger.keys["admin"])
    gone: dict[str, str] = {}
    for role in ROLES:
        r = ledger.c.post("/admin/keys", headers=admin, json={"name": f"old-{role}", "role": role})
        assert r.status_code == 201, r.text
        gone[f"revoked {role}"] = r.json()["key"]
        assert (
            ledger.c.post(f"/admin/keys/old-{role}/revoke", headers=admin, json={}).status_code
            == 200
        )
        r = ledger.c.post("/admin/keys", headers=admin, json={"name": f"re-{role}", "role": role})
        replaced = r.json()["key"]
        body = {"name": f"re-{role}", "role": role, "replace": True}
        assert ledger.c.post("/admin/keys", headers=admin, json=body).status_code == 201
        gone[f"replaced {role}"] = replaced
    before = ledger.head()
    task = ledger.task("queued")
    before = ledger.head()
    for (method, path), cell in sorted(CELLS.items()):
        url = path.replace("{task_id}", task["id"])
        for what, key in gone.items():
            r = ledger.c.request(method, url, headers=auth(key), json=cell.body)
            assert r.status_code == 401, (what, method, path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
    assert ledger.head() == before


def test_api_keys_never_reach_the_logs(
    db_url: str, keyring: dict[str, str], tmp_path: Path
) -> None:
    """A real ``ledger serve`` logging at debug; requests with good, unknown,
    revoked and malformed keys, successes, refusals and errors: no key (nor
    its secret part) appears in any line it wrote."""
    log = tmp_path / "serve.log"
    unknown = "lk_" + "x" * 43
    with (
        ledger_process(
            "serve",
            db_url,
            tmp_path / "home",
            output=log,
            LEDGER_LOG_LEVEL="debug",
            LEDGER_LOG_FORMAT="json",
        ) as (_proc, base),
        httpx.Client(base_url=base, timeout=30) as c,
    ):
        ledger = Ledger(c, keyring)
        admin = auth(keyring["admin"])
        made = c.post("/admin/keys", headers=admin, json={"name": "logged", "role": "agent"})
        fresh = made.json()["key"]
        assert c.post("/admin/keys/logged/revoke", headers=admin, json={}).status_code == 200
        task = ledger.task("running")
        for key in [*keyring.values(), unknown, fresh]:
            for method, path in (
                ("GET", "/audit/head"),
                ("GET", "/admin/keys"),
                ("GET", "/events"),
            ):
                c.request(method, path, headers=auth(key))
            c.post(f"/tasks/{task['id']}/steps", headers=auth(key), json={"kind": "bad"})
            c.get("/audit/head", headers={"Authorization": key})  # no scheme
            c.get("/audit/head", headers={"Authorization": f"Basic {key}"})
            c.get("/audit/head", params={"api_key": key})  # a key misplaced in the URL
    text = log.read_text()
    assert text.count("\n") > 40 and "/audit/head" in text, text[:500]  # requests were logged
    for key in [*keyring.values(), unknown, fresh]:
        assert key[3:] not in text, key


def test_the_actor_is_never_taken_from_the_body(ledger: Ledger) -> None:
    """Fields naming someone else in a command's body are refused or ignored;
    the recorded actor and role are the key's."""
    agent = auth(ledger.keys["agent"])
    forged = {"actor": "mallory", "meta": {"actor": "mallory", "role": "admin"}}
    r = ledger.c.post("/tasks", headers=agent, json={"task_type": "t", "payload": forged})
    assert r.status_code == 201, r.text
    r2 = ledger.c.post(
        "/tasks", headers=agent, json={"task_type": "t", "payload": {}, "actor": "mallory"}
    )
    assert r2.status_code == 422  # no such field: refused, not ignored
    events = ledger.c.get(f"/tasks/{r.json()['id']}/events", headers=agent).json()
    assert events[0]["meta"]["actor"] == "agent-1" and events[0]["meta"]["role"] == "agent"
    assert events[0]["data"]["payload"] == forged  # kept as content, never as who
    task = ledger.c.get(f"/tasks/{r.json()['id']}", headers=agent).json()
    assert task["agent_name"] == "agent-1"
    assert "mallory" not in json.dumps(events[0]["meta"])


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe{}", b'{"task_type":"t","payload":{"s":"\xc3"}}', b"\x80"]
)
def test_a_body_that_is_not_utf8_is_a_422_and_writes_nothing(ledger: Ledger, raw: bytes) -> None:
    """Found by the fuzzer: the framework's parser answered a bare 400."""
    before = ledger.head()
    r = ledger.c.post(
        "/tasks",
        headers={**auth(ledger.keys["agent"]), "Content-Type": "application/json"},
        content=raw,
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["rule"] in ("json", "json_invalid"), r.json()
    assert ledger.head() == before
