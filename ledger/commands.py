"""Task commands as a service: load the stream, fold, decide, append.

Route handlers, the lease sweeper and the queue claim all go through
:func:`execute` (the claim of "the next queued task" through
:func:`claim_next`); reads go through :func:`load`. Nothing here knows HTTP:
the errors raised are ``ledger.errors`` classes, mapped to statuses in one
place (``ledger/api/errors.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog
from psycopg_pool import AsyncConnectionPool

from ledger import clock, errors, store, tasks
from ledger.appender import Appender
from ledger.db import q
from ledger.events import Envelope, NewEvent, StreamAppend, request_digest
from ledger.tasks import TaskCommand, TaskState

log = structlog.get_logger("ledger.commands")

DEFAULT_ATTEMPTS = 5
# POST /tasks/claim locks one candidate at a time: a claim never holds rows it
# is not trying, so concurrent claims each find one to take.
PER_ROUND = 1
# How long a claim waits, in all, for rows other claims hold to be released
# before it answers 503 (it never answers 204 while the queue is only busy).
BUSY_WAIT_SECONDS = 2.0


# Seals a command's events before they are appended (ledger.privacy.service):
# (state decided on, stream, events) -> the events to append.
Sealer = Callable[[TaskState | None, str, list[NewEvent]], Awaitable[list[NewEvent]]]


class Backend(Protocol):
    """What commands need from the running service (``ledger.api.deps.Context`` is one)."""

    pool: AsyncConnectionPool
    appender: Appender


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command did: the task after it and the events it wrote.

    ``duplicate`` is True when an Idempotency-Key showed the command had been
    done before: ``events`` and ``state`` are then the first time's, rebuilt
    from the ledger, and nothing new was written.
    """

    task_id: str
    state: TaskState
    events: list[Envelope]
    duplicate: bool = False

    @property
    def version(self) -> int:
        return int(self.events[-1]["version"])

    @property
    def position(self) -> int:
        return int(self.events[-1]["position"])


def claim(lease_seconds: float, at: datetime | None = None) -> tasks.Claim:
    """The Claim command for a lease of ``lease_seconds``."""
    return tasks.Claim(clock.lease_until(lease_seconds, at))


async def load(
    pool: AsyncConnectionPool,
    task_id: str,
    *,
    upto_position: int | None = None,
    upto_time: datetime | None = None,
) -> tuple[TaskState | None, list[Envelope]]:
    """The task's state folded from its events (optionally up to a position or
    a moment), and those events as full envelopes. ``(None, [])`` when the
    stream has no events in that range."""
    async with pool.connection() as conn:
        events = await store.read_stream(
            conn, tasks.stream_for(task_id), upto_position=upto_position, upto_time=upto_time
        )
    return tasks.fold(events), events


async def execute(
    backend: Backend,
    task_id: str | None,
    command: TaskCommand,
    principal: tasks.Actor,
    *,
    meta: dict[str, Any],
    expected_version: int | None = None,
    idempotency: tuple[str, Any] | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    seal: Sealer | None = None,
) -> Outcome:
    """Run one task command and return what it wrote.

    * ``backend``: anything with ``pool`` and ``appender`` (the app's Context).
    * ``task_id``: the task's UUID as a string; ``None`` for ``tasks.Submit``,
      which gets a new UUIDv7 made here.
    * ``command``: a ``tasks`` command (``claim(lease_seconds)`` builds a Claim).
    * ``principal``: who acts (``.name``, ``.role``); ``meta``: the events'
      meta, ``actor``/``role`` from that principal (``deps.meta_for``).
    * ``expected_version``: the stream version the caller saw (If-Match, or a
      version taken from a task view). When the stream is at another version,
      before or during the append, nothing is written and
      ``errors.PreconditionFailed`` (412) is raised; the queue claim treats it
      as "someone else got there first".
    * ``idempotency``: ``(key, request)``; ``request`` is the JSON value the key
      is bound to (routes pass the route, the task id and the body). Same key, same
      principal, same request: the first answer is rebuilt from the ledger
      (``Outcome.duplicate``) and nothing is written, across restarts too,
      since the key is stored with the events. Another request:
      ``errors.IdempotencyMismatch`` (422).
    * ``attempts``: how often the decision is taken again when another writer
      moved the stream between our read and our append; then ``errors.Conflict``.
    * ``seal``: what protects the task type's fields in the decided events
      before their canonical bytes are made (``ledger.privacy``).

    Raises what ``tasks.decide`` raises (NotFound 404, Forbidden 403,
    IllegalTransition 409), and the appender's Unavailable / OutcomeUnknown.
    """
    key_digest: bytes | None = None
    if idempotency is not None:
        key, request = idempotency
        key_digest = request_digest(request)
        prior = await _prior(backend.pool, principal.name, key, key_digest)
        if prior is not None:
            return prior
    if isinstance(command, tasks.Submit):
        task_id = str(clock.uuid7())
    if task_id is None:
        raise errors.InvalidInput("a task id is needed for this command")
    stream = tasks.stream_for(task_id)

    for attempt in range(1, attempts + 1):
        if isinstance(command, tasks.Submit) and attempt == 1:
            state = None  # a UUIDv7 minted above: its stream has nothing to read yet
        else:
            state, _events = await load(backend.pool, task_id)
        current = state.version if state else 0
        # Decide first: a precondition is judged only for a request that would
        # otherwise succeed (RFC 9110 §13.2.1), so 404/403/409 come before 412.
        new = tasks.decide(state, command, principal)
        if expected_version is not None and expected_version != current:
            if isinstance(command, tasks.Submit):
                raise errors.PreconditionFailed(
                    f"a submission creates a new task, at version 0; If-Match: {expected_version} "
                    "cannot hold (send no If-Match, or 0)",
                    expected_version=expected_version,
                    actual_version=0,
                )
            raise _precondition(task_id, expected_version, current)
        if seal is not None:
            new = await seal(state, stream, new)
        append = StreamAppend(
            stream=stream,
            events=new,
            meta=meta,
            expected_version=current,
            idempotency=(principal.name, idempotency[0], key_digest)
            if idempotency is not None and key_digest is not None
            else None,
        )
        try:
            recorded = await backend.appender.append(append)
        except errors.VersionConflict as exc:
            if expected_version is not None:
                raise _precondition(task_id, expected_version, exc.actual) from None
            log.info("task_command_raced", task_id=task_id, attempt=attempt, actual=exc.actual)
            continue
        except errors.DuplicateCommand as dup:
            return await _rebuild(backend.pool, dup.stream, dup.first_position, dup.last_position)
        after = tasks.fold(recorded, state)
        assert after is not None
        return Outcome(task_id, after, recorded)
    raise errors.Conflict(
        f"task {task_id} kept changing while the command was decided ({attempts} attempts); "
        "read it again and retry",
        task_id=task_id,
    )


async def claim_next(
    backend: Backend,
    principal: tasks.Actor,
    task_types: list[str] | None,
    lease_seconds: float,
    *,
    meta: dict[str, Any],
    idempotency: tuple[str, Any] | None,
    slots: asyncio.Semaphore,
    candidates: int = 20,
) -> Outcome | None:
    """``POST /tasks/claim``: claim the next queued task; None when the task
    view shows none queued.

    Candidates are the view's queued tasks of the types asked, highest
    priority first, then the oldest, taken ``FOR UPDATE SKIP LOCKED`` so
    concurrent claims spread over different tasks. The claim itself is a
    :func:`execute` of Claim with the version the view showed as the expected
    version: a stale view row (claimed or cancelled since) makes the append
    fail and the next candidate is tried, so a lagging view costs a retry,
    never a task handed to two workers. Each claim holds one pooled connection
    (the row locks) while :func:`execute` borrows another; ``slots`` bounds the
    claims in flight so they never exhaust the pool waiting on each other.

    Raises ``errors.Unavailable`` (503, retry) when ``candidates`` queued
    tasks were all taken by others while this claim tried them."""
    if idempotency is not None:
        key, request = idempotency
        prior = await _prior(backend.pool, principal.name, key, request_digest(request))
        if prior is not None:
            return prior
    tried: list[str] = []
    busy_until: float | None = None
    loop = asyncio.get_running_loop()
    async with slots:
        while len(tried) < candidates:
            params = {"types": task_types or None, "tried": tried}
            async with backend.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    q("projections", "queue_candidates"),
                    {**params, "limit": min(PER_ROUND, candidates - len(tried))},
                )
                rows = await cur.fetchall()
                if not rows:
                    cur = await conn.execute(q("projections", "queue_any_left"), params)
                    left = await cur.fetchone()
                    if not (left and left[0]):
                        return None  # nothing of these types is queued: 204
                for task_id, version in rows:
                    tried.append(task_id)
                    try:
                        return await execute(
                            backend,
                            task_id,
                            claim(lease_seconds),
                            principal,
                            meta=meta,
                            expected_version=int(version),
                            idempotency=idempotency,
                            attempts=1,
                        )
                    except (errors.PreconditionFailed, errors.IllegalTransition) as exc:
                        log.info("queue_candidate_taken", task_id=task_id, reason=exc.detail)
            if not rows:
                # Queued tasks remain, but other claims in flight hold them:
                # the queue is busy, not empty. Wait (bounded) for their rows.
                now = loop.time()
                busy_until = busy_until or now + BUSY_WAIT_SECONDS
                if now >= busy_until:
                    break
                await asyncio.sleep(0.005)
    raise errors.Unavailable(
        f"queued tasks remain, but the {len(tried)} this claim tried were taken by other "
        "workers meanwhile and the rest were held by claims in flight; retry",
        retry_after=1,
    )


def _precondition(task_id: str, expected: int, actual: int) -> errors.PreconditionFailed:
    return errors.PreconditionFailed(
        f"task {task_id} is at version {actual}, not {expected}; read it again",
        task_id=task_id,
        expected_version=expected,
        actual_version=actual,
    )


async def _prior(pool: AsyncConnectionPool, actor: str, key: str, digest: bytes) -> Outcome | None:
    """The first answer to an Idempotency-Key ``actor`` already used, or None
    when the key is new; refused when it was used for another request."""
    async with pool.connection() as conn:
        cur = await conn.execute(q("events", "idempotency_lookup"), {"actor": actor, "key": key})
        row = await cur.fetchone()
    if row is None:
        return None
    request_sha256, stream, first, last = row
    if bytes(request_sha256) != digest:
        raise errors.IdempotencyMismatch(
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new request"
        )
    return await _rebuild(pool, stream, int(first), int(last))


async def _rebuild(pool: AsyncConnectionPool, stream: str, first: int, last: int) -> Outcome:
    """The first answer again: the stream folded up to the command's last event."""
    async with pool.connection() as conn:
        events = await store.read_stream(conn, stream, upto_position=last)
    state = tasks.fold(events)
    if state is None:  # pragma: no cover - the key is written with the events
        raise errors.LedgerError(f"idempotency record points at a missing stream {stream}")
    written = [e for e in events if first <= e["position"] <= last]
    return Outcome(state.id, state, written, duplicate=True)
