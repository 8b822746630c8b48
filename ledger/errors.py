"""The domain errors. Below the API only these surface; ledger/api/errors.py
maps each to an HTTP status and an RFC 9457 problem document."""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """A domain error: its HTTP status, a problem title and the problem type's slug."""

    status, title, type_slug = 500, "Internal error", "internal"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(LedgerError):
    status, title, type_slug = 422, "Invalid input", "invalid-input"

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None, **extra: Any):
        super().__init__(detail, errors=errors or [], **extra)


class Unauthenticated(LedgerError):
    status, title, type_slug = 401, "Authentication required", "unauthenticated"


class Forbidden(LedgerError):
    status, title, type_slug = 403, "Forbidden", "forbidden"


class NotFound(LedgerError):
    status, title, type_slug = 404, "Not found", "not-found"


class Conflict(LedgerError):
    """An illegal transition or a lost race on a stream (409)."""

    status, title, type_slug = 409, "Conflict", "conflict"


class VersionConflict(Conflict):
    type_slug = "version-conflict"

    def __init__(self, stream: str, expected: int | None, actual: int) -> None:
        super().__init__(
            f"stream {stream} is at version {actual}, not {expected}; "
            "read it again and retry the command",
            stream=stream,
            expected_version=expected,
            actual_version=actual,
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class IllegalTransition(Conflict):
    """A task command its current status does not allow (SPEC §3); nothing is written."""

    type_slug = "illegal-transition"


class PreconditionFailed(LedgerError):
    status, title, type_slug = 412, "Precondition failed", "precondition-failed"


class IdempotencyMismatch(LedgerError):
    status, title, type_slug = (
        422,
        "Idempotency key reused with another request",
        "idempotency-key-reused",
    )


class DuplicateCommand(LedgerError):
    """The command's idempotency key was already used with the same request.

    Not an error for the client: the API answers as the first time."""

    status, title, type_slug = 200, "Already done", "duplicate"

    def __init__(self, stream: str, first_position: int, last_position: int) -> None:
        super().__init__(
            f"already recorded at positions {first_position}..{last_position}",
            stream=stream,
        )
        self.stream = stream
        self.first_position = first_position
        self.last_position = last_position


class Unavailable(LedgerError):
    status, title, type_slug = 503, "Service unavailable", "unavailable"


class Overloaded(Unavailable):
    """More work is waiting than the service takes on; nothing was written."""

    title, type_slug = "Service overloaded", "overloaded"


class DatabaseUnavailable(Unavailable):
    """PostgreSQL did not answer (stopped, restarting, unreachable); nothing was written."""

    title, type_slug = "Database unavailable", "database-unavailable"


class OutcomeUnknown(Unavailable):
    """The database connection broke after the append was sent."""

    title, type_slug = "Outcome unknown", "outcome-unknown"
