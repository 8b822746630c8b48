"""POST /tasks answered by ledger/api/fast_submit.py and by the FastAPI route
give the same answers: the same statuses, headers and bodies, the same events,
the same idempotency binding. Two apps on one database, one with the fast
path and one without (LEDGER_FAST_SUBMIT=false)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from ledger.api.app import create_app
from ledger.api.fast_submit import FastSubmit
from ledger.settings import Settings

BODY = {"task_type": "position_check", "payload": {"symbol": "AAPL", "quantity": 250}}
# values that differ from one request to the next
VARYING = {"x-request-id", "location", "etag", "date"}


def _fast_layer(app: Any) -> FastSubmit:
    layer = app.middleware_stack
    while not isinstance(layer, FastSubmit):
        layer = layer.app
    return layer


@pytest.fixture
def two(settings: Settings) -> Iterator[tuple[Any, Any, FastSubmit, FastSubmit]]:
    slow_settings = settings.model_copy(update={"fast_submit": False})
    fast_app, slow_app = create_app(settings), create_app(slow_settings)
    with TestClient(fast_app) as fast, TestClient(slow_app) as slow:
        yield fast, slow, _fast_layer(fast_app), _fast_layer(slow_app)


def _send(client: Any, key: str | None, body: Any, **headers: str) -> Any:
    """POST /tasks; a header given as "-" is left out; ``chunked=...`` sends
    the body in pieces of that many bytes (no Content-Length)."""
    chunk = int(headers.pop("chunked", 0))
    h = {"Content-Type": "application/json", **headers}
    h = {k: v for k, v in h.items() if v != "-"}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if chunk:
        pieces = iter([raw[i : i + chunk] for i in range(0, len(raw), chunk)])
        return client.post("/tasks", content=pieces, headers=h)
    return client.post("/tasks", content=raw, headers=h)


def _shape(r: Any) -> tuple[int, list[tuple[str, str]], Any]:
    headers = [
        (k, "…" if k in VARYING else v)
        for k, v in r.headers.multi_items()
        if k != "content-length" or not r.headers.get("content-type", "").endswith("json")
    ]
    body = r.json() if r.content else None
    if isinstance(body, dict) and r.status_code == 201:
        body = {k: type(v).__name__ if k in ("id", "position") else v for k, v in body.items()}
    return r.status_code, headers, body


def test_a_submission_answers_alike_on_both_paths(
    two: tuple[Any, Any, FastSubmit, FastSubmit], keyring: dict[str, str]
) -> None:
    fast, slow, layer, off = two
    a, b = _send(fast, keyring["agent"], BODY), _send(slow, keyring["agent"], BODY)
    assert a.status_code == 201, a.text
    assert layer.served == 1 and off.served == 0
    assert _shape(a) == _shape(b)
    assert a.headers["location"] == f"/tasks/{a.json()['id']}"
    assert a.headers["etag"] == '"1"'
    assert a.json()["position"] + 1 == b.json()["position"]


def test_an_idempotency_key_binds_alike_on_both_paths(
    two: tuple[Any, Any, FastSubmit, FastSubmit], keyring: dict[str, str]
) -> None:
    fast, slow, layer, _ = two
    key = keyring["agent"]
    first = _send(fast, key, BODY, **{"Idempotency-Key": "order-7"})
    again = _send(fast, key, BODY, **{"Idempotency-Key": "order-7"})
    other_path = _send(slow, key, BODY, **{"Idempotency-Key": "order-7"})
    assert first.status_code == again.status_code == other_path.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json() == again.json() == other_path.json()
    assert _shape(again) == _shape(other_path)
    # and the other way round: a key first used through the route replays here
    slow_first = _send(slow, key, BODY, **{"Idempotency-Key": "order-8", "If-Match": "0"})
    fast_again = _send(fast, key, BODY, **{"Idempotency-Key": "order-8", "If-Match": "0"})
    assert slow_first.status_code == 201, slow_first.text
    assert fast_again.json() == slow_first.json()
    assert fast_again.headers["idempotent-replayed"] == "true"
    changed = {**BODY, "priority": 2}
    a = _send(fast, key, changed, **{"Idempotency-Key": "order-7"})
    b = _send(slow, key, changed, **{"Idempotency-Key": "order-7"})
    assert a.status_code == 422 and _shape(a) == _shape(b)
    assert layer.served == 4  # the mismatch was the fast path's own answer


def test_the_events_written_are_alike(
    two: tuple[Any, Any, FastSubmit, FastSubmit], keyring: dict[str, str], db_url: str
) -> None:
    fast, slow, _, _ = two
    headers = {"X-Correlation-Id": "deal-42", "X-Causation-Id": "memo-9", "Idempotency-Key": "k1"}
    ids = [
        _send(c, keyring["agent"], {**BODY, "priority": 5}, **headers).json()["id"]
        for c in (fast, slow)
    ]
    with psycopg.connect(db_url) as conn:
        rows = [
            conn.execute(
                "SELECT type, version, body->'data', body->'meta' FROM events_json"
                " WHERE stream = %s",
                (f"task-{i}",),
            ).fetchall()
            for i in ids
        ]

    def same(row: tuple[Any, ...]) -> tuple[Any, ...]:
        meta = {k: v for k, v in row[3].items() if k != "request_id"}
        payload = {k: v for k, v in row[2].items() if k != "task_id"}
        return row[0], row[1], payload, meta

    assert [same(r) for r in rows[0]] == [same(r) for r in rows[1]]
    assert rows[0][0][3]["correlation_id"] == "deal-42"
    assert rows[0][0][3]["idempotency_key"] == "k1"


REFUSED: list[tuple[str, str | None, Any, dict[str, str]]] = [
    ("no key", None, BODY, {}),
    ("unknown key", "not-a-key", BODY, {}),
    ("an officer", "officer", BODY, {}),
    ("not JSON", "agent", b"{nope", {}),
    ("NaN", "agent", b'{"task_type": "x", "payload": {"a": NaN}}', {}),
    ("too big an integer", "agent", b'{"task_type": "x", "payload": {"a": 1e400}}', {}),
    ("beyond 64 bits", "agent", b'{"task_type": "x", "payload": {"a": 99999999999999999999}}', {}),
    ("a lone surrogate", "agent", b'{"task_type": "x", "payload": {"a": "\\ud800"}}', {}),
    ("extra field", "agent", {**BODY, "agent_name": "x"}, {}),
    ("no payload", "agent", {"task_type": "x"}, {}),
    ("bad task type", "agent", {**BODY, "task_type": "has space"}, {}),
    ("priority as a float", "agent", {**BODY, "priority": 1.0}, {}),
    ("empty body", "agent", b"", {}),
    ("a JSON array", "agent", [BODY], {}),
    ("bad idempotency key", "agent", BODY, {"Idempotency-Key": "has space"}),
    ("long idempotency key", "agent", BODY, {"Idempotency-Key": "k" * 201}),
    ("bad If-Match", "agent", BODY, {"If-Match": "three"}),
    ("If-Match of another version", "agent", BODY, {"If-Match": "5"}),
    ("bad correlation id", "agent", BODY, {"X-Correlation-Id": "a b"}),
    ("text content type", "agent", BODY, {"Content-Type": "text/plain"}),
    ("no content type", "agent", BODY, {"Content-Type": "-"}),
    ("problem+json content type", "agent", BODY, {"Content-Type": "application/problem+json"}),
    ("an auditor", "auditor", BODY, {}),
    ("an admin", "admin", BODY, {}),
    (
        "chunked, over the limit",
        "agent",
        {**BODY, "payload": {"x": "y" * 300_000}},
        {"chunked": "4096"},
    ),
]
# What the route takes without a refusal: said by no check of its own
TAKEN_BY_THE_ROUTE = {"text content type", "no content type", "problem+json content type"}


@pytest.mark.parametrize(
    ("why", "who", "body", "headers"), REFUSED, ids=[case[0] for case in REFUSED]
)
def test_refusals_are_the_routes_own(
    two: tuple[Any, Any, FastSubmit, FastSubmit],
    keyring: dict[str, str],
    db_url: str,
    why: str,
    who: str | None,
    body: Any,
    headers: dict[str, str],
) -> None:
    fast, slow, layer, _ = two
    key = keyring.get(who, who) if who else None
    a, b = _send(fast, key, body, **headers), _send(slow, key, body, **headers)
    assert a.status_code >= 400 or why in TAKEN_BY_THE_ROUTE, (why, a.status_code)
    assert _shape(a) == _shape(b), why
    if a.status_code >= 400:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT count(*) FROM events WHERE type = 'TaskSubmitted'")
            (n,) = row.fetchone() or (0,)
        assert n == 0, f"{why}: a refused submission wrote events"
    # only the 412 is decided past the checks, by the command itself
    assert layer.served == (1 if why == "If-Match of another version" else 0), why


def test_a_chunked_body_and_other_forms_of_the_headers_are_served_alike(
    two: tuple[Any, Any, FastSubmit, FastSubmit], keyring: dict[str, str]
) -> None:
    fast, slow, layer, _ = two
    key = keyring["agent"]
    forms: list[dict[str, str]] = [
        {"chunked": "7"},
        {"Content-Type": "application/json; charset=utf-8"},
        {"If-Match": 'W/"0"'},
        {"If-Match": "*"},
        {"Idempotency-Key": "k" * 200},
        {"X-Correlation-Id": "c" * 128, "X-Causation-Id": "d"},
    ]
    for n, headers in enumerate(forms, 1):
        other = {**headers}  # a key of its own: the same one would be a replay
        if "Idempotency-Key" in other:
            other["Idempotency-Key"] = "j" * 200
        a, b = _send(fast, key, BODY, **headers), _send(slow, key, BODY, **other)
        assert a.status_code == 201, (headers, a.text)
        assert _shape(a) == _shape(b), headers
        assert layer.served == n, headers


def test_a_revoked_key_is_the_routes_to_refuse(
    two: tuple[Any, Any, FastSubmit, FastSubmit], keyring: dict[str, str], db_url: str
) -> None:
    fast, slow, layer, _ = two
    admin = {"Authorization": f"Bearer {keyring['admin']}"}
    for client in (fast, slow):  # both apps know the key before it is revoked
        assert _send(client, keyring["agent2"], BODY).status_code == 201
    r = slow.post("/admin/keys/agent-2/revoke", headers=admin)
    assert r.status_code in (200, 201), r.text
    time.sleep(1.1)  # past the principal cache of both apps
    a, b = _send(fast, keyring["agent2"], BODY), _send(slow, keyring["agent2"], BODY)
    assert a.status_code == 401 and _shape(a) == _shape(b)
    assert layer.served == 1  # the submission before the revocation


def test_off_by_setting_every_submission_takes_the_route(
    settings: Settings, keyring: dict[str, str]
) -> None:
    app = create_app(settings.model_copy(update={"fast_submit": False}))
    with TestClient(app) as client:
        r = _send(client, keyring["agent"], BODY)
        assert r.status_code == 201, r.text
        assert _fast_layer(app).served == 0
