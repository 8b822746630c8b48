"""The console end to end in a real browser: Playwright driving the system's
Chromium (headless; never a downloaded browser). Skipped, saying why, where
Playwright or Chromium is missing; CI installs Chromium (.ci/run).

With LEDGER_CONSOLE_SCREENSHOTS=DIR set, each page's screenshot is saved there
(docs/console/ holds the ones from a real run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.console_support import awaiting_task
from tests.support import ROOT, app_with_runner, auth, live_server, proof_settings

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)
try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(
        sync_playwright is None, reason="playwright is not installed (pip install -e '.[dev]')"
    ),
    pytest.mark.skipif(
        CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install -y chromium)"
    ),
]


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[str]:
    settings = proof_settings(db_url, tmp_path / "keys" / "signing.key")
    with live_server(app_with_runner(settings)) as base:
        yield base


@pytest.fixture
def browser() -> Iterator[Any]:
    assert sync_playwright is not None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Shots:
    def __init__(self, tmp: Path) -> None:
        wanted = os.environ.get("LEDGER_CONSOLE_SCREENSHOTS")
        self.dir = Path(wanted) if wanted else tmp / "shots"
        self.dir.mkdir(parents=True, exist_ok=True)

    def take(self, page: Page, name: str) -> None:
        path = self.dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000


# Every form control has a label; every page has a language, one h1 and a main landmark.
ACCESSIBILITY = """() => {
  const unlabelled = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
    .map(el => el.name || el.id);
  const nameless = [...document.querySelectorAll('button, a[href]')]
    .filter(el => !el.textContent.trim() && !el.getAttribute('aria-label')).length;
  return {unlabelled, nameless, lang: document.documentElement.lang,
          h1: document.querySelectorAll('h1').length, main: document.querySelectorAll('main').length};
}"""


def assert_accessible(page: Page) -> None:
    got = page.evaluate(ACCESSIBILITY)
    assert got == {"unlabelled": [], "nameless": 0, "lang": "en", "h1": 1, "main": 1}, got


def sign_in(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}/console")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_an_officer_and_an_auditor_work_a_task_in_the_browser(
    server: str, browser: Any, keyring: dict[str, str], tmp_path: Path
) -> None:
    shots = Shots(tmp_path)
    with httpx.Client(base_url=server, timeout=30) as api:
        tid, _pos = awaiting_task(
            api, keyring["agent"], {"desk": "rates", "limit": 5, "memo": "Quarterly rates exposure"}
        )
        other = api.post(
            "/tasks",
            json={"task_type": "pricing_check", "payload": {"isin": "XS0001"}},
            headers=auth(keyring["agent2"]),
        ).json()
        api.get(
            f"/tasks/{other['id']}?min_position={other['position']}", headers=auth(keyring["agent"])
        )
        public_key = api.get("/audit/public-key", headers=auth(keyring["auditor"])).text.strip()

    officer = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = officer.new_page()
    page.goto(f"{server}/console")
    assert_accessible(page)
    shots.take(page, "sign-in")
    sign_in(page, server, keyring["officer"])
    expect(page).to_have_url(re.compile(r"/console/tasks$"))
    expect(page.get_by_test_id("who")).to_have_text("officer-1")
    expect(page.get_by_test_id("role")).to_have_text("officer")
    expect(page.get_by_test_id("chain-status")).to_contain_text("verified through position")

    # search: the free text finds the one task, the agent filter the other
    page.get_by_label("Text in the task", exact=False).fill("quarterly")
    page.get_by_role("button", name="Search").click()
    results = page.get_by_test_id("results")
    expect(results.locator("tbody tr")).to_have_count(1)
    expect(results).to_contain_text(tid)
    page.get_by_label("Text in the task", exact=False).fill("")
    page.get_by_label("Agent", exact=True).fill("agent-2")
    page.get_by_label("Agent", exact=True).press("Enter")
    expect(page.get_by_test_id("results").locator("tbody tr")).to_have_count(1)
    expect(page.get_by_test_id("results")).to_contain_text(other["id"])
    page.get_by_label("Agent", exact=True).fill("")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("counts").locator('[data-status="awaiting_approval"]')).to_have_text(
        "1"
    )
    assert_accessible(page)
    shots.take(page, "tasks")

    # the timeline
    page.get_by_role("link", name=tid).click()
    expect(page.get_by_test_id("task-status")).to_have_text("awaiting_approval")
    expect(page.locator("article.event")).to_have_count(7)
    expect(page.locator("dl.tool")).to_contain_text("exposure_lookup")
    long_output = page.locator("details.v-long").first
    expect(long_output.locator("pre")).not_to_be_visible()
    long_output.locator("summary").click()
    expect(long_output.locator("pre")).to_be_visible()
    assert_accessible(page)
    shots.take(page, "timeline")

    # as of: the control moves back through the events, by keyboard
    control = page.get_by_label("Move through the events")
    control.focus()
    for _ in range(6):
        control.press("ArrowLeft")
        page.wait_for_load_state()
    expect(page).to_have_url(re.compile(r"at=1"))
    expect(page.get_by_test_id("asof-status")).to_have_text("queued")
    page.get_by_role("link", name="Next event").click()
    expect(page.get_by_test_id("asof-status")).to_have_text("running")
    expect(page.get_by_test_id("diff")).to_contain_text("worker")
    assert_accessible(page)
    shots.take(page, "as-of")

    # a forged form post (no token, or another session's) is refused and writes nothing
    forged = officer.request.post(
        f"{server}/console/tasks/{tid}/decision",
        form={"decision": "approve", "comment": "forged", "csrf": "not-the-token"},
        max_redirects=0,
    )
    assert forged.status == 403

    # approve with a comment
    page.goto(f"{server}/console/tasks/{tid}")
    page.get_by_label("Comment (required; it goes on the record)").fill(
        "Within the desk's limit; go on."
    )
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_test_id("notice")).to_contain_text("Approved: recorded at position")
    expect(page.get_by_test_id("task-status")).to_have_text("running")
    expect(page.locator("article.t-TaskApproved")).to_contain_text(
        "Within the desk's limit; go on."
    )
    expect(page.locator("article.t-TaskApproved")).to_contain_text("officer-1")
    assert page.locator("article.t-TaskApproved").count() == 1
    shots.take(page, "approved")

    # the report, its PDF and the audit bundle, downloaded from the report page
    page.get_by_role("link", name="Regulator's report").click()
    expect(page.get_by_test_id("verification")).to_contain_text("OK: all 8 events")
    expect(page.get_by_test_id("verification")).to_contain_text("signed checkpoint of size")
    assert_accessible(page)
    shots.take(page, "report")
    with page.expect_download() as pdf_download:
        page.get_by_role("link", name="Download this report as PDF").click()
    pdf_path = tmp_path / "report.pdf"
    pdf_download.value.save_as(pdf_path)
    assert pdf_path.read_bytes().startswith(b"%PDF-")
    with page.expect_download() as bundle_download:
        page.get_by_test_id("bundle-link").click()
    bundle_path = tmp_path / bundle_download.value.suggested_filename
    bundle_download.value.save_as(bundle_path)
    verified = subprocess.run(
        [sys.executable, "-m", "ledger", "verify", str(bundle_path), "--key", public_key],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK: all 8 events" in verified.stdout

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    page.goto(f"{server}/console/tasks")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    officer.close()

    # an auditor: the range report, and no decision form
    auditor = browser.new_context(viewport={"width": 1280, "height": 900})
    page = auditor.new_page()
    sign_in(page, server, keyring["auditor"])
    expect(page.get_by_test_id("role")).to_have_text("auditor")
    page.get_by_role("button", name="Verify what is new").click()
    expect(page.get_by_test_id("verified-through")).not_to_have_text("0")
    page.goto(f"{server}/console/tasks/{tid}")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    page.get_by_role("link", name="Report for a time range").click()
    page.get_by_label("From (UTC)").fill("2000-01-01T00:00:00")
    page.get_by_label("Until (UTC)").fill("2999-01-01T00:00:00")
    page.get_by_role("button", name="Make the report").click()
    expect(page.get_by_test_id("range-verification")).to_contain_text("OK: positions 1..")
    expect(page.locator("section.report-task")).to_have_count(2)
    assert_accessible(page)
    shots.take(page, "range-report")
    auditor.close()


def test_wrong_key_expired_session_and_forged_post_are_refused_in_the_browser(
    server: str, browser: Any, keyring: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    shots = Shots(tmp_path)
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, server, "lk_wrong-key")
    expect(page.get_by_test_id("error")).to_contain_text("unknown or revoked")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    shots.take(page, "wrong-key")

    sign_in(page, server, keyring["officer"])
    expect(page.get_by_test_id("who")).to_have_text("officer-1")
    # the cookie cannot be read by the page's scripts
    assert "ledger_console" not in page.evaluate("document.cookie")
    cookie = next(c for c in context.cookies() if c["name"] == "ledger_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # a form posted from another page without the session's token
    page.set_content(
        f'<form method="post" action="{server}/console/sign-out"><input name="csrf" value="guess">'
        "<button>go</button></form>"
    )
    with page.expect_navigation():
        page.get_by_role("button", name="go").click()
    expect(page.get_by_test_id("error")).to_contain_text("security token")
    page.goto(f"{server}/console/tasks")
    expect(page.get_by_test_id("who")).to_have_text("officer-1")  # still signed in

    # the server ends the session when it expires (the browser still holds the cookie)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
    page.goto(f"{server}/console/tasks")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    assert any(c["name"] == "ledger_console" for c in context.cookies())
    context.close()
