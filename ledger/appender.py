"""The single writer: concurrent appends grouped into one transaction.

Every :class:`StreamAppend` handed to :meth:`Appender.append` waits in a
queue; one task takes whatever has gathered (up to ``max_batch_events``) and
hands it to the ``ledger_append`` SQL function in one statement on an
autocommit connection (a batch of ``COPY_MIN_EVENTS`` or more is chained
here under the same lock and COPYed in instead: ``ledger.copy_append``). That statement is the whole transaction: it locks the
head row, checks each append's expected version and idempotency key, chains
and inserts the events, moves the head and NOTIFYs; its commit is the group
commit. While it runs, the next batch gathers. An append is answered only
after the commit.

Position order = commit order = chain order however many processes append,
because each batch holds the head row lock from its first read to its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from ledger import db, errors
from ledger.copy_append import COPY_MIN_EVENTS, append_copy
from ledger.events import Envelope, StreamAppend

log = structlog.get_logger("ledger.appender")


def _params(appends: Sequence[StreamAppend]) -> tuple[list[Any], ...]:
    streams: list[Any] = []
    expected: list[Any] = []
    i_actor: list[Any] = []
    i_key: list[Any] = []
    i_hash: list[Any] = []
    counts: list[Any] = []
    types: list[Any] = []
    bodies: list[Any] = []
    for c in appends:
        c.prepare()
        streams.append(c.stream)
        expected.append(c.expected_version)
        actor, key, digest = c.idempotency or (None, None, None)
        i_actor.append(actor)
        i_key.append(key)
        i_hash.append(digest)
        counts.append(len(c.events))
        types.extend(e.type for e in c.events)
        bodies.extend(c.bodies)
    return streams, expected, i_actor, i_key, i_hash, counts, types, bodies


def _results(
    appends: Sequence[StreamAppend], rows: Sequence[tuple[Any, ...]]
) -> list[list[Envelope] | errors.LedgerError]:
    out: list[list[Envelope] | errors.LedgerError] = [[] for _ in appends]
    for cmd, outcome, position, version, h, prev, recorded_at, detail in rows:
        i = cmd - 1
        c = appends[i]
        if outcome == "ok":
            slot = out[i]
            assert isinstance(slot, list)
            e = c.events[len(slot)]
            slot.append(
                Envelope(
                    position=position,
                    stream=c.stream,
                    version=version,
                    type=e.type,
                    data=e.data,
                    meta=c.meta,
                    recorded_at=recorded_at,
                    prev_hash=bytes(prev).hex(),
                    hash=bytes(h).hex(),
                )
            )
        elif outcome == "conflict":
            out[i] = errors.VersionConflict(c.stream, c.expected_version, detail)
        elif outcome == "duplicate":
            out[i] = errors.DuplicateCommand(c.stream, position, detail)
        elif outcome == "idempotency_mismatch":
            out[i] = errors.IdempotencyMismatch(
                "this Idempotency-Key was already used with a different request; "
                "use a new key for a new request",
            )
        else:  # pragma: no cover - the SQL function knows no other outcome
            out[i] = errors.LedgerError(f"unknown append outcome {outcome!r}")
    return out


def _map_db_error(exc: psycopg.Error) -> errors.LedgerError:
    if isinstance(exc, psycopg.errors.CheckViolation):
        return errors.InvalidInput(
            f"refused by the ledger's constraints: {exc.diag.message_primary}"
        )
    if isinstance(exc, psycopg.errors.UniqueViolation):
        # (stream, version) raced with another writer outside our head lock: cannot
        # happen while everyone appends through ledger_append, but say what it is.
        return errors.Conflict("a concurrent append won the race; retry the command")
    if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
        return errors.Unavailable("the ledger is busy (lock timeout); retry shortly", retry_after=1)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return errors.OutcomeUnknown(
            "the database connection failed during the append; the command may or may not "
            "have been recorded: retry with the same Idempotency-Key",
            retry_after=1,
        )
    return errors.LedgerError(f"append failed: {exc.diag.message_primary or exc}")


def append_sync(
    conn: psycopg.Connection[Any], appends: Sequence[StreamAppend]
) -> list[list[Envelope] | errors.LedgerError]:
    """One batch on a plain connection (CLI, tests, tools). Autocommit expected."""
    rows = conn.execute(db.q("events", "append"), _params(appends)).fetchall()
    return _results(appends, rows)


@dataclass(slots=True)
class _Pending:
    append: StreamAppend
    future: asyncio.Future[list[Envelope]]


def _fail(batch: Sequence[_Pending], err: errors.LedgerError) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(err)


class Appender:
    """Group-commit writer for one process. ``append`` is safe to call from many tasks."""

    def __init__(
        self,
        conninfo: str,
        *,
        role: str | None = "ledger_service",
        max_batch_events: int = 1000,
        queue_max: int = 0,
        **conn_params: Any,
    ) -> None:
        """``queue_max``: most appends waiting for the writer (0: no bound);
        ``conn_params``: for :func:`db.service_conninfo` (timeouts)."""
        self._conninfo = db.service_conninfo(conninfo, role, **conn_params)
        self._max = max_batch_events
        self._queue_max = queue_max
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self.batches = 0
        self.batches_started = 0
        self.appended = 0

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._run(), name="ledger-appender")

    async def _connect(self) -> None:
        self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            p = self._queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(errors.Unavailable("the service is shutting down"))
        if self._conn:
            await self._conn.close()

    async def append(self, request: StreamAppend) -> list[Envelope]:
        """Append one request's events; returns them as recorded, after commit.

        Raises VersionConflict, DuplicateCommand, IdempotencyMismatch, or an
        Unavailable/OutcomeUnknown when the database fails.
        """
        if self._task is None or self._task.done():
            raise errors.Unavailable("the appender is not running")
        if self._queue_max and self._queue.qsize() >= self._queue_max:
            # Backpressure: answered at once (nothing written) rather than
            # queued behind more work than the writer clears in a moment.
            raise errors.Overloaded(
                f"{self._queue.qsize()} commands are waiting for the ledger's writer; "
                "nothing was written; retry shortly",
                retry_after=1,
            )
        request.prepare()  # hashing work stays outside the lock and the writer task
        fut: asyncio.Future[list[Envelope]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(request, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            n = len(first.append.events)
            while n < self._max and not self._queue.empty():
                p = self._queue.get_nowait()
                batch.append(p)
                n += len(p.append.events)
            await self._flush(batch)

    async def _flush(self, batch: list[_Pending]) -> None:
        appends = [p.append for p in batch]
        self.batches_started += 1
        t0 = time.perf_counter()
        if self._conn is None or self._conn.closed:
            try:
                await self._connect()
            except psycopg.Error as exc:  # nothing was sent: nothing was written
                log.warning("append_connect_failed", size=len(batch), error=str(exc))
                self._conn = None
                _fail(
                    batch,
                    errors.DatabaseUnavailable(
                        "the database is not accepting connections; nothing was written; "
                        "retry shortly",
                        retry_after=1,
                    ),
                )
                return
        try:
            assert self._conn is not None
            if sum(len(a.events) for a in appends) >= COPY_MIN_EVENTS:
                # chained here and COPYed in: the same rows, hashes and answers
                rows: Sequence[tuple[Any, ...]] = await append_copy(self._conn, appends)
            else:
                cur = await self._conn.execute(db.q("events", "append"), _params(appends))
                rows = await cur.fetchall()
        except psycopg.Error as exc:
            if (
                len(batch) > 1
                and not isinstance(exc, psycopg.OperationalError)
                and self._conn is not None
                and not self._conn.broken
            ):
                # The database refused something in one command (a constraint,
                # content it cannot take): the whole transaction rolled back.
                # Append each command on its own so only the bad one is refused.
                log.warning("append_batch_split", size=len(batch), sqlstate=exc.sqlstate)
                for p in batch:
                    await self._flush([p])
                return
            log.error("append_failed", size=len(batch), error=str(exc), sqlstate=exc.sqlstate)
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self._conn = None
            _fail(batch, _map_db_error(exc))
            return
        except Exception as exc:  # never leave a waiter hanging
            log.exception("append_crashed", size=len(batch))
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(errors.LedgerError(f"append failed: {exc}"))
            return
        results = _results(appends, rows)
        positions = [r["position"] for res in results if isinstance(res, list) for r in res]
        self.batches += 1
        self.appended += len(positions)
        log.info(
            "events_appended",
            appends=len(batch),
            events=len(positions),
            first_position=positions[0] if positions else None,
            last_position=positions[-1] if positions else None,
            commit_ms=round((time.perf_counter() - t0) * 1000, 3),
        )
        for p, res in zip(batch, results, strict=True):
            if p.future.done():
                continue
            if isinstance(res, list):
                p.future.set_result(res)
            else:
                p.future.set_exception(res)
