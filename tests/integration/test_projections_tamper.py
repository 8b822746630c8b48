"""``ledger projections check`` on a ledger a superuser broke (a gap, a swap,
an edited event): a clean answer naming what it found and exit 1, never a
traceback."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.test_projections_rebuild import ledger_cli
from tests.projection_support import submit_tasks, wait_caught_up
from tests.support import auth


def _swap(conn: psycopg.Connection[Any], a: int, b: int) -> None:
    conn.execute("UPDATE events SET position = 1000000 WHERE position = %s", (a,))
    conn.execute("UPDATE events SET position = %s WHERE position = %s", (a, b))
    conn.execute("UPDATE events SET position = %s WHERE position = 1000000", (b,))


def _claim_position(conn: psycopg.Connection[Any], task_id: str) -> int:
    row = conn.execute(
        "SELECT position FROM events WHERE stream = %s AND version = 2", (f"task-{task_id}",)
    ).fetchone()
    assert row is not None
    return int(row[0])


CASES = {
    "gap": lambda c, p: c.execute("DELETE FROM events WHERE position = %s", (p,)),
    "swap": lambda c, p: _swap(c, p, p + 1),
    "moved": lambda c, p: c.execute("UPDATE events SET position = 99999 WHERE position = %s", (p,)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_answers_cleanly_on_a_broken_ledger(
    client: Any,
    keyring: dict[str, str],
    db_url: str,
    super_conn: psycopg.Connection[Any],
    case: str,
) -> None:
    ids = submit_tasks(db_url, 4)
    for tid in ids:
        r = client.post(f"/tasks/{tid}/claim", headers=auth(keyring["agent"]))
        assert r.status_code == 200, r.text
        r = client.post(
            f"/tasks/{tid}/complete", headers=auth(keyring["agent"]), json={"result": {}}
        )
        assert r.status_code == 200, r.text
    wait_caught_up(db_url)
    for name in ("tasks", "task_counts"):
        r = ledger_cli(db_url, "projections", "check", name)
        assert r.returncode == 0, r.stdout + r.stderr

    target = _claim_position(super_conn, ids[1])
    super_conn.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
    CASES[case](super_conn, target)
    for name in ("tasks", "task_counts"):
        r = ledger_cli(db_url, "projections", "check", name)
        assert "Traceback" not in r.stderr + r.stdout, r.stderr
        assert r.returncode == 1, r.stdout + r.stderr
        assert "DIFFERENT" in r.stdout or "BROKEN" in r.stdout, r.stdout
        assert f"position {target}" in r.stdout, r.stdout
