"""The domain errors. Below the API only these surface; ledger/api/errors.py
maps each to an HTTP status and an RFC 9457 problem document."""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    status = 500
    title = "Internal error"
    type_slug = "internal"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(LedgerError):
    status = 422
    title = "Invalid input"
    type_slug = "invalid-input"

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None, **extra: Any):
        super().__init__(detail, errors=errors or [], **extra)


class PayloadTooLarge(LedgerError):
    status = 422  # SPEC §1: refused with 422 like all content the ledger cannot take
    title = "Request body too large"
    type_slug = "payload-too-large"


class Unauthenticated(LedgerError):
    status = 401
    title = "Authentication required"
    type_slug = "unauthenticated"


class Forbidden(LedgerError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class NotFound(LedgerError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(LedgerError):
    """An illegal transition or a lost race on a stream (409)."""

    status = 409
    title = "Conflict"
    type_slug = "conflict"


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
    status = 412
    title = "Precondition failed"
    type_slug = "precondition-failed"


class IdempotencyMismatch(LedgerError):
    status = 422
    title = "Idempotency key reused with another request"
    type_slug = "idempotency-key-reused"


class DuplicateCommand(LedgerError):
    """The command's idempotency key was already used with the same request.

    Not an error for the client: the API answers as the first time."""

    status = 200
    title = "Already done"
    type_slug = "duplicate"

    def __init__(self, stream: str, first_position: int, last_position: int) -> None:
        super().__init__(
            f"already recorded at positions {first_position}..{last_position}",
            stream=stream,
        )
        self.stream = stream
        self.first_position = first_position
        self.last_position = last_position


class Unavailable(LedgerError):
    status = 503
    title = "Service unavailable"
    type_slug = "unavailable"


class OutcomeUnknown(Unavailable):
    """The database connection broke after the append was sent."""

    title = "Outcome unknown"
    type_slug = "outcome-unknown"


class Timeout(LedgerError):
    status = 504
    title = "Timed out"
    type_slug = "timeout"
