"""How the operator's programs end (``ledger``, ``python -m projections``): an
exit code, and what the operator can act on as one line on stderr, never a
traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ledger import errors


def guarded(prog: str, run: Callable[[], int]) -> int:
    """``run()``'s exit code; what an operator can act on is one line on stderr
    (exit 2), never a traceback."""
    try:
        return run()
    except errors.LedgerError as exc:
        print(f"{prog}: {exc.detail}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
    except FileNotFoundError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        line = _unreachable(exc)
        if line is None:
            raise
        print(f"{prog}: {line}", file=sys.stderr)
        return 2


def _unreachable(exc: Exception) -> str | None:
    """What to say when the database or the ledger's API could not be reached.
    Their client libraries are looked up, not imported: a command that never
    loaded one (``ledger verify``) cannot have failed in it, and starts sooner."""
    psycopg: Any = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        return f"cannot reach the database: {exc}"
    httpx: Any = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.TransportError):
        # the ledger's API (``ledger worker``), after retries
        return f"cannot reach {_url(exc)}: {exc}"
    return None


def _url(exc: Any) -> str:
    try:
        return str(exc.request.url)
    except RuntimeError:  # raised without a request
        return "the ledger's API"
