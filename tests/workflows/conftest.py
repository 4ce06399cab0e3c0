"""Workflow tests: the time-skipping test server, real activities on a SQLite read model,
simulated registries without latency or failures (unless a test says otherwise)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.quota import ensure_quota
from casework.binaries import temporal_test_server
from casework.db import create_all, get_engine
from casework.settings import Settings


@pytest.fixture
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server per test (about a second): one test's leftovers can never
    hold the shared virtual clock for the next."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=temporal_test_server(),
    )
    yield env
    await env.shutdown()


@pytest.fixture
def wf_settings(tmp_path: Path) -> Settings:
    settings = Settings(
        data_dir=tmp_path,
        simulator_latency=0,
        simulator_failure_rate=0,
        task_queue=f"tq-{uuid.uuid4()}",
        # The SDK's full sandbox: the workflow modules reloaded for each case and every
        # call they make restricted (the clock, randomness, I/O). The production worker
        # passes them through (`casework.sandbox`), which lifts those checks at run time;
        # every path these tests drive is checked here instead.
        worker_sandbox_reload_workflow_modules=True,
    )
    engine = get_engine(settings.effective_database_url)
    create_all(engine)
    for cat, limit in {"1": 2, "2": 2, "3": 5, "4": 1, "seasonal": 3}.items():
        ensure_quota(engine, "work_permit", "astana", cat, 2026, limit)
    for region, limit in {"pavlodar": 2, "akmola": 1, "north_kazakhstan": 1}.items():
        ensure_quota(engine, "kandas", region, "kandas", 2026, limit)
    return settings


class CaseRunner:
    """Starts work-permit cases on the time-skipping server with a live worker."""

    def __init__(self, env: WorkflowEnvironment, settings: Settings) -> None:
        self.env = env
        self.settings = settings
        self.engine = get_engine(settings.effective_database_url)

    async def start(self, **overrides: object):  # type: ignore[no-untyped-def]
        from tests.factories import case_start
        from workflows.work_permit import WorkPermitWorkflow

        start = case_start(**overrides)  # type: ignore[arg-type]
        start.index_search_attributes = False  # the test server has no custom search attributes
        return await self.env.client.start_workflow(
            WorkPermitWorkflow.run, start, id=start.case_id, task_queue=self.settings.task_queue
        )

    async def start_kandas(self, **overrides: object):  # type: ignore[no-untyped-def]
        from tests.factories import kandas_start
        from workflows.kandas_status import KandasStatusWorkflow

        start = kandas_start(**overrides)  # type: ignore[arg-type]
        start.index_search_attributes = False
        return await self.env.client.start_workflow(
            KandasStatusWorkflow.run, start, id=start.case_id, task_queue=self.settings.task_queue
        )


@pytest.fixture
def kandas_registries():  # type: ignore[no-untyped-def]
    """No latency or outages unless a test swaps in its own security service."""
    from activities.kandas import simulated_kandas_registries

    return simulated_kandas_registries(latency=0, failure_rate=0)


@pytest.fixture
async def cases(
    ts_env: WorkflowEnvironment, wf_settings: Settings, kandas_registries
) -> AsyncIterator[CaseRunner]:  # type: ignore[no-untyped-def]
    from casework.runtime import build_worker

    worker, pool = build_worker(ts_env.client, wf_settings, kandas_registries=kandas_registries)
    async with worker:
        yield CaseRunner(ts_env, wf_settings)
    pool.shutdown(wait=False)
