"""``ledger witness``'s HTTP service: C2SP tlog-witness ``add-checkpoint``
(submission prefix: the server's root) and the monitoring read
``GET /<hex SHA-256 of origin>/checkpoint``. Its Ed25519 cosignature/v1 key
is ``<home>/witness.key`` (mode 0600, made on first start); its state is
``ledger.witness.state``'s files under the same home."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import structlog
from fastapi import FastAPI, Request, Response

from ledger.proofs import cosignature, note
from ledger.witness.protocol import TEXT, Witness
from ledger.witness.state import FileState

log = structlog.get_logger("ledger.witness")
MAX_BODY = 64 * 1024


def load_or_create_key(home: Path, name: str) -> cosignature.Cosigner:
    path = home / "witness.key"
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise SystemExit(f"{path}: group and others must have no access (chmod 600)")
        return cosignature.Cosigner.parse(path.read_text())
    home.mkdir(parents=True, exist_ok=True)
    signer = cosignature.Cosigner.generate(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (signer.skey() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    (home / "witness.vkey").write_text(signer.key.vkey + "\n")
    return signer


def create_app(home: Path, name: str, log_keys: list[str]) -> FastAPI:
    cosigner = load_or_create_key(home, name)
    state = FileState(home)
    witness = Witness(cosigner, [note.Verifier.parse(k) for k in log_keys], state)
    app = FastAPI(title="Witness", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return Response("request too large\n", status_code=400, media_type=TEXT)
        try:
            body = raw.decode()
        except UnicodeDecodeError:
            return Response("the body is not UTF-8\n", status_code=400, media_type=TEXT)
        answer = await asyncio.to_thread(witness.add_checkpoint, body)
        origin = body.partition("\n\n")[2].split("\n", 1)[0]
        if answer.status == 200:
            log.info("checkpoint_cosigned", origin=origin, request_old=body.split("\n", 1)[0])
        else:
            log.warning(
                "checkpoint_refused",
                origin=origin,
                status=answer.status,
                reason=answer.body.strip(),
            )
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    @app.get("/{origin_hash}/checkpoint")
    async def monitored(origin_hash: str) -> Response:
        for origin in witness.logs:
            if hashlib.sha256(origin.encode()).hexdigest() == origin_hash:
                known = state.get(origin)
                if known is not None:
                    return Response(known.note, media_type=TEXT)
        return Response("never cosigned a checkpoint of that log\n", 404, media_type=TEXT)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "vkey": cosigner.key.vkey}

    return app
