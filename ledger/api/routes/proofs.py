"""Signed checkpoints and Merkle proofs (SPEC §5)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from ledger import errors, store
from ledger.api.deps import Context, Ctx, principal_of
from ledger.api.models import PROBLEM_RESPONSE
from ledger.db import q
from ledger.events import Principal
from ledger.proofs import store as tree_store
from ledger.proofs.store import SignedCheckpoint, State
from ledger.proofs.tiles import TileCache
from ledger.witness import store as witness_store

_HALTED: dict[int | str, dict[str, Any]] = {
    503: {
        **PROBLEM_RESPONSE,
        "description": "tree-halted: events under the tree were rewritten (no Retry-After); "
        "or the tree is catching up (Retry-After)",
    }
}
router = APIRouter(tags=["proofs"], responses=_HALTED)


def _tree_open(*roles: str) -> Callable[[Request], Awaitable[Principal]]:
    """Who calls (401/403 first), then whether the tree stands: once its
    builder halted (events under the tree were rewritten, recorded in
    ``merkle_state.halted`` by whichever process builds it), no tree answer is
    given: 503 ``tree-halted`` with the builder's reason, without Retry-After
    (it does not heal by itself). ``GET /audit/verify`` says which event."""

    async def dep(request: Request) -> Principal:
        ctx: Context = request.app.state.ctx
        principal = await principal_of(request, ctx, roles)
        async with ctx.pool.connection() as conn:
            await tree_store.refuse_if_halted(conn)
        return principal

    return dep


Reader = Annotated[Principal, Depends(_tree_open())]
Auditor = Annotated[Principal, Depends(_tree_open("auditor", "officer"))]
NOTE = "text/plain; charset=utf-8"
T = TypeVar("T")


class InclusionProof(BaseModel):
    leaf_index: int = Field(description="position - 1")
    tree_size: int
    hashes: list[str] = Field(description="RFC 9162 §2.1.3 inclusion path, hex, bottom up")


class ConsistencyProof(BaseModel):
    from_: int = Field(alias="from", serialization_alias="from")
    to: int
    hashes: list[str] = Field(description="RFC 9162 §2.1.4 consistency proof, hex")


class CheckpointOut(BaseModel):
    tree_size: int
    root: str = Field(description="hex")
    key_ids: list[str]
    signed_at: str
    note: str = Field(description="the C2SP signed note, as GET /audit/checkpoint serves it")


class CheckpointPage(BaseModel):
    items: list[CheckpointOut]
    next_after: int = Field(description="pass as ?after= for the next page")


def _cache(ctx: Context) -> TileCache:
    cache: TileCache = ctx.extras.setdefault("tile_cache", TileCache())
    return cache


def _out(cp: SignedCheckpoint) -> dict[str, Any]:
    return {
        "tree_size": cp.size,
        "root": bytes(cp.root).hex(),
        "key_ids": list(cp.key_ids),
        "signed_at": cp.signed_at.isoformat(),
        "note": cp.note,
    }


async def _poll(ctx: Context, look: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """``look()`` until ``done``, every 20 ms for at most
    ``LEDGER_CHECKPOINT_WAIT_SECONDS``; returns the last look. Each look takes
    a pool connection of its own, so a waiting request holds none."""
    got = await look()
    deadline = time.monotonic() + ctx.settings.checkpoint_wait_seconds
    while not done(got) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        got = await look()
    return got


def _no_checkpoint() -> errors.Unavailable:
    """Before the signer (``ledger tree``) has signed its first checkpoint."""
    return errors.Unavailable(
        "no checkpoint has been signed yet (is `ledger tree` running?); ask again shortly",
        retry_after=1,
    )


async def _latest(ctx: Context) -> SignedCheckpoint | None:
    """The latest checkpoint, None before the first."""
    async with ctx.pool.connection() as conn:
        return await tree_store.latest_checkpoint_async(conn)


@router.get(
    "/audit/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {NOTE: {}}, "description": "a C2SP signed-note checkpoint"}},
)
async def latest_checkpoint(ctx: Ctx, _: Reader) -> PlainTextResponse:
    """The latest signed checkpoint. When the ledger's head is ahead of it, a
    fresh one is asked for and awaited (bounded)."""
    async with ctx.pool.connection() as conn:
        cp = await tree_store.latest_checkpoint_async(conn)
        head, _h = await store.head_async(conn)
        behind = cp is None or cp.size < head
        if behind:
            await conn.execute(q("proofs", "want_checkpoint"))
    if behind:
        cp = await _poll(ctx, lambda: _latest(ctx), lambda c: c is not None and c.size >= head)
    if cp is None:
        raise _no_checkpoint()
    async with ctx.pool.connection() as conn:  # with the witnesses' cosignatures so far
        text = await witness_store.cosigned(conn, cp)
    return PlainTextResponse(text, media_type=NOTE, headers={"X-Ledger-Tree-Size": str(cp.size)})


@router.get("/audit/checkpoints", response_model=CheckpointPage)
async def list_checkpoints(
    ctx: Ctx,
    _: Reader,
    after: Annotated[int, Query(ge=-1, description="checkpoints of tree sizes above this")] = -1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    async with ctx.pool.connection() as conn:
        items = [_out(c) for c in await tree_store.checkpoints_after(conn, after, limit)]
    return {"items": items, "next_after": items[-1]["tree_size"] if items else after}


@router.get(
    "/audit/public-key",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {NOTE: {}, "application/json": {}},
            "description": "<name>+<hex key id>+<base64 key>; with all=true every key the "
            "log has signed with, one a line, oldest first (JSON with the sizes each "
            "signed from and to when Accept is application/json)",
        }
    },
)
async def public_key(
    ctx: Ctx,
    _: Reader,
    request: Request,
    all_: Annotated[
        bool, Query(alias="all", description="every key the log has used, not only the latest")
    ] = False,
) -> Response:
    """The key that signed the latest checkpoint (first of its signers), so the
    key and ``GET /audit/checkpoint`` always go together: a key just rotated
    in is served once its announcement is covered by a checkpoint it signed.
    With ``all=true``: every key that signed a checkpoint, so checkpoints from
    before a rotation still verify. Read from the database, as every answer
    about the tree: the signer runs in a process of its own (``ledger tree``)
    and signs its first checkpoint as soon as it starts; before that this
    waits for it (bounded), then 503."""
    cp = await _poll(ctx, lambda: _latest(ctx), lambda c: c is not None)
    if cp is None or not cp.vkeys:
        raise _no_checkpoint()
    if all_:
        async with ctx.pool.connection() as conn:
            cur = await conn.execute(q("log", "signing_keys"))
            rows = await cur.fetchall()
        keys = [{"vkey": v, "from_size": int(a), "to_size": int(b)} for v, a, b in rows]
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"keys": keys})
        return PlainTextResponse("".join(f"{k['vkey']}\n" for k in keys), media_type=NOTE)
    return PlainTextResponse(cp.vkeys[0] + "\n", media_type=NOTE)


class TreeCatchingUp(errors.Unavailable):
    title, type_slug = "Tree catching up", "tree-catching-up"


async def _await_tree(ctx: Context, size: int, what: str) -> None:
    """A size within the ledger's head is one the tree will reach in a few
    milliseconds (it is built off the append path): wait for it, bounded, then
    answer 503 with Retry-After. Only a size beyond the head is out of range,
    and that is left to the proof's own check (422). No pool connection is
    held while waiting: one short read per look."""

    async def look() -> tuple[State, int]:
        async with ctx.pool.connection() as conn:
            state = await tree_store.read_state_async(conn)
            head = state.size
            if state.size < size:
                head, _hash = await store.head_async(conn)
        return state, head

    def settled(looked: tuple[State, int]) -> bool:
        state, head = looked
        return state.size >= size or size > head or bool(state.halted)

    state, head = await _poll(ctx, look, settled)
    if state.size >= size or size > head:
        return
    why = "its builder has halted (see merkle_state.halted)" if state.halted else "retry shortly"
    raise TreeCatchingUp(
        f"{what} {size} is within the ledger (head {head}) but the tree is built to "
        f"{state.size}; {why}",
        tree_size=state.size,
        retry_after=None if state.halted else 1,
    )


@router.get(
    "/audit/proof/inclusion",
    response_model=InclusionProof,
    responses={
        422: {
            **PROBLEM_RESPONSE,
            "description": "position or tree_size out of range (beyond the head)",
        },
        503: {
            **PROBLEM_RESPONSE,
            "description": "the tree has not reached tree_size yet (Retry-After)",
        },
    },
)
async def inclusion_proof(
    ctx: Ctx,
    _: Auditor,
    position: Annotated[int, Query(ge=1)],
    tree_size: Annotated[int, Query(ge=1)],
) -> dict[str, Any]:
    tree_store.check_inclusion_args(position, tree_size)  # a bad request is a 422 at once
    await _await_tree(ctx, tree_size, "tree_size")
    async with ctx.pool.connection() as conn:
        hashes = await tree_store.inclusion(conn, _cache(ctx), position, tree_size)
    return {"leaf_index": position - 1, "tree_size": tree_size, "hashes": [h.hex() for h in hashes]}


@router.get(
    "/audit/proof/consistency",
    response_model=ConsistencyProof,
    response_model_by_alias=True,
    responses={
        422: {
            **PROBLEM_RESPONSE,
            "description": "from or to out of range (to beyond the head, from > to)",
        },
        503: {
            **PROBLEM_RESPONSE,
            "description": "the tree has not reached size to yet (Retry-After)",
        },
    },
)
async def consistency_proof(
    ctx: Ctx,
    _: Auditor,
    from_: Annotated[int, Query(alias="from", ge=0, description="size of the older tree")],
    to: Annotated[int, Query(ge=0, description="size of the newer tree")],
) -> dict[str, Any]:
    tree_store.check_consistency_args(from_, to)
    await _await_tree(ctx, to, "to")
    async with ctx.pool.connection() as conn:
        hashes = await tree_store.consistency(conn, _cache(ctx), from_, to)
    return {"from": from_, "to": to, "hashes": [h.hex() for h in hashes]}
