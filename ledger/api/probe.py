"""The health probe's own database session: ``/health`` answers within a
second whatever the pool is doing (every pooled connection busy under a
burst, requests queued for one, PostgreSQL gone), because it never waits in
the pool's queue. One connection, one probe at a time, made again after it
broke; a probe that cannot reach the database in time says so."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from ledger import db, store

# The longest /health spends on the database before it answers "unreachable".
PROBE_SECONDS = 1.0


class Probe:
    def __init__(self, url: str, role: str | None) -> None:
        self.conninfo = db.service_conninfo(
            url, role, statement_timeout=PROBE_SECONDS, application_name="ledger-api-health"
        )
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def session(self, timeout: float = PROBE_SECONDS) -> AsyncIterator[Any]:
        """The probe's connection, one user at a time, everything done with it
        within ``timeout``; raises TimeoutError or psycopg.Error."""
        async with asyncio.timeout(timeout), self.lock:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = await psycopg.AsyncConnection.connect(
                        self.conninfo, autocommit=True
                    )
                yield self.conn
            except BaseException:
                await self.close()
                raise

    async def head(self, timeout: float = PROBE_SECONDS) -> tuple[int, str]:
        """The ledger head, read now."""
        async with self.session(timeout) as conn:
            return await store.head_async(conn)

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def probe_of(ctx: Any) -> Probe:
    probe: Probe | None = ctx.extras.get("health_probe")
    if probe is None:
        probe = ctx.extras["health_probe"] = Probe(ctx.url, ctx.settings.db_role)
    return probe


async def start_probe(ctx: Any) -> Any:
    """SERVICES entry: the probe's session, closed when the app stops."""
    probe = probe_of(ctx)

    async def stop() -> None:
        await probe.close()

    return stop
