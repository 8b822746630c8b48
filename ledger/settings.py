"""Settings, read from the environment (``LEDGER_`` prefix) when the app is built."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore")

    # A PostgreSQL server; unset means the embedded server under ``home``.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("LEDGER_DATABASE_URL", "DATABASE_URL")
    )
    home: Path = Path(".ledger")
    # Largest request body accepted (SPEC §1: default 256 KiB).
    max_body_bytes: int = 256 * 1024
    pool_min: int = 2
    pool_max: int = 10
    # -- outages and overload: every request is answered within a bound --
    # Longest a request waits for a pooled connection (seconds) before a 503;
    # also for its turn past max_inflight_requests: at most twice this in all.
    pool_timeout_seconds: float = 2.5
    # Most requests waiting for a pooled connection; past it a 503 at once.
    pool_max_waiting: int = 2000
    # Longest a connection attempt to PostgreSQL may take (libpq, whole seconds, >= 2).
    db_connect_timeout_seconds: int = 3
    # Longest one statement of the API (pool and appender) may run (seconds).
    db_statement_timeout_seconds: float = 5.0
    # Most commands waiting for the single writer; past it a command gets a 503
    # with Retry-After at once instead of queueing (backpressure).
    append_queue_max: int = 1000
    # Most requests worked on at once (0: no limit); the rest wait their turn
    # for at most pool_timeout_seconds, then get a 503. /health never waits.
    max_inflight_requests: int = 256
    # Group commit: most events one append transaction takes.
    max_batch_events: int = 1000
    # Role the service acts as inside PostgreSQL (SELECT and INSERT on events).
    db_role: str | None = "ledger_service"
    # How long an authenticated key stays cached before it is looked up again.
    auth_cache_seconds: float = 1.0
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    # Lease handed out by a claim when the agent names none (seconds).
    default_lease_seconds: int = 60
    max_lease_seconds: int = 3600
    # How often the service looks for lapsed leases (seconds; 0 turns it off).
    lease_sweep_seconds: float = 1.0
    # Longest GET /tasks/{id}?min_position=N waits for the views (seconds).
    max_wait_seconds: float = 5.0
    # -- proofs and signed checkpoints (SPEC §5) --
    # The checkpoint's origin line; also the name given to a key generated here.
    origin: str = "ledger.example/audit-ledger"
    # Ed25519 signing key in signed-note form (mode 0600); unset: <home>/signing.key,
    # generated on first start.
    signing_key_file: Path | None = None
    # While events arrive, a signed checkpoint follows at most this long after them.
    checkpoint_interval_seconds: float = 1.0
    # The tree builder wakes on NOTIFY, and polls this often besides (seconds).
    tree_poll_seconds: float = 0.25
    # GET /audit/checkpoint waits this long for a fresh one when the head is ahead.
    checkpoint_wait_seconds: float = 2.0
    # GET /audit/verify (incremental) also re-hashes this many events it verified
    # before, in turn, so a change anywhere is found within ceil(head / this) calls.
    verify_sweep_events: int = 100_000
    # -- projections (projections/) --
    # Most events a projection batch (one transaction) applies.
    projection_batch_size: int = 1000
    # A leading runner wakes on NOTIFY, and polls this often besides (seconds).
    projection_poll_seconds: float = 0.5
    # Woken by a commit, a caught-up runner waits this long first (seconds), so
    # the commits of that moment share one batch (one transaction) instead of
    # one each: less of the cores the API shares, for that much more lag.
    projection_gather_seconds: float = 0.01
    # A standby runner tries to take the lead this often (seconds).
    projection_standby_seconds: float = 1.0
    # After a batch failed (an event the fold refuses), wait this long to retry.
    projection_retry_seconds: float = 5.0
    # POST /tasks/claim: how many queued candidates it tries before a 503.
    claim_candidates: int = 20
    # The API process's young-generation GC threshold (Python's default: 700
    # allocations). Requests allocate fast and free by reference counting; the
    # cyclic collector running every 700 allocations cost ~15% of throughput
    # and most of the p99 in `make bench`. 0 keeps Python's default.
    gc_threshold: int = 10_000
    # Well-formed POST /tasks answered without FastAPI's per-request machinery
    # (ledger/api/fast_submit.py); false: every request goes through the routes.
    fast_submit: bool = True
    # -- the public log (/log/: C2SP tlog-tiles) and its witnesses --
    # Unset: /log/ is public; set: it wants 'Authorization: Bearer <this token>'.
    log_read_token: str | None = None
    # Witnesses each new checkpoint is submitted to: entries "URL VKEY" separated by
    # commas (VKEY: the witness's cosignature/v1 key). Empty: none.
    witnesses: str = ""
    # Cosignatures a checkpoint needs before GET /log/checkpoint serves it.
    witness_quorum: int = 0
    # One add-checkpoint request's limit, and the wait before retrying a failed witness.
    witness_timeout_seconds: float = 5.0
    witness_retry_seconds: float = 1.0
    # -- protected fields (docs/privacy.md) --
    # The key-encryption key that wraps the data keys (base64url of 32 bytes,
    # mode 0600); unset: <home>/kek.key, generated on first use.
    kek_file: Path | None = None
    # -- the compliance console (ledger/console/) --
    # A console session ends this long after sign-in (seconds).
    console_session_seconds: float = 1800.0
    # Mark the console's cookies Secure even on plain HTTP (behind a TLS proxy).
    console_secure_cookies: bool = False
