"""API tests: a real Temporal dev server (started once per test session), a real worker,
the FastAPI app over HTTP (ASGI transport), SQLite or PostgreSQL as the read model."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.quota import ensure_quota
from api.auth import mint_token
from api.main import create_app
from casework.binaries import DEV_SERVER_TUNING, temporal_cli
from casework.contracts import Actor, Role
from casework.db import create_all, get_engine
from casework.regions import Region
from casework.runtime import build_worker
from casework.settings import Settings
from workflows.search_attributes import ALL_KEYS


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_cli(),
        search_attributes=ALL_KEYS,
        dev_server_extra_args=DEV_SERVER_TUNING,
    )
    yield env
    await env.shutdown()


@dataclass
class Stack:
    http: httpx.AsyncClient
    settings: Settings
    engine: Engine
    env: WorkflowEnvironment
    app: Any = None

    def token(self, role: str, **scope: Any) -> dict[str, str]:
        actor = Actor(
            user_id=scope.pop("user", f"{role}-{uuid.uuid4().hex[:6]}"), role=Role(role), **scope
        )
        return {"Authorization": f"Bearer {mint_token(actor, self.settings)}"}


async def _stack(env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Stack]:
    engine = get_engine(settings.effective_database_url)
    create_all(engine)
    for region in (Region.astana, Region.almaty_city):
        for cat, limit in {"1": 2, "2": 2, "3": 5, "4": 1, "seasonal": 3}.items():
            ensure_quota(engine, "work_permit", region.value, cat, 2026, limit)
    worker, pool = build_worker(env.client, settings)
    app = create_app(settings, client=env.client)
    async with worker, app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            yield Stack(http, settings, engine, env, app)
    pool.shutdown(wait=False)


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        simulator_latency=0.01,
        simulator_failure_rate=0,
        task_queue=f"api-{uuid.uuid4()}",
        public_base_url="http://api.test",
        **kw,
    )


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in _stack(dev_env, _settings(tmp_path)):
        yield s


@pytest.fixture
async def pg_stack(
    dev_env: WorkflowEnvironment, tmp_path: Path, pg_engine: Engine, pg_url: str
) -> AsyncIterator[Stack]:
    async for s in _stack(dev_env, _settings(tmp_path, database_url=pg_url)):
        yield s


TokenFn = Callable[..., dict[str, str]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_stack(request: pytest.FixtureRequest) -> Stack:
    """The same test on the embedded default (SQLite) and on production's PostgreSQL."""
    return request.getfixturevalue("stack" if request.param == "sqlite" else "pg_stack")  # type: ignore[no-any-return]
