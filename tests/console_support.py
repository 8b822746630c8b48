"""Helpers the console's tests share: signing a test client in, reading a
page's form token, and a task brought to the point where it awaits approval."""

from __future__ import annotations

import re
from typing import Any

from tests.support import auth

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')
LONG_OUTPUT = "The exposure is within limits.\n" + "Line of reasoning. " * 40


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "the page has no form token"
    return m.group(1)


def sign_in(client: Any, key: str) -> Any:
    """Sign ``client`` in with ``key`` as a browser does; returns the answer."""
    page = client.get("/console/sign-in")
    assert page.status_code == 200
    return client.post(
        "/console/sign-in",
        data={"api_key": key, "csrf": csrf_of(page.text), "next": "/console/tasks"},
        follow_redirects=False,
    )


def post_form(client: Any, path: str, data: dict[str, str], **kw: Any) -> Any:
    return client.post(path, data=data, follow_redirects=False, **kw)


def awaiting_task(
    client: Any, agent: str, payload: dict[str, Any] | None = None
) -> tuple[str, int]:
    """A task submitted, claimed and worked by ``agent``, now awaiting approval,
    with a decision trace of every step kind; its id and last position, once
    the task view has it."""
    h = auth(agent)
    r = client.post(
        "/tasks",
        json={"task_type": "exposure_review", "payload": payload or {"desk": "rates", "limit": 5}},
        headers=h,
    )
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    assert client.post(f"/tasks/{tid}/claim", headers=h).status_code == 200
    steps = [
        ("prompt", "Review the rates desk exposure against its limit."),
        (
            "tool_call",
            {
                "tool": "exposure_lookup",
                "arguments": {"desk": "rates"},
                "result": {"exposure": 4.2},
            },
        ),
        ("model_output", LONG_OUTPUT),
        ("note", "Close to the limit: asking an officer."),
    ]
    for kind, content in steps:
        r = client.post(f"/tasks/{tid}/steps", json={"kind": kind, "content": content}, headers=h)
        assert r.status_code == 201, r.text
    r = client.post(
        f"/tasks/{tid}/approval-request", json={"reason": "exposure at 84% of limit"}, headers=h
    )
    assert r.status_code == 200, r.text
    position = int(r.json()["position"])
    r = client.get(f"/tasks/{tid}?min_position={position}", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "awaiting_approval"
    return tid, position
