"""Protected fields in the running service: a command's events are sealed
before the appender makes their canonical bytes (so the chain hashes the
ciphertext), and reads reveal them to the roles that may read them, or show
a marker (docs/privacy.md §4).

One :class:`Privacy` per app, kept in the context's ``extras``
(:func:`of`); the KEK is loaded, or made, on first use."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from psycopg_pool import AsyncConnectionPool

from ledger import errors, tasks
from ledger.events import Envelope, NewEvent
from ledger.privacy import crypto, keystore
from ledger.privacy.fields import (
    MARK,
    PARTS,
    REGISTRY,
    Protected,
    Registry,
    contains_mark,
    envelopes,
    needs_sealing,
    seal_data,
)
from ledger.privacy.reveal import readable, reveal
from ledger.settings import Settings
from ledger.tasks import TaskState

log = structlog.get_logger("ledger.privacy")


def kek_path(settings: Settings) -> Path:
    return settings.kek_file or settings.home / "kek.key"


class Privacy:
    def __init__(
        self, settings: Settings, pool: AsyncConnectionPool, registry: Registry = REGISTRY
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.registry = registry
        self._kek: crypto.Kek | None = None
        self._lock = asyncio.Lock()

    async def kek(self, *, reload: bool = False) -> crypto.Kek:
        """The KEK; ``reload``: read its file again (it was rotated). A KEK
        file that cannot be used answers 503 with what is wrong with it."""
        path = kek_path(self.settings)
        async with self._lock:
            try:
                if reload and self._kek is not None:
                    old = self._kek
                    self._kek = await asyncio.to_thread(crypto.load_kek, path)
                    if self._kek.id != old.id:
                        log.info("kek_reloaded", kek_id=self._kek.id, previous=old.id)
                if self._kek is None:
                    kek, made = await asyncio.to_thread(crypto.load_or_create_kek, path)
                    if made:
                        log.info("kek_created", kek_id=kek.id, path=str(path))
                    self._kek = kek
            except (OSError, ValueError) as exc:  # PermissionError is an OSError
                log.error("kek_unusable", path=str(path), error=str(exc))
                raise errors.Unavailable(
                    f"the key-encryption key cannot be used: {exc}", retry_after=5
                ) from None
            return self._kek

    # -- writing ------------------------------------------------------------------

    async def seal(
        self, state: TaskState | None, stream: str, new: list[NewEvent]
    ) -> list[NewEvent]:
        """``new`` with the task type's protected fields sealed; the same list
        (the same objects) for a task type that protects nothing."""
        if state is None:
            submitted = next((e for e in new if e.type == "TaskSubmitted"), None)
            if submitted is None:
                return new
            task_type, payload = submitted.data["task_type"], submitted.data.get("payload") or {}
        else:
            task_type, payload = state.task_type, state.payload
        policy = self.registry.get(task_type)
        if policy is None:
            return new
        for e in new:
            part = PARTS.get(e.type)
            if part is not None and contains_mark(e.data.get(part)):
                raise errors.InvalidInput(
                    f"{part}: '{MARK}' is reserved for protected values",
                    errors=[{"field": part, "rule": "reserved", "message": MARK}],
                )
        subjects = policy.subjects_of(payload)
        kinds = set().union(*(needs_sealing(policy, e.type, e.data) for e in new))
        if not kinds:
            return new
        kek = await self.kek()
        keys: dict[str, tuple[str, bytes]] = {}
        async with self.pool.connection() as conn:
            for kind in sorted(kinds):
                try:
                    keys[kind] = await keystore.data_key(
                        conn, kek, subjects[kind], stream, task_type
                    )
                except keystore.StaleKek as stale:
                    kek = await self.kek(reload=True)  # rotated: the file has the new one
                    if kek.id != stale.in_force:
                        raise errors.Unavailable(
                            f"the KEK in force is {stale.in_force}; this service holds {kek.id} "
                            "(is LEDGER_KEK_FILE the ledger's?)",
                            retry_after=1,
                        ) from None
                    keys[kind] = await keystore.data_key(
                        conn, kek, subjects[kind], stream, task_type
                    )

        def one(p: Protected, value: Any) -> dict[str, Any]:
            kid, key = keys[p.kind]
            return crypto.seal(
                key,
                stream=stream,
                field=p.pointer,
                kid=kid,
                subject=subjects[p.kind],
                kind=p.kind,
                value=value,
            )

        return [NewEvent(e.type, seal_data(policy, e.type, e.data, one)) for e in new]

    # -- reading ------------------------------------------------------------------

    async def reveal(
        self, items: Sequence[tuple[frozenset[str], str, Any]], *, as_stored: bool = False
    ) -> list[Any]:
        """Each ``(classes, stream, value)``'s value as a caller reading
        ``classes`` in clear sees it (``reveal.reveal``). Values without
        protected fields come back as they are."""
        kids = {inner["kid"] for _c, _s, v in items for inner in envelopes(v)}
        if not kids:
            return [v for _c, _s, v in items]
        kek = await self.kek()
        async with self.pool.connection() as conn:
            states = await keystore.resolve(conn, kek, kids)
            if any(st.unreadable for st in states.values()):
                kek = await self.kek(reload=True)  # wrapped under a KEK rotated in since
                states = await keystore.resolve(conn, kek, kids)
        return [reveal(c, s, v, states, as_stored=as_stored) for c, s, v in items]

    async def reveal_state(self, caller: tasks.Actor, state: TaskState) -> dict[str, Any]:
        """The ``GET /tasks/{id}`` document of ``state`` as ``caller`` may see
        it (a task type without a policy holds nothing to reveal)."""
        (out,) = await self.reveal_states(caller, [state])
        return dict(out)

    async def reveal_states(
        self, caller: tasks.Actor, states: Sequence[TaskState]
    ) -> list[dict[str, Any]]:
        views = [tasks.view(st) for st in states]
        if all(self.registry.get(st.task_type) is None for st in states):
            return views
        items = [
            (_classes(caller, st), tasks.stream_for(st.id), v)
            for st, v in zip(states, views, strict=True)
        ]
        return await self.reveal(items)

    async def reveal_events(
        self, caller: tasks.Actor, events: Sequence[Envelope], state: TaskState | None = None
    ) -> list[Any]:
        """Events (of the task in ``state``, when given) as ``caller`` may see
        them: opened for readers, as stored for others. Only ``data`` can hold
        protected values."""
        classes = _classes(caller, state)
        datas = await self.reveal(
            [(classes, e["stream"], e["data"]) for e in events], as_stored=True
        )
        return [
            e if d is e["data"] else {**e, "data": d} for e, d in zip(events, datas, strict=True)
        ]


def _classes(caller: tasks.Actor, state: TaskState | None) -> frozenset[str]:
    parties = (state.agent_name, state.worker, state.last_worker) if state else ()
    return readable(caller.role, caller.name, parties)


def of(ctx: Any) -> Privacy:
    """The app's Privacy (``ctx``: anything with settings, pool and extras)."""
    p: Privacy | None = ctx.extras.get("privacy")
    if p is None:
        p = ctx.extras["privacy"] = Privacy(ctx.settings, ctx.pool)
    return p
