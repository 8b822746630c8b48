"""How the operator's programs end (``ledger``, ``python -m projections``): an
exit code, and what the operator can act on as one line on stderr, never a
traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

import httpx
import psycopg

from ledger import errors


def guarded(prog: str, run: Callable[[], int]) -> int:
    """``run()``'s exit code; what an operator can act on is one line on stderr
    (exit 2), never a traceback."""
    try:
        return run()
    except errors.LedgerError as exc:
        print(f"{prog}: {exc.detail}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"{prog}: cannot reach the database: {exc}", file=sys.stderr)
        return 2
    except httpx.TransportError as exc:  # the ledger's API (``ledger worker``), after retries
        print(f"{prog}: cannot reach {_url(exc)}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
    except FileNotFoundError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2


def _url(exc: httpx.TransportError) -> str:
    try:
        return str(exc.request.url)
    except RuntimeError:  # raised without a request
        return "the ledger's API"
