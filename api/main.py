"""The FastAPI application: `/api/v1`, OpenAPI from the same models the workflows use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from temporalio.client import Client

from api import errors
from api.admission import Admission
from api.registrar import Registrar
from api.routes import (
    audit,
    calendar,
    cases,
    decisions,
    metrics,
    payments,
    procedures,
    quotas,
    sla,
    tasks,
)
from api.timing import ServerTimingMiddleware
from casework.db import create_all, get_engine
from casework.runtime import connect
from casework.settings import Settings, get_settings


def create_app(settings: Settings | None = None, client: Client | None = None) -> FastAPI:
    """The app; tests pass their own Temporal client, the server connects once at start-up."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.client = client or await connect(settings)
        yield
        await app.state.registrar.close()

    app = FastAPI(
        title="Kazakhstan migration casework engine",
        version="1.0",
        description="Permits, quotas and statuses as durable Temporal workflows.",
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
    )
    app.state.settings = settings
    app.state.admission = Admission(settings.api_max_in_flight, settings.api_admission_wait)
    app.state.engine = get_engine(settings.effective_database_url)
    create_all(app.state.engine)
    app.state.registrar = Registrar(app.state.engine)
    errors.install(app)
    app.add_middleware(ServerTimingMiddleware)
    for module in (procedures, cases, tasks, calendar, decisions, quotas, payments, audit, sla):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(metrics.router)  # Prometheus scrapes /metrics, outside the versioned API

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
