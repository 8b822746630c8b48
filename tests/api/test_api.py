"""The HTTP surface of the core (SPEC §1, §2, §4): authentication and roles,
who is recorded, bad input refused with nothing written, the event log,
incremental verification, the export bundle and key revocation."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledger.settings import Settings
from tests.support import app_with_runner, auth, ledger_verify

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "jcs.json").read_text())
PROBLEM = "application/problem+json"
AS_JSON = {"Content-Type": "application/json"}


def head(client: Any, key: str) -> dict[str, Any]:
    r = client.get("/audit/head", headers=auth(key))
    assert r.status_code == 200
    return dict(r.json())


def assert_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = dict(r.json())
    assert body["status"] == status
    assert body["type"].startswith("https://") and body["title"] and body["detail"]
    return body


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer lk_not-a-key"},
    ],
    ids=["none", "basic", "empty", "unknown"],
)
def test_401_problem(client: Any, keyring: dict[str, str], headers: dict[str, str]) -> None:
    for method, path in (("GET", "/audit/head"), ("GET", "/events"), ("POST", "/admin/keys")):
        r = client.request(method, path, headers=headers, json={"name": "x", "role": "agent"})
        assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("role", "method", "path"),
    [
        ("agent", "GET", "/events"),
        ("agent", "GET", "/audit/verify"),
        ("agent", "GET", "/audit/export"),
        ("officer", "GET", "/audit/export"),
        ("officer", "GET", "/audit/verify"),
        ("agent", "POST", "/admin/keys"),
        ("auditor", "POST", "/admin/keys"),
        ("officer", "POST", "/admin/keys/agent-1/revoke"),
        ("auditor", "GET", "/admin/keys"),
    ],
)
def test_403_problem(
    client: Any, keyring: dict[str, str], role: str, method: str, path: str
) -> None:
    before = head(client, keyring["auditor"])
    r = client.request(
        method, path, headers=auth(keyring[role]), json={"name": "sneaky", "role": "admin"}
    )
    body = assert_problem(r, 403)
    assert role in body["detail"]
    assert head(client, keyring["auditor"]) == before


def test_health_needs_no_key(client: Any) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_actor_and_role_come_from_the_key(client: Any, keyring: dict[str, str]) -> None:
    r = client.post(
        "/admin/keys",
        headers={**auth(keyring["admin"]), "X-Request-Id": "req-who-1"},
        json={
            "name": "new-agent",
            "role": "agent",
            "actor": "mallory",
            "meta": {"actor": "mallory", "role": "admin", "request_id": "forged"},
        },
    )
    assert r.status_code == 201, r.text
    position = r.json()["position"]
    page = client.get(
        "/events", params={"after": position - 1, "limit": 1}, headers=auth(keyring["auditor"])
    ).json()
    (event,) = page["items"]
    assert event["position"] == position
    assert event["meta"] == {"actor": "admin-1", "role": "admin", "request_id": "req-who-1"}
    assert "mallory" not in json.dumps(event)


def _refused_bodies() -> Iterator[Any]:
    for case in VECTORS["refused"]:
        raw = '{"name":"zz-refused","role":"agent","x":' + case["input"] + "}"
        yield pytest.param(raw, "x.", None, id=case["why"])
    yield pytest.param(
        '{"name":"zz","role":"agent","n":9007199254740992}', "n", "safe_integer", id="2^53"
    )
    yield pytest.param('{"name":"zz","role":"agent","f":1e999}', "f", "finite_number", id="1e999")
    yield pytest.param('{"name":"zz","role":"boss"}', "role", None, id="bad-role")
    yield pytest.param('{"name":"Zz Top","role":"agent"}', "name", None, id="bad-name")
    yield pytest.param('{"role":"agent"}', "name", "missing", id="missing-name")
    yield pytest.param('{"name":"zz","role":', "", None, id="not-json")
    # a lone surrogate in a key, nested and at the top: the problem names it escaped
    yield pytest.param(
        '{"name":"zz","role":"agent","x":{"\\ud83d":1}}',
        "x.\\ud83d",
        "lone_surrogate",
        id="surrogate-key-nested",
    )
    yield pytest.param(
        '{"name":"zz","role":"agent","\\udc00k":1}',
        "\\udc00k",
        "lone_surrogate",
        id="surrogate-key",
    )


@pytest.mark.parametrize(("raw", "field", "rule"), list(_refused_bodies()))
def test_bad_input_is_422_naming_field_and_rule_and_writes_nothing(
    client: Any, keyring: dict[str, str], raw: str, field: str, rule: str | None
) -> None:
    before = head(client, keyring["auditor"])
    r = client.post(
        "/admin/keys",
        headers={**auth(keyring["admin"]), "Content-Type": "application/json"},
        content=raw.encode("utf-8", "surrogatepass"),
    )
    body = assert_problem(r, 422)
    assert body["errors"], body
    err = body["errors"][0]
    assert err["field"].startswith(field), body
    assert err["rule"], body
    if rule:
        assert err["rule"] == rule, body
    assert head(client, keyring["auditor"]) == before
    names = [p["name"] for p in client.get("/admin/keys", headers=auth(keyring["admin"])).json()]
    assert not any(n.startswith("zz") for n in names)


def _nested(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


def test_nesting_limit(client: Any, keyring: dict[str, str]) -> None:
    """The body's object is level 1; 32 levels are accepted, 33 are not."""
    ok = '{"name":"deep-ok","role":"agent","x":' + _nested(31) + "}"
    r = client.post("/admin/keys", headers={**auth(keyring["admin"]), **AS_JSON}, content=ok)
    assert r.status_code == 201, r.text
    before = head(client, keyring["auditor"])
    for levels in (32, 5000):
        bad = '{"name":"deep-bad","role":"agent","x":' + _nested(levels) + "}"
        r = client.post("/admin/keys", headers={**auth(keyring["admin"]), **AS_JSON}, content=bad)
        body = assert_problem(r, 422)
        assert body["errors"][0]["rule"] == "max_depth", body
    assert head(client, keyring["auditor"]) == before


def test_body_over_the_limit_is_422_and_writes_nothing(
    client: Any, keyring: dict[str, str]
) -> None:
    before = head(client, keyring["auditor"])
    big = json.dumps({"name": "big", "role": "agent", "pad": "x" * (256 * 1024)}).encode()
    r = client.post("/admin/keys", headers={**auth(keyring["admin"]), **AS_JSON}, content=big)
    body = assert_problem(r, 422)  # SPEC §1: bodies over the limit are refused with 422
    assert body["type"].endswith("/payload-too-large") and body["instance"] == "/admin/keys"
    assert body["errors"][0]["field"] == "body" and "262144 bytes" in body["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for i in range(0, len(big), 16 * 1024):
            yield big[i : i + 16 * 1024]

    r = client.post("/admin/keys", headers={**auth(keyring["admin"]), **AS_JSON}, content=chunks())
    body = assert_problem(r, 422)
    assert body["type"].endswith("/payload-too-large") and body["errors"][0]["field"] == "body"
    assert head(client, keyring["auditor"]) == before
    # just under the limit is fine
    small = json.dumps({"name": "big", "role": "agent", "pad": "x" * (255 * 1024)}).encode()
    r = client.post("/admin/keys", headers={**auth(keyring["admin"]), **AS_JSON}, content=small)
    assert r.status_code == 201, r.text


def test_events_pagination(client: Any, keyring: dict[str, str]) -> None:
    for i in range(4):
        r = client.post(
            "/admin/keys", headers=auth(keyring["admin"]), json={"name": f"p{i}", "role": "agent"}
        )
        assert r.status_code == 201
    total = head(client, keyring["auditor"])["position"]
    assert total == 9
    seen: list[int] = []
    after = 0
    while True:
        r = client.get(
            "/events", params={"after": after, "limit": 2}, headers=auth(keyring["officer"])
        )
        assert r.status_code == 200
        page = r.json()
        assert len(page["items"]) <= 2
        if not page["items"]:
            assert page["next_after"] == after
            break
        seen.extend(e["position"] for e in page["items"])
        assert page["next_after"] == page["items"][-1]["position"]
        after = page["next_after"]
    assert seen == list(range(1, total + 1))
    everything = client.get("/events", params={"limit": 1000}, headers=auth(keyring["auditor"]))
    items = everything.json()["items"]
    assert [e["position"] for e in items] == seen
    assert all(e["prev_hash"] == p["hash"] for p, e in itertools.pairwise(items))
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}):
        assert_problem(client.get("/events", params=bad, headers=auth(keyring["auditor"])), 422)


def test_verify_is_incremental(client: Any, keyring: dict[str, str]) -> None:
    key = auth(keyring["auditor"])
    first = client.get("/audit/verify", headers=key).json()
    assert first["ok"] and first["checked"] == 5
    assert (first["verified_from"], first["verified_to"]) == (1, 5)
    assert first["head_hash"] == head(client, keyring["auditor"])["hash"]
    assert first["first_bad_position"] is None and first["reason"] is None

    for name in ("inc-1", "inc-2"):
        r = client.post(
            "/admin/keys", headers=auth(keyring["admin"]), json={"name": name, "role": "agent"}
        )
        assert r.status_code == 201
    second = client.get("/audit/verify", headers=key).json()
    assert second["ok"] and second["checked"] == 2
    assert (second["verified_from"], second["verified_to"]) == (1, 7)
    assert second["head_hash"] == head(client, keyring["auditor"])["hash"]
    assert first["rechecked"] == 0 and second["rechecked"] == 5  # 1..5 verified before

    third = client.get("/audit/verify", headers=key).json()
    assert third["ok"] and third["checked"] == 0 and third["verified_to"] == 7
    assert third["rechecked"] == 2  # the sweep goes on with 6..7, then starts over
    assert client.get("/audit/verify", headers=key).json()["rechecked"] == 7

    full = client.get("/audit/verify", params={"from": 1}, headers=key).json()
    assert full["ok"] and full["checked"] == 7
    part = client.get("/audit/verify", params={"from": 3, "to": 4}, headers=key).json()
    assert part["ok"] and part["checked"] == 2
    assert (part["verified_from"], part["verified_to"]) == (3, 4)
    assert_problem(client.get("/audit/verify", params={"from": 4, "to": 3}, headers=key), 422)


def test_export_is_streamed_ndjson_that_verifies(
    client: Any, keyring: dict[str, str], tmp_path: Path
) -> None:
    h = head(client, keyring["auditor"])
    lines: list[bytes] = []
    with client.stream("GET", "/audit/export", headers=auth(keyring["auditor"])) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert "content-length" not in r.headers  # streamed, not buffered
        for line in r.iter_lines():
            lines.append(line.encode())
    events = [json.loads(line) for line in lines if line]
    assert [e["position"] for e in events] == list(range(1, h["position"] + 1))
    assert events[-1]["hash"] == h["hash"]
    bundle = tmp_path / "all.ndjson"
    bundle.write_bytes(b"".join(line + b"\n" for line in lines))
    proc = ledger_verify(bundle, "--expect-head", f"{h['position']}:{h['hash']}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"OK: positions 1..{h['position']}")

    part = client.get(
        "/audit/export", params={"from": 2, "to": 3}, headers=auth(keyring["auditor"])
    )
    assert [json.loads(x)["position"] for x in part.text.splitlines()] == [2, 3]
    bundle.write_bytes(part.content)
    assert ledger_verify(bundle).returncode == 1  # a range needs its anchor
    proc = ledger_verify(bundle, "--anchor", events[0]["hash"])
    assert proc.returncode == 0, proc.stdout


@pytest.fixture
def uncached(settings: Settings) -> Iterator[Any]:
    """A client of a service that looks every key up afresh (no auth cache)."""
    with TestClient(app_with_runner(settings.model_copy(update={"auth_cache_seconds": 0}))) as c:
        yield c


def test_revoked_key_stops_working(uncached: Any, keyring: dict[str, str]) -> None:
    client = uncached
    admin = auth(keyring["admin"])
    r = client.post("/admin/keys", headers=admin, json={"name": "temp", "role": "auditor"})
    assert r.status_code == 201
    temp = r.json()["key"]
    assert client.get("/audit/head", headers=auth(temp)).status_code == 200
    # a reason jsonb cannot hold (U+0000) is still fine on the chain
    r = client.post("/admin/keys/temp/revoke", headers=admin, json={"reason": "left\u0000"})
    assert r.status_code == 200, r.text
    revoked_at = r.json()["position"]
    assert_problem(client.get("/audit/head", headers=auth(temp)), 401)
    assert_problem(client.post("/admin/keys/temp/revoke", headers=admin, json={}), 409)
    assert_problem(client.post("/admin/keys/nobody/revoke", headers=admin, json={}), 404)
    page = client.get(
        "/events", params={"after": revoked_at - 1}, headers=auth(keyring["auditor"])
    ).json()
    event = page["items"][0]
    assert event["type"] == "PrincipalKeyRevoked"
    assert event["stream"] == "principal-temp"
    assert event["data"] == {"name": "temp", "reason": "left\u0000"}
    assert event["meta"]["actor"] == "admin-1"
    listed = {p["name"]: p for p in client.get("/admin/keys", headers=admin).json()}
    assert listed["temp"]["revoked_position"] == revoked_at


def test_keys_are_not_replaced_silently_and_reserved_names_refused(
    uncached: Any, keyring: dict[str, str]
) -> None:
    client = uncached
    admin = auth(keyring["admin"])
    r = client.post("/admin/keys", headers=admin, json={"name": "desk-1", "role": "agent"})
    assert r.status_code == 201
    first = r.json()["key"]
    before = head(client, keyring["auditor"])
    again = client.post("/admin/keys", headers=admin, json={"name": "desk-1", "role": "officer"})
    assert '"replace": true' in assert_problem(again, 409)["detail"]
    for name in ("ledger-service", "operator", "service"):
        r = client.post("/admin/keys", headers=admin, json={"name": name, "role": "admin"})
        assert assert_problem(r, 422)["errors"][0]["rule"] == "reserved"
    assert head(client, keyring["auditor"]) == before
    assert client.get("/audit/head", headers=auth(first)).status_code == 200

    body = {"name": "desk-1", "role": "agent", "replace": True}
    r = client.post("/admin/keys", headers=admin, json=body)
    assert r.status_code == 201, r.text
    assert_problem(client.get("/audit/head", headers=auth(first)), 401)  # the old key is gone
    assert client.get("/audit/head", headers=auth(r.json()["key"])).status_code == 200

    # after a revocation the name may be given a key again, no replace needed
    assert client.post("/admin/keys/desk-1/revoke", headers=admin, json={}).status_code == 200
    r = client.post("/admin/keys", headers=admin, json={"name": "desk-1", "role": "agent"})
    assert r.status_code == 201, r.text


def test_openapi_tells_errors_as_they_are_sent(client: Any) -> None:
    """Every error answer is described as problem+json with the Problem schema,
    /health (no credentials) lists no 401/403, and reads list no 409/412."""
    spec = client.get("/openapi.json").json()
    seen = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if int(status) >= 400 and "content" in answer and path != "/health":
                    assert list(answer["content"]) == ["application/problem+json"], (path, status)
                    assert answer["content"]["application/problem+json"]["schema"] == {
                        "$ref": "#/components/schemas/Problem"
                    }
                    seen += 1
            if method == "get":
                assert "409" not in op["responses"] and "412" not in op["responses"], path
    assert seen > 20
    health = spec["paths"]["/health"]["get"]["responses"]
    assert "401" not in health and "403" not in health and "503" in health
    audit_head = spec["paths"]["/audit/head"]["get"]["responses"]
    assert "401" in audit_head and "403" in audit_head
    submit = spec["paths"]["/tasks"]["post"]["responses"]
    assert "404" not in submit and "503" in submit  # nothing to miss; busy is possible
    assert "404" in spec["paths"]["/tasks/{task_id}/claim"]["post"]["responses"]
    inclusion = spec["paths"]["/audit/proof/inclusion"]["get"]["responses"]
    assert {"422", "503"} <= set(inclusion)


def test_a_slow_export_reader_holds_no_transaction_and_gets_every_event(
    db_url: str, service_conn: Any, tmp_path: Path
) -> None:
    """The export reads page by page, each page in its own short read: a
    consumer that takes its time between pages (longer than the service
    role's idle-in-transaction timeout, which ended a long cursor and cut the
    bundle short) leaves no session idle in a transaction, and still gets
    every event."""
    import asyncio

    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from ledger import db, store
    from tests.support import append_events

    append_events(service_conn, 25)

    def idle_in_transaction() -> int:
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%'"
            ).fetchone()
            return int(row[0]) if row else 0

    async def over_the_pool() -> list[bytes]:
        pages: list[bytes] = []
        async with AsyncConnectionPool(
            db.service_conninfo(db_url), min_size=1, max_size=2, kwargs={"autocommit": True}
        ) as pool:
            async for page in store.export_pages(pool, 1, 25, page=10):
                pages.append(page)
                assert await asyncio.to_thread(idle_in_transaction) == 0  # between pages
        return pages

    got = asyncio.run(over_the_pool())
    assert len(got) == 3
    bundle = tmp_path / "paged.ndjson"
    bundle.write_bytes(b"".join(got))
    proc = ledger_verify(bundle)
    assert proc.returncode == 0 and proc.stdout.startswith("OK: positions 1..25"), proc.stdout


def test_a_wrong_method_is_a_405_problem_that_says_what_is_allowed(
    client: Any, keyring: dict[str, str]
) -> None:
    r = client.delete("/audit/head", headers=auth(keyring["auditor"]))
    assert_problem(r, 405)
    assert r.headers["allow"] == "GET"


def test_the_service_tunes_the_collector_while_it_runs_and_restores_it(settings: Settings) -> None:
    import gc

    before = gc.get_threshold()
    tuned = settings.model_copy(update={"gc_threshold": 12_345})
    with TestClient(app_with_runner(tuned)):
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > 0  # what the started service holds is out of the way
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
