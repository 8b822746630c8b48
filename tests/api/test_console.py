"""The compliance console through its HTTP surface (a real app, a real
PostgreSQL): sign-in into a session cookie, refusals (wrong key, expired
session, forged form posts), what each role may see, search, the timeline
and as-of, approvals through the command path, and the reports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.settings import Settings
from tests.console_support import awaiting_task, csrf_of, post_form, sign_in
from tests.support import ROOT, auth, proof_settings, wait_until


@pytest.fixture
def settings(db_url: str, key_file: Path) -> Settings:  # fast checkpoints: the bundle needs one
    return proof_settings(db_url, key_file)


def events_of(client: Any, key: str, tid: str) -> list[dict[str, Any]]:
    r = client.get(f"/tasks/{tid}/events", headers=auth(key))
    assert r.status_code == 200
    return list(r.json())


def test_sign_in_sets_a_strict_httponly_session_and_every_page_names_who(
    client: Any, keyring: dict[str, str]
) -> None:
    r = sign_in(client, keyring["officer"])
    assert r.status_code == 303 and r.headers["location"] == "/console/tasks"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("ledger_console="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Path=/console" in cookie and "Max-Age=1800" in cookie
    page = client.get("/console/tasks")
    assert page.status_code == 200
    assert 'data-testid="who">officer-1<' in page.text
    assert 'data-testid="role">officer<' in page.text
    assert 'data-testid="chain-status"' in page.text
    # the key is never kept: only the session token's digest is stored
    assert keyring["officer"] not in page.text


def test_a_wrong_key_is_refused_and_opens_no_session(client: Any, keyring: dict[str, str]) -> None:
    r = sign_in(client, "lk_not-a-key-anyone-holds")
    assert r.status_code == 401
    assert "unknown or revoked" in r.text
    assert not any(c.startswith("ledger_console=") for c in r.headers.get_list("set-cookie"))
    assert client.get("/console/tasks", follow_redirects=False).status_code == 303


def test_without_a_session_pages_send_the_browser_to_sign_in(client: Any) -> None:
    r = client.get("/console/tasks?status=queued", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/console/sign-in?next=%2Fconsole%2Ftasks")
    assert client.get("/console/sign-in").status_code == 200


def test_a_sign_in_post_without_the_form_token_is_refused(
    client: Any, keyring: dict[str, str]
) -> None:
    client.get("/console/sign-in")  # the cookie half of the token, but a forged form
    r = post_form(client, "/console/sign-in", {"api_key": keyring["officer"], "csrf": "forged"})
    assert r.status_code == 403
    assert client.get("/console/tasks", follow_redirects=False).status_code == 303


def test_an_expired_session_is_refused(
    client: Any, keyring: dict[str, str], super_conn: psycopg.Connection[Any]
) -> None:
    sign_in(client, keyring["officer"])
    assert client.get("/console/tasks").status_code == 200
    super_conn.execute("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
    r = client.get("/console/tasks", follow_redirects=False)
    assert r.status_code == 303 and "/console/sign-in" in r.headers["location"]


def test_a_session_ends_when_its_time_is_up(client: Any, keyring: dict[str, str]) -> None:
    client.app.state.ctx.settings.console_session_seconds = 1.0
    r = sign_in(client, keyring["auditor"])
    assert "Max-Age=1" in r.headers["set-cookie"]
    token = client.cookies.get("ledger_console")
    assert client.get("/console/tasks").status_code == 200

    def refused() -> bool:
        # the cookie sent again as it was: the server, not the browser, says no
        client.cookies.set("ledger_console", token, path="/console")
        return bool(client.get("/console/tasks", follow_redirects=False).status_code == 303)

    wait_until(refused, timeout=10, what="the session's expiry")


def test_sign_out_ends_the_session_on_the_server(client: Any, keyring: dict[str, str]) -> None:
    sign_in(client, keyring["auditor"])
    page = client.get("/console/tasks")
    stolen = client.cookies.get("ledger_console")
    r = post_form(client, "/console/sign-out", {"csrf": csrf_of(page.text)})
    assert r.status_code == 303
    client.cookies.set("ledger_console", stolen, path="/console")
    assert client.get("/console/tasks", follow_redirects=False).status_code == 303


def test_a_revoked_key_ends_its_sessions(client: Any, keyring: dict[str, str]) -> None:
    sign_in(client, keyring["officer"])
    assert client.get("/console/tasks").status_code == 200
    r = client.post("/admin/keys/officer-1/revoke", json={}, headers=auth(keyring["admin"]))
    assert r.status_code in (200, 201), r.text
    assert client.get("/console/tasks", follow_redirects=False).status_code == 303


def test_forged_decision_posts_are_refused_and_write_nothing(
    client: Any, keyring: dict[str, str]
) -> None:
    tid, _pos = awaiting_task(client, keyring["agent"])
    sign_in(client, keyring["officer"])
    page = client.get(f"/console/tasks/{tid}")
    token = csrf_of(page.text)
    path = f"/console/tasks/{tid}/decision"
    good = {"decision": "approve", "comment": "fine", "csrf": token}
    assert post_form(client, path, {**good, "csrf": ""}).status_code == 403
    assert post_form(client, path, {**good, "csrf": "x" * len(token)}).status_code == 403
    r = post_form(client, path, good, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = client.post(path, json=good, follow_redirects=False)  # not a form post
    assert r.status_code == 403
    assert [e["type"] for e in events_of(client, keyring["agent"], tid)][
        -1
    ] == "TaskApprovalRequested"


def test_an_officer_approves_with_a_comment_through_the_command_path(
    client: Any, keyring: dict[str, str]
) -> None:
    tid, pos = awaiting_task(client, keyring["agent"])
    sign_in(client, keyring["officer"])
    page = client.get(f"/console/tasks/{tid}")
    assert 'action="/console/tasks/' + tid + '/decision"' in page.text
    token = csrf_of(page.text)
    path = f"/console/tasks/{tid}/decision"
    r = post_form(
        client, path, {"decision": "approve", "comment": "  ", "csrf": token, "version": "7"}
    )
    assert r.status_code == 422 and "needs a comment" in r.text
    r = post_form(
        client,
        path,
        {"decision": "approve", "comment": "Within limits; go on.", "csrf": token, "version": "7"},
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith(
        f"/console/tasks/{tid}?decided=approve&position={pos + 1}"
    )
    last = events_of(client, keyring["agent"], tid)[-1]
    assert last["type"] == "TaskApproved" and last["data"] == {"comment": "Within limits; go on."}
    assert last["meta"]["actor"] == "officer-1" and last["meta"]["role"] == "officer"
    # a second decision on the old version is refused: the task moved on
    r = post_form(
        client, path, {"decision": "reject", "comment": "no", "csrf": token, "version": "7"}
    )
    assert r.status_code in (409, 412)
    assert len(events_of(client, keyring["agent"], tid)) == 8


def test_roles_see_only_what_the_spec_lets_them(client: Any, keyring: dict[str, str]) -> None:
    tid, _pos = awaiting_task(client, keyring["agent"])
    sign_in(client, keyring["agent"])
    page = client.get(f"/console/tasks/{tid}")
    assert page.status_code == 200 and "exposure_lookup" in page.text  # events: any role
    assert 'id="as-of"' not in page.text and "/decision" not in page.text  # replay, approve: no
    assert "report" not in page.text.split("<main", 1)[1]
    assert client.get(f"/console/tasks/{tid}/report").status_code == 403
    assert client.get(f"/console/tasks/{tid}/bundle.json").status_code == 403
    assert client.get("/console/report").status_code == 403
    token = csrf_of(page.text)
    r = post_form(
        client,
        f"/console/tasks/{tid}/decision",
        {"decision": "approve", "comment": "x", "csrf": token},
    )
    assert r.status_code == 403

    client.cookies.clear()
    sign_in(client, keyring["auditor"])
    page = client.get(f"/console/tasks/{tid}")
    assert 'id="as-of"' in page.text and "/decision" not in page.text
    assert client.get("/console/report").status_code == 200
    r = post_form(
        client,
        f"/console/tasks/{tid}/decision",
        {"decision": "approve", "comment": "x", "csrf": csrf_of(page.text)},
    )
    assert r.status_code == 403

    client.cookies.clear()
    sign_in(client, keyring["officer"])
    assert client.get("/console/report").status_code == 403  # a range report is the auditor's
    assert [e["type"] for e in events_of(client, keyring["agent"], tid)][
        -1
    ] == "TaskApprovalRequested"


def _result_ids(html: str) -> list[str]:
    return re.findall(r'href="/console/tasks/([0-9a-f-]{36})"', html)


def test_search_filters_pages_and_counts(
    client: Any, keyring: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.console import taskpages

    h1, h2 = auth(keyring["agent"]), auth(keyring["agent2"])
    ids = []
    for i, (h, kind) in enumerate(
        [(h1, "pricing_check"), (h2, "pricing_check"), (h1, "deal_memo")]
    ):
        r = client.post(
            "/tasks",
            json={
                "task_type": kind,
                "payload": {"isin": f"XS000{i}", "note": "Zebra" if i == 1 else "x"},
            },
            headers=h,
        )
        ids.append(r.json()["id"])
        last = r.json()["position"]
    assert client.get(f"/tasks/stats?min_position={last}", headers=h1).status_code == 200
    assert client.get(f"/tasks/{ids[-1]}?min_position={last}", headers=h1).status_code == 200
    sign_in(client, keyring["officer"])
    assert _result_ids(client.get("/console/tasks").text) == ids[::-1]
    assert _result_ids(client.get("/console/tasks?agent=agent-2").text) == [ids[1]]
    assert _result_ids(client.get("/console/tasks?task_type=deal_memo").text) == [ids[2]]
    assert _result_ids(client.get("/console/tasks?text=zebra").text) == [ids[1]]
    assert _result_ids(client.get("/console/tasks?status=done").text) == []
    page = client.get("/console/tasks?agent=agent-1")
    assert re.search(r'data-status="queued">2<', page.text)
    assert re.search(r'data-status="queued">3<', client.get("/console/tasks").text)
    # a time range: from the second task's submission on
    second = client.get(f"/tasks/{ids[1]}", headers=h1).json()["created_at"]
    assert _result_ids(client.get(f"/console/tasks?since={second}").text) == [ids[2], ids[1]]
    assert _result_ids(client.get(f"/console/tasks?until={second}").text) == [ids[1], ids[0]]
    assert client.get("/console/tasks?since=yesterday").status_code == 422
    # keyset pages: newest first, no repeats, no gaps
    monkeypatch.setattr(taskpages, "PAGE", 2)
    first = client.get("/console/tasks")
    assert _result_ids(first.text) == [ids[2], ids[1]]
    link = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert link
    older = client.get(link.group(1).replace("&amp;", "&")).text
    assert _result_ids(older) == [ids[0]]
    assert 'data-testid="first-page"' in older and 'data-testid="next-page"' not in older


def test_timeline_trace_and_as_of_follow_the_replay_fold(
    client: Any, keyring: dict[str, str]
) -> None:
    tid, _pos = awaiting_task(client, keyring["agent"])
    sign_in(client, keyring["auditor"])
    page = client.get(f"/console/tasks/{tid}").text
    assert page.count('class="event ') == 7
    assert "exposure_lookup" in page and "Tool call" in page and "Model output" in page
    assert '<details class="v-long">' in page  # the long model output is folded
    assert "exposure at 84% of limit" in page
    assert 'data-testid="asof-status">awaiting_approval<' in page
    first = client.get(f"/console/tasks/{tid}?at=1").text
    assert 'data-testid="asof-status">queued<' in first
    claimed = client.get(f"/console/tasks/{tid}?at=2").text
    assert 'data-testid="asof-status">running<' in claimed
    diff = claimed.split('data-testid="diff"', 1)[1].split("</table>", 1)[0]
    assert "worker" in diff and "agent-1" in diff and "queued" in diff and "running" in diff
    replay = client.get(
        f"/tasks/{tid}/replay?position={_event_position(client, keyring, tid, 2)}",
        headers=auth(keyring["auditor"]),
    )
    assert replay.json()["state"]["status"] == "running"


def _event_position(client: Any, keyring: dict[str, str], tid: str, version: int) -> int:
    return int(events_of(client, keyring["agent"], tid)[version - 1]["position"])


def test_report_pdf_and_a_bundle_that_ledger_verify_accepts(
    client: Any, keyring: dict[str, str], tmp_path: Path
) -> None:
    payload = {"desk": "rates", "counterparty": "Société Générale 東京 \U0001f4c8"}
    tid, _pos = awaiting_task(client, keyring["agent"], payload)
    sign_in(client, keyring["officer"])
    html = client.get(f"/console/tasks/{tid}/report")
    assert "Société Générale 東京 \U0001f4c8" in html.text
    assert html.status_code == 200
    verification = html.text.split('data-testid="verification"', 1)[1].split("</div>", 1)[0]
    assert (
        "OK: all 7 events of task-" in verification and "signed checkpoint of size" in verification
    )
    assert html.text.count("<h4>After #") == 7  # every interim state
    pdf = client.get(f"/console/tasks/{tid}/report.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    bundle = client.get(f"/console/tasks/{tid}/bundle.json")
    assert bundle.status_code == 200 and "attachment" in bundle.headers["content-disposition"]
    path = tmp_path / "task.bundle.json"
    path.write_bytes(bundle.content)
    key = client.get("/audit/public-key", headers=auth(keyring["auditor"])).text.strip()
    done = subprocess.run(
        [sys.executable, "-m", "ledger", "verify", str(path), "--key", key],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: all 7 events" in done.stdout
    # one changed byte and the same command refuses it
    path.write_bytes(bundle.content.replace(b"rates", b"ratez", 1))
    bad = subprocess.run(
        [sys.executable, "-m", "ledger", "verify", str(path), "--key", key],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert bad.returncode != 0


def test_an_auditor_reports_a_time_range_and_verifies_it(
    client: Any, keyring: dict[str, str]
) -> None:
    tid, _pos = awaiting_task(client, keyring["agent"])
    created = client.get(f"/tasks/{tid}", headers=auth(keyring["agent"])).json()["created_at"]
    sign_in(client, keyring["auditor"])
    r = client.get(f"/console/report?since={created}&until=2999-01-01T00:00:00Z")
    assert r.status_code == 200
    assert tid in r.text
    rv = r.text.split('data-testid="range-verification"', 1)[1].split("</div>", 1)[0]
    assert "OK: positions" in rv
    pdf = client.get(f"/console/report.pdf?since={created}&until=2999-01-01T00:00:00Z")
    assert pdf.content.startswith(b"%PDF-")
    export = client.get("/console/export?from=1")
    assert export.status_code == 200 and export.text.count("\n") >= 7
    page = client.get("/console/tasks")
    r = post_form(client, "/console/verify", {"csrf": csrf_of(page.text), "next": "/console/tasks"})
    assert r.status_code == 303
    head = client.get("/audit/head", headers=auth(keyring["auditor"])).json()["position"]
    after = client.get("/console/tasks").text
    m = re.search(r'data-testid="verified-through">(\d+)<', after)
    assert m and int(m.group(1)) >= head - 1


def test_an_officer_rejects_with_a_comment_and_the_task_is_final(
    client: Any, keyring: dict[str, str]
) -> None:
    tid, pos = awaiting_task(client, keyring["agent"])
    sign_in(client, keyring["officer"])
    token = csrf_of(client.get(f"/console/tasks/{tid}").text)
    r = post_form(
        client,
        f"/console/tasks/{tid}/decision",
        {"decision": "reject", "comment": "Limit breach risk.", "csrf": token, "version": "7"},
    )
    assert r.status_code == 303
    last = events_of(client, keyring["agent"], tid)[-1]
    assert last["type"] == "TaskRejected" and last["data"] == {"comment": "Limit breach risk."}
    assert last["position"] == pos + 1
    page = client.get(r.headers["location"]).text
    assert 'data-testid="notice">Rejected: recorded at position' in page
    assert "/decision" not in page  # nothing left to decide


def test_refusals_are_pages_that_still_name_who_is_signed_in(
    client: Any, keyring: dict[str, str]
) -> None:
    sign_in(client, keyring["officer"])
    missing = client.get("/console/tasks/01930000-0000-7000-8000-000000000000")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert 'data-testid="who">officer-1<' in missing.text
    bad = client.get("/console/tasks/not-a-uuid")
    assert bad.status_code == 422 and "text/html" in bad.headers["content-type"]
    assert client.get("/console/tasks?status=nonsense").status_code == 422
    assert client.get("/console/static/../../settings.py").status_code == 404
    page = client.get("/console/tasks")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_cookies_are_secure_when_told_so(client: Any, keyring: dict[str, str]) -> None:
    client.app.state.ctx.settings.console_secure_cookies = True
    page = client.get("/console/sign-in")
    assert "Secure" in page.headers["set-cookie"]


def test_a_long_timeline_is_drawn_a_window_at_a_time(
    client: Any, keyring: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.console import taskpages

    monkeypatch.setattr(taskpages, "TIMELINE_WINDOW", 3)
    tid, _pos = awaiting_task(client, keyring["agent"])
    sign_in(client, keyring["auditor"])
    first = client.get(f"/console/tasks/{tid}").text
    assert first.count('class="event ') == 3 and 'id="v1"' in first
    assert "Events 1–3 of 7." in first and "?from=4" in first
    last = client.get(f"/console/tasks/{tid}?from=7").text
    assert last.count('class="event ') == 1 and 'id="v7"' in last and "?from=4" in last
    # the as-of control still covers every event
    assert 'max="7"' in last and 'data-testid="asof-status">awaiting_approval<' in last


def test_protected_fields_show_as_the_api_shows_them(client: Any, keyring: dict[str, str]) -> None:
    r = client.post(
        "/tasks",
        json={
            "task_type": "kyc_review",
            "payload": {"client_id": "C-1042", "client_name": "Ada Lovelace", "jurisdiction": "GB"},
        },
        headers=auth(keyring["agent"]),
    )
    assert r.status_code == 201, r.text
    tid, pos = r.json()["id"], r.json()["position"]
    client.get(f"/tasks/{tid}?min_position={pos}", headers=auth(keyring["agent"]))
    for who, clear in (("officer", True), ("agent", True), ("auditor", False), ("agent2", False)):
        client.cookies.clear()
        sign_in(client, keyring[who])
        page = client.get(f"/console/tasks/{tid}").text
        assert ("Ada Lovelace" in page) is clear, who
        assert tid in client.get("/console/tasks?task_type=kyc_review").text
        # the view holds protected values sealed: the text search cannot find them
        assert tid not in client.get("/console/tasks?text=lovelace").text
        assert ('data-testid="protected">protected: withheld<' in page) is not clear, who
        assert "C-1042" in page  # the subject's id is not itself protected
