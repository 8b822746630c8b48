"""The log's side of C2SP tlog-witness: each new checkpoint goes to every
witness configured (``LEDGER_WITNESSES``), with a consistency proof from the
size that witness last cosigned, and the cosignatures that come back are
stored (``ledger.witness.store``) and served with the checkpoint.

It reads checkpoints from PostgreSQL (woken by the ``ledger_checkpoint_signed``
NOTIFY the checkpoints table sends, and polling besides) and keeps nothing
another process needs: it runs wherever the checkpointer runs, one leader at a
time (an advisory lock). A witness that cannot be reached is marked so in
``witness_status`` (shown in ``/health``) and logged once
(``witness_unreachable``); it is retried every ``LEDGER_WITNESS_RETRY_SECONDS``
and given the latest checkpoint when it is back. The ledger never waits for it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import structlog

from ledger import db
from ledger.db import q
from ledger.proofs import cosignature, note
from ledger.proofs import store as tree_store
from ledger.proofs.store import SignedCheckpoint
from ledger.proofs.tiles import TileCache
from ledger.settings import Settings

log = structlog.get_logger("ledger.witness")

SUBMITTER_LOCK = 0x1ED6E7
SIGNED_CHANNEL = "ledger_checkpoint_signed"
SIZE_TYPE = "text/x.tlog.size"


@dataclass(frozen=True, slots=True)
class WitnessConfig:
    url: str
    key: cosignature.CosignerKey


def parse_witnesses(text: str) -> list[WitnessConfig]:
    """``LEDGER_WITNESSES``: entries ``URL VKEY`` separated by commas."""
    out: list[WitnessConfig] = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        parts = entry.split()
        if len(parts) != 2:
            raise ValueError(f"a witness is 'URL VKEY', got {entry.strip()!r}")
        out.append(WitnessConfig(parts[0].rstrip("/"), cosignature.CosignerKey.parse(parts[1])))
    return out


class Unreachable(Exception):
    pass


class Submitter:
    def __init__(self, url: str, settings: Settings, witnesses: list[WitnessConfig]) -> None:
        self.conninfo = db.service_conninfo(url, settings.db_role)
        self.settings = settings
        self.witnesses = witnesses
        self.cache = TileCache(limit=256)
        self.down: set[str] = set()  # vkeys of witnesses found unreachable, for logging once
        self.refused: dict[str, int] = {}  # vkey -> the size it refused: not asked again
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        """Lead when the lock is free; stand by otherwise. Returns once stopped."""
        while not self.stopping.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as lock_conn:
                    cur = await lock_conn.execute(
                        q("log", "submitter_lock"), {"key": SUBMITTER_LOCK}
                    )
                    row = await cur.fetchone()
                    if not (row and row[0]):
                        await self._sleep(2.0)
                        continue
                    await lock_conn.execute(f"LISTEN {SIGNED_CHANNEL}")
                    async with (
                        await psycopg.AsyncConnection.connect(
                            self.conninfo, autocommit=True
                        ) as work,
                        httpx.AsyncClient(timeout=self.settings.witness_timeout_seconds) as http,
                    ):
                        await self._lead(lock_conn, work, http)
            except (psycopg.Error, OSError) as exc:
                if not self.stopping.is_set():
                    log.warning("witness_submitter_lost_database", error=str(exc))
                    await self._sleep(1.0)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _lead(
        self,
        lock_conn: psycopg.AsyncConnection[Any],
        work: psycopg.AsyncConnection[Any],
        http: httpx.AsyncClient,
    ) -> None:
        while not self.stopping.is_set():
            cp = await tree_store.latest_checkpoint_async(work)
            pending = False
            if cp is not None:
                done = await asyncio.gather(
                    *(self.submit(work, http, w, cp) for w in self.witnesses)
                )
                pending = not all(done)
            wait = self.settings.witness_retry_seconds if pending else 5.0
            gen = lock_conn.notifies(timeout=wait, stop_after=1)
            async for _n in gen:
                pass
            if self.stopping.is_set():
                return

    async def submit(
        self,
        conn: psycopg.AsyncConnection[Any],
        http: httpx.AsyncClient,
        w: WitnessConfig,
        cp: SignedCheckpoint,
    ) -> bool:
        """Get ``w``'s cosignature on ``cp``. False when it is worth trying again
        (the witness was unreachable); True when it is stored, or when the
        witness refused this checkpoint: that stands until the next one."""
        witness = w.key.vkey
        cur = await conn.execute(q("log", "has_cosignature"), {"size": cp.size, "witness": witness})
        if await cur.fetchone() or self.refused.get(witness) == cp.size:
            return True
        cur = await conn.execute(q("log", "witness_status"), {"witness": witness})
        row = await cur.fetchone()
        old = int(row[0]) if row and row[0] is not None else 0
        try:
            for _attempt in range(3):
                if old > cp.size:
                    return await self._failed(
                        conn, w, f"it has cosigned size {old}, beyond {cp.size}"
                    )
                proof = await tree_store.consistency(conn, self.cache, old, cp.size) if old else []
                body = (
                    "".join(
                        [
                            f"old {old}\n",
                            *(base64.b64encode(h).decode() + "\n" for h in proof),
                            "\n",
                        ]
                    )
                    + cp.note
                )
                try:
                    r = await http.post(f"{w.url}/add-checkpoint", content=body.encode())
                except httpx.HTTPError as exc:
                    raise Unreachable(f"{type(exc).__name__}: {exc}") from None
                if r.status_code == 409 and r.headers.get("content-type", "").startswith(SIZE_TYPE):
                    old = int(r.text.strip())
                    await self._status(conn, w, old, True, None)
                    continue
                if r.status_code >= 500:
                    raise Unreachable(f"{r.status_code}: {r.text.strip()[:200]}")
                if r.status_code != 200:
                    self.refused[witness] = cp.size
                    return await self._failed(conn, w, f"{r.status_code}: {r.text.strip()[:200]}")
                return await self._store(conn, w, cp, r.text)
            await self._failed(conn, w, "its size kept moving")
            return False
        except Unreachable as exc:
            await self._status(conn, w, None, False, f"unreachable: {exc}")
            if witness not in self.down:
                self.down.add(witness)
                log.warning("witness_unreachable", witness=w.key.name, url=w.url, error=str(exc))
            return False

    async def _store(
        self, conn: psycopg.AsyncConnection[Any], w: WitnessConfig, cp: SignedCheckpoint, body: str
    ) -> bool:
        text = cosignature.note_text(cp.note)
        for line in body.splitlines():
            try:
                ts = w.key.verify_line(line, text)
            except note.NoteError as exc:
                return await self._failed(conn, w, f"a bad cosignature: {exc.detail}")
            if ts is None:
                continue  # a line by a key we were not given: ignored, as the text says
            await conn.execute(
                q("log", "put_cosignature"),
                {"size": cp.size, "witness": w.key.vkey, "line": line, "signed_time": ts},
            )
            await self._status(conn, w, cp.size, True, None)
            if w.key.vkey in self.down:
                self.down.discard(w.key.vkey)
                log.info("witness_reachable", witness=w.key.name, url=w.url)
            log.info("checkpoint_cosigned", witness=w.key.name, tree_size=cp.size)
            return True
        return await self._failed(conn, w, "no cosignature by its key in the answer")

    async def _failed(self, conn: psycopg.AsyncConnection[Any], w: WitnessConfig, why: str) -> bool:
        """A refusal of this checkpoint, recorded and logged: not retried."""
        await self._status(conn, w, None, True, why)
        log.warning("witness_refused", witness=w.key.name, url=w.url, reason=why)
        return True

    async def _status(
        self,
        conn: psycopg.AsyncConnection[Any],
        w: WitnessConfig,
        size: int | None,
        ok: bool,
        error: str | None,
    ) -> None:
        await conn.execute(
            q("log", "put_witness_status"),
            {"witness": w.key.vkey, "url": w.url, "size": size, "ok": ok, "error": error},
        )


async def start_service(ctx: Any) -> Any:
    """SERVICES entry: nothing to do without LEDGER_WITNESSES; else the submitter."""
    witnesses = parse_witnesses(ctx.settings.witnesses)
    if not witnesses:

        async def nothing() -> None:
            return None

        return nothing
    submitter = Submitter(ctx.url, ctx.settings, witnesses)
    task = asyncio.create_task(submitter.run(), name="ledger-witness-submitter")
    ctx.extras["witness_submitter"] = submitter

    async def stop() -> None:
        submitter.stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    return stop
