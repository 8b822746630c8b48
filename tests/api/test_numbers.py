"""Numbers an outside verifier could not read back (SPEC §1): any number whose
value is an integer beyond ±(2^53 − 1), however it is written, is refused
with 422 wherever it sits (payload, step content, result, nested anywhere)
and nothing is written. A verifier that parses JSON as doubles and one that
parses integers exactly would not agree on such a number."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import auth

SPELLINGS = [
    "1e20",
    "1e16",
    "1E16",
    "9007199254740993.0",
    "9007199254740992.0",
    "9007199254740992",
    "9007199254740993",
    "-9007199254740993",
    "-9007199254740992.0",
    "1152921504606846976",
    "123456789012345680000",
    "1.5e300",
    "90071992547409930e-1",
]
ACCEPTED = ["9007199254740991", "-9007199254740991", "9007199254740991.0", "1e15", "0.5", "-0"]
JSON = {"Content-Type": "application/json"}


def _head(client: Any, key: str) -> dict[str, Any]:
    r = client.get("/audit/head", headers=auth(key))
    assert r.status_code == 200
    return dict(r.json())


def _refused(r: Any, field: str) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    err = body["errors"][0]
    assert (err["field"], err["rule"]) == (field, "safe_integer"), body


@pytest.fixture
def running(client: Any, keyring: dict[str, str]) -> str:
    """A task claimed by agent-1, running: step content and results can be sent."""
    agent = auth(keyring["agent"])
    r = client.post("/tasks", headers=agent, json={"task_type": "t", "payload": {}})
    assert r.status_code == 201, r.text
    task_id = str(r.json()["id"])
    assert client.post(f"/tasks/{task_id}/claim", headers=agent).status_code == 200
    return task_id


@pytest.mark.parametrize("number", SPELLINGS)
def test_unsafe_integers_refused_everywhere_and_nothing_written(
    client: Any, keyring: dict[str, str], running: str, number: str
) -> None:
    agent = {**auth(keyring["agent"]), **JSON}
    before = _head(client, keyring["auditor"])
    cases = [
        ("/tasks", '{"task_type":"t","payload":{"qty":%s}}', "payload.qty"),
        ("/tasks", '{"task_type":"t","payload":{"a":[1,{"b":[%s]}]}}', "payload.a[1].b[0]"),
        ("/tasks", '{"task_type":"t","payload":{},"priority":%s}', "priority"),
        (f"/tasks/{running}/steps", '{"kind":"note","content":{"n":%s}}', "content.n"),
        (f"/tasks/{running}/steps", '{"kind":"note","content":%s}', "content"),
        (f"/tasks/{running}/complete", '{"result":{"total":{"eur":%s}}}', "result.total.eur"),
    ]
    for path, template, field in cases:
        r = client.post(path, headers=agent, content=template.replace("%s", number).encode())
        _refused(r, field)
    assert _head(client, keyring["auditor"]) == before
    task = client.get(
        f"/tasks/{running}",
        params={"min_position": before["position"]},
        headers=auth(keyring["agent"]),
    ).json()
    assert task["status"] == "running"
    assert task["version"] == 2


@pytest.mark.parametrize("number", ACCEPTED)
def test_numbers_within_the_safe_range_are_taken_and_read_back(
    client: Any, keyring: dict[str, str], running: str, number: str
) -> None:
    agent = {**auth(keyring["agent"]), **JSON}
    r = client.post(
        f"/tasks/{running}/steps",
        headers=agent,
        content=b'{"kind":"note","content":{"n":' + number.encode() + b"}}",
    )
    assert r.status_code == 201, r.text
    events = client.get(f"/tasks/{running}/events", headers=auth(keyring["agent"])).json()
    assert float(events[-1]["data"]["content"]["n"]) == float(number)
    verify = client.get("/audit/verify", headers=auth(keyring["auditor"])).json()
    assert verify["ok"], verify
