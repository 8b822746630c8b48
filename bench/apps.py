"""The HTTP comparators, served by uvicorn exactly like the ledger.

* ``orchestrator_app`` – the original orchestrator's design: FastAPI +
  SQLAlchemy, a ``tasks`` table (id, agent_name, task_type, status, payload,
  result, error), one INSERT and one commit per request, no chain, no events.
* ``floor_app`` – the same route and validated JSON body, no database at all:
  what FastAPI and uvicorn cost by themselves (the HTTP floor).
* ``asgi_floor_app`` – the same body checked by the same model, no framework
  and no database: what uvicorn alone costs. The ledger answers a well-formed
  ``POST /tasks`` without FastAPI's per-request machinery
  (``ledger/api/fast_submit.py``), so this is the floor of that path.

Both are factories (``uvicorn --factory bench.apps:orchestrator_app``); the
database comes from ``BENCH_DATABASE_URL``.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field


class TaskIn(BaseModel):
    task_type: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any]
    priority: int = 0


class TaskOut(BaseModel):
    id: str
    status: str


def floor_app() -> FastAPI:
    from ledger.api.app import _without_telemetry  # as the ledger's app: no tracer asked for

    app = FastAPI(title="HTTP floor", **_without_telemetry())

    @app.post("/tasks", response_model=TaskOut, status_code=201)
    async def submit(body: TaskIn) -> dict[str, Any]:
        return {"id": uuid.uuid4().hex, "status": "queued"}

    return app


def asgi_floor_app() -> Any:
    import orjson

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/openapi.json":  # what the harness waits for
            await _answer(send, 200, b"{}")
            return
        pieces, more = [], True
        while more:
            message = await receive()
            pieces.append(message.get("body", b""))
            more = message.get("more_body", False)
        TaskIn.model_validate(orjson.loads(b"".join(pieces)))
        out = TaskOut(id=uuid.uuid4().hex, status="queued")
        await _answer(send, 201, out.model_dump_json().encode())

    return app


async def _answer(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def orchestrator_app() -> FastAPI:
    import psycopg
    from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, Text, create_engine
    from sqlalchemy.orm import Session

    conninfo = os.environ["BENCH_DATABASE_URL"]  # a URL or a libpq conninfo string
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo),
        pool_size=10,
        max_overflow=10,
    )
    metadata = MetaData()
    tasks = Table(
        "tasks",
        metadata,
        Column("id", String(36), primary_key=True),
        Column("agent_name", String(100)),
        Column("task_type", String(100), nullable=False),
        Column("status", String(20), nullable=False),
        Column("priority", Integer, nullable=False, default=0),
        Column("payload", JSON, nullable=False),
        Column("result", JSON),
        Column("error", Text),
    )
    metadata.create_all(engine)
    app = FastAPI(title="original orchestrator")

    @app.post("/tasks", response_model=TaskOut, status_code=201)
    def submit(body: TaskIn) -> dict[str, Any]:
        task_id = str(uuid.uuid4())
        with Session(engine) as session:
            session.execute(
                tasks.insert().values(
                    id=task_id,
                    agent_name=None,
                    task_type=body.task_type,
                    status="pending",
                    priority=body.priority,
                    payload=body.payload,
                )
            )
            session.commit()
        return {"id": task_id, "status": "pending"}

    return app
