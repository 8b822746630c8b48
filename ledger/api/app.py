"""The FastAPI application: ``create_app()`` builds settings, and the lifespan
opens the database pool, starts the single writer and the background
services. Every router and service is listed here, in the order it is
mounted or started."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from psycopg_pool import AsyncConnectionPool

from ledger import console, db, leases, logs
from ledger.api import errors as api_errors
from ledger.api import openapi_doc, probe, watch
from ledger.api.admission import Admission
from ledger.api.deps import Context
from ledger.api.fast_submit import FastSubmit
from ledger.api.middleware import RequestMiddleware
from ledger.api.models import PROBLEM_RESPONSE
from ledger.api.routes import admin, audit, events, health, privacy, proofs, receipts, tasks, views
from ledger.api.routes import log as log_routes
from ledger.appender import Appender
from ledger.proofs import checkpointer
from ledger.settings import Settings
from ledger.witness import submitter as witness_submitter

log = structlog.get_logger("ledger.api")

# How long the pool retries a lost connection in the background before it
# gives the slot up. Its retries back off exponentially without a cap (1, 2,
# 4 ... s), so a long window would leave a healed database unused for as long
# as the outage lasted; given up, a slot is made again the moment a request
# waits for one, so the service heals as soon as PostgreSQL answers.
OUTAGE_RECONNECT_SECONDS = 2.0
# Paths served without credentials (liveness probes): no 401/403 to describe.
PUBLIC_PATHS = {"/health"}
# Paths without a path parameter whose lookup (in the query) can still be missing: 404.
MAY_BE_MISSING = {"/audit/receipt"}
_PROBLEM = "application/problem+json"

# A request is matched against the routes in this order, one by one (each
# router's routes in turn): the task routes, most of the traffic, come first.
ROUTERS = [
    views.router,  # before the task router: GET /tasks/stats is not a task id
    tasks.router,
    health.router,
    audit.router,
    events.router,
    admin.router,
    proofs.router,
    receipts.router,  # /audit/receipt: C2SP tlog-proof
    log_routes.router,  # /log/: C2SP tlog-tiles, public unless LEDGER_LOG_READ_TOKEN
    privacy.router,  # erasure, legal holds, retention (docs/privacy.md)
    console.router,  # the compliance console's pages (/console)
]
# Background services: async callables (ctx) -> awaitable cleanup, started in this order.
SERVICES: list[Any] = [
    leases.start_sweeper,  # requeues tasks whose lease lapsed
    watch.start_watcher,  # how far each view is (min_position)
    probe.start_probe,  # /health's own database session, out of the pool's queue
    console.start_warming,  # compiles the console's templates
]
# The tree builder and checkpoint signer run in a process of their own (`ledger
# tree`, which `ledger run` starts): the API reads the tree from the database.
# `ledger serve --tree` adds them here, as a standby (one leader across processes).
TREE_SERVICES: list[Any] = [
    checkpointer.start_service,  # the tree builder and checkpoint signer (one leader)
    witness_submitter.start_service,  # new checkpoints to LEDGER_WITNESSES (one leader)
]


def create_app(settings: Settings | None = None, *, tree: bool = False) -> FastAPI:
    """The API; with ``tree`` it also runs the tree builder and signer (standby)."""
    settings = settings or Settings()
    services = SERVICES + (TREE_SERVICES if tree else [])
    logs.configure(settings.log_format, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = db.resolve_url(settings)
        db.apply_schema(url)
        bounds = {  # every connection attempt and statement of a request is bounded
            "connect_timeout": settings.db_connect_timeout_seconds,
            "statement_timeout": settings.db_statement_timeout_seconds,
        }
        pool = AsyncConnectionPool(
            db.service_conninfo(url, settings.db_role, **bounds),
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            kwargs={"autocommit": True},
            open=False,
            timeout=settings.pool_timeout_seconds,
            max_waiting=settings.pool_max_waiting,
            reconnect_timeout=OUTAGE_RECONNECT_SECONDS,
        )
        await pool.open(wait=True, timeout=30)
        appender = Appender(
            url,
            role=settings.db_role,
            max_batch_events=settings.max_batch_events,
            queue_max=settings.append_queue_max,
            **bounds,
        )
        await appender.start()
        ctx = Context(settings=settings, url=url, pool=pool, appender=appender)
        app.state.ctx = ctx
        stops = []
        for start in services:
            stops.append(await start(ctx))
        restore_gc = _tune_gc(settings.gc_threshold)
        log.info("service_started", database=db.redact(url))
        try:
            yield
        finally:
            restore_gc()
            for stop in reversed(stops):
                await stop()
            await appender.close()
            await pool.close()
            log.info("service_stopped")

    app = FastAPI(
        title="Audit ledger",
        version="0.1.0",
        description=(
            "Event-sourced, hash-chained audit ledger for agent task workflows. "
            "Every request needs 'Authorization: Bearer <api key>'; errors are "
            "RFC 9457 problem+json."
        ),
        lifespan=lifespan,
        **_without_telemetry(),
        responses={
            401: PROBLEM_RESPONSE,
            403: PROBLEM_RESPONSE,
            422: PROBLEM_RESPONSE,
            503: {
                **PROBLEM_RESPONSE,
                "description": "the database is busy or unavailable; nothing was written; "
                "retry after Retry-After seconds",
            },
        },
    )
    api_errors.install(app)
    app.openapi = lambda: _truthful_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(FastSubmit, root=app)  # inside admission and the request log
    app.add_middleware(
        Admission,
        max_inflight=settings.max_inflight_requests,
        wait_seconds=settings.pool_timeout_seconds,
        exempt=frozenset(PUBLIC_PATHS),
    )
    app.add_middleware(RequestMiddleware, max_body_bytes=settings.max_body_bytes)
    for router in ROUTERS:
        app.include_router(router)
    return app


def create_app_with_tree() -> FastAPI:
    """uvicorn factory of ``ledger serve --tree``."""
    return create_app(tree=True)


def _without_telemetry() -> dict[str, Any]:
    """FastAPI's native OpenTelemetry off, where this FastAPI has it: the service
    logs with structlog and configures no tracer, yet each request asked the
    global providers whether one was (~2% of a submit's time in a profile)."""
    import inspect

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _tune_gc(threshold: int) -> Any:
    """Once started: what the process holds for good (modules, routes, pools)
    is moved out of the cyclic collector's way (``gc.freeze``), and the young
    generation is collected every ``threshold`` allocations instead of 700.
    Returns what undoes both (the tests start many apps in one process)."""
    import gc

    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    if threshold > 0:
        gc.set_threshold(threshold, *before[1:])

    def restore() -> None:
        gc.set_threshold(*before)
        gc.unfreeze()

    return restore


def _truthful_openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, told as the service behaves: errors are only ever
    problem+json (FastAPI would also list the route's own media type), public
    paths answer no 401/403, and reads never answer 409 or 412."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.get("responses", {})
            drop = set()
            if path in PUBLIC_PATHS:
                drop |= {"401", "403"}
            if method in ("get", "head"):
                drop |= {"409", "412"}
            if not op.get("parameters") and "requestBody" not in op:
                drop.add("422")
            if "{" not in path and path not in MAY_BE_MISSING:
                drop.add("404")  # nothing in the path to be missing
            for status in drop:
                responses.pop(status, None)
            for status, answer in responses.items():
                content = answer.get("content", {})
                if status >= "400" and _PROBLEM in content:
                    described = [c["schema"] for c in content.values() if "schema" in c]
                    answer["content"] = {
                        _PROBLEM: {"schema": described[0]} if described else content[_PROBLEM]
                    }
    openapi_doc.document(schema, PUBLIC_PATHS)
    app.openapi_schema = schema
    return schema
