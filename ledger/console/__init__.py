"""The compliance console: server-rendered pages for officers and auditors
(sign-in, task search, timelines with the decision trace and the as-of
control, approvals, the regulator's report). ``router`` is mounted by
``ledger.api.app`` like every other router."""

from __future__ import annotations

from fastapi import APIRouter

from ledger.console import reports, signin, taskpages
from ledger.console.pages import start_warming

router = APIRouter()
for _part in (signin.router, taskpages.router, reports.router):
    router.include_router(_part)

__all__ = ["router", "start_warming"]
