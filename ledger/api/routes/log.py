"""The log as C2SP tlog-tiles resources under ``/log/``: the checkpoint, the
Merkle tree's tiles and the entry bundles, read-only.

Entries are the events' raw 32-byte hashes, so a tlog-tiles client's leaf
hash, ``SHA-256(0x00 ‖ entry)``, is SPEC §5's. An entry bundle is, as the
text says, each entry prefixed by its length as a big-endian uint16:
``0x00 0x20 ‖ hash`` per event. Full tiles and bundles never change and are
served as immutable; a partial one is a prefix of what will be there and is
cached briefly. ``LEDGER_LOG_READ_TOKEN`` makes every resource want
``Authorization: Bearer <token>``; unset, they are public.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from ledger import errors
from ledger.api.deps import Context, Ctx
from ledger.api.models import PROBLEM_RESPONSE
from ledger.db import q
from ledger.proofs import store as tree_store
from ledger.proofs import tilepath
from ledger.proofs.tiles import HASH
from ledger.witness import store as witness_store

router = APIRouter(prefix="/log", tags=["log"])
OCTETS = "application/octet-stream"
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=60"
CHECKPOINT_CACHE = "public, max-age=2"


def _check_access(ctx: Context, request: Request) -> None:
    token = ctx.settings.log_read_token
    if not token:
        return
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise errors.Unauthenticated("this log wants 'Authorization: Bearer <read token>'")


@router.get(
    "/checkpoint",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain; charset=utf-8": {"schema": {"type": "string"}}},
            "description": "a C2SP signed-note checkpoint with its witness cosignatures",
        }
    },
)
async def checkpoint(ctx: Ctx, request: Request) -> Response:
    """The latest checkpoint that has its quorum of witness cosignatures
    (``LEDGER_WITNESS_QUORUM``; with none asked, the latest), with them."""
    _check_access(ctx, request)
    quorum = ctx.settings.witness_quorum
    async with ctx.pool.connection() as conn:
        await tree_store.refuse_if_halted(conn)
        if quorum > 0:
            cp = await witness_store.latest_with_quorum(conn, quorum)
        else:
            cp = await tree_store.latest_checkpoint_async(conn)
        if cp is None:
            raise errors.Unavailable(
                "no checkpoint has been signed"
                + (f" and cosigned by {quorum} witnesses" if quorum else "")
                + " yet; ask again shortly",
                retry_after=1,
            )
        text = await witness_store.cosigned(conn, cp)
    return Response(
        text,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": CHECKPOINT_CACHE, "X-Ledger-Tree-Size": str(cp.size)},
    )


def _missing(path: str) -> errors.NotFound:
    return errors.NotFound(f"no such resource: tile/{path}")


@router.get(
    "/tile/{path:path}",
    response_class=Response,
    responses={
        200: {
            "content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}},
            "description": "a tile's hashes, or an entry bundle",
        },
        404: {**PROBLEM_RESPONSE, "description": "no such tile or bundle (yet)"},
    },
)
async def tile(ctx: Ctx, request: Request, path: str) -> Response:
    """``tile/<L>/<N>[.p/<W>]`` (hashes) and ``tile/entries/<N>[.p/<W>]``."""
    _check_access(ctx, request)
    tp = tilepath.parse(path)
    if tp is None:
        raise _missing(path)
    async with ctx.pool.connection() as conn:
        await tree_store.refuse_if_halted(conn)
        if tp.level is None:
            first = tp.index * tilepath.FULL
            cur = await conn.execute(
                q("log", "entry_hashes"), {"after": first, "upto": first + tp.width}
            )
            hashes = [bytes(h) for (h,) in await cur.fetchall()]
            if len(hashes) != tp.width:
                raise _missing(path)
            body = b"".join(len(h).to_bytes(2, "big") + h for h in hashes)
        else:
            cur = await conn.execute(q("log", "tile"), {"level": tp.level, "idx": tp.index})
            row = await cur.fetchone()
            if row is None:
                raise _missing(path)
            width, stored = row
            if width < tp.width:
                raise _missing(path)
            body = bytes(stored)[: tp.width * HASH]
    return Response(
        body, media_type=OCTETS, headers={"Cache-Control": SHORT if tp.partial else IMMUTABLE}
    )
