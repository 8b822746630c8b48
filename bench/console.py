"""The compliance console's pages on the big ledger: server time per page,
one request at a time on one keep-alive connection (latency, not
throughput), signed in as an auditor (who sees every page but the
approval form).

The task views are folded first (``ledger projections rebuild``) when the
big ledger has none yet: the search and the counts read them."""

from __future__ import annotations

import re
import time

import httpx
import psycopg

from bench import ledgerdata, servers
from bench.results import Row
from bench.workloads import Bench, Served, _guard, served_big_ledger

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def _views_folded(url: str) -> None:
    from projections.rebuild import rebuild

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM task_view").fetchone()
    if not row or not row[0]:
        rebuild(url, "tasks")
        rebuild(url, "task_counts")


def _session_cookie(served: Served) -> str:
    base = f"http://127.0.0.1:{served.port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/console/sign-in")
        m = CSRF_RE.search(page.text)
        assert m, "the sign-in page has no form token"
        r = client.post(
            "/console/sign-in",
            data={"api_key": served.key, "csrf": m.group(1), "next": "/console/tasks"},
        )
        if r.status_code != 303:
            raise RuntimeError(f"signing in answered {r.status_code}")
        token = client.cookies.get("ledger_console")
    if not token:
        raise RuntimeError("signing in gave no session cookie")
    return f"ledger_console={token}"


def _pages(url: str) -> list[tuple[str, str, str]]:
    """(row key, what, path) of each page measured."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT agent_name, ledger_jsonb(canonical) -> 'meta' ->> 'actor' FROM task_view v"
            " JOIN events e ON e.position = v.created_position ORDER BY v.created_position"
            " LIMIT 1"
        ).fetchone()
        times = conn.execute("SELECT min(recorded_at), max(recorded_at) FROM events").fetchone()
    agent = row[0] if row else "agent-0"
    lo, hi = times if times else (None, None)
    mid = lo + (hi - lo) / 2 if lo and hi else None
    since = mid.strftime("%Y-%m-%dT%H:%M:%SZ") if mid else ""
    task = ledgerdata.REPLAY_TASK
    return [
        ("console.search", "search, no filter (newest 50)", "/console/tasks"),
        (
            "console.filtered",
            "search: status, agent and time range",
            f"/console/tasks?status=done&agent={agent}&since={since}",
        ),
        ("console.text", "search: text found in many payloads", "/console/tasks?text=aapl"),
        (
            "console.textmiss",
            "search: text in no payload (every task read)",
            "/console/tasks?text=no-such-text",
        ),
        ("console.timeline", "a task's timeline and as-of (100 events)", f"/console/tasks/{task}"),
        (
            "console.report",
            "a task's report: trail, states, bundle checked (100 events)",
            f"/console/tasks/{task}/report",
        ),
    ]


def _first_view_ms(served: Served, path: str, cookie: str) -> float:
    """The page's first request in this process (its caches cold)."""
    url = f"http://127.0.0.1:{served.port}{path}"
    t0 = time.perf_counter()
    r = httpx.get(url, headers={"Cookie": cookie}, timeout=60)
    took = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"{path}: {r.status_code}")
    return took


def _latency(b: Bench, row: Row, served: Served, path: str, cookie: str) -> Row:
    c = b.config
    first = _first_view_ms(served, path, cookie)
    row.note = f"first request {first:.0f} ms; {row.note}"
    spec = {
        "port": served.port,
        "method": "GET",
        "path": path,
        "headers": {"Cookie": cookie},
        "connections": 1,
        "seconds": c.read_seconds,
        "warmup": c.http_warmup,
    }
    for rep in range(c.reps):
        spec["seed"] = rep
        r = servers.load(spec)
        if r["requests"] == 0 or r["non_2xx"]:
            raise RuntimeError(f"{path}: {r['statuses']} {r['errors']}")
        row.samples.append(r["per_second"])
        row.p50_ms.append(r["p50_ms"])
        row.p99_ms.append(r["p99_ms"])
    return row


def console_pages(b: Bench) -> list[Row]:
    n = b.config.big_events
    wl = f"console page among {n:,} events"
    url = b.big_ledger()
    _views_folded(url)
    pages = _pages(url)
    rows: list[Row] = []
    with served_big_ledger(b) as served:
        cookie = _session_cookie(served)
        for key, what, path in pages:
            row = Row(key, wl, f"ledger console, {what}", "pages/s")
            row.note = f"GET {path.split('?')[0]}; one request at a time; target p99 < 200 ms"
            rows.append(
                _guard(
                    key,
                    wl,
                    row.system,
                    lambda row=row, path=path: _latency(b, row, served, path, cookie),
                )
            )
    return rows
