"""The origin rule: a log keeps one origin (its checkpoints' first line) for
life, the one its first checkpoint was signed for."""

from __future__ import annotations

from typing import Any

import psycopg

from ledger import db, errors
from ledger.proofs import store
from ledger.settings import Settings


class OriginMismatch(errors.LedgerError):
    """LEDGER_ORIGIN names another log than the one this ledger's checkpoints sign."""


def stored_origin(conn: psycopg.Connection[Any]) -> str | None:
    """The origin line of the latest checkpoint, None before the first."""
    latest = store.latest_checkpoint(conn)
    return latest.origin if latest else None


def resolve_origin(settings: Settings, stored: str | None) -> Settings:
    """An unset LEDGER_ORIGIN takes the stored origin; a LEDGER_ORIGIN set to
    another is an error that says what to do (a silent switch would split the
    log in two for every auditor holding an old checkpoint)."""
    if stored is None or stored == settings.origin:
        return settings
    if "origin" in settings.model_fields_set:
        raise OriginMismatch(
            f"this ledger's checkpoints are signed for origin {stored!r}, but LEDGER_ORIGIN is "
            f"{settings.origin!r}; a log keeps its origin for life: set LEDGER_ORIGIN={stored} "
            "or unset it"
        )
    return settings.model_copy(update={"origin": stored})


def settings_with_stored_origin(settings: Settings, url: str) -> Settings:
    with psycopg.connect(db.service_conninfo(url, settings.db_role), autocommit=True) as conn:
        return resolve_origin(settings, stored_origin(conn))
