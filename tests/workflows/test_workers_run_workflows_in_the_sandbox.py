"""Workers run workflows in the SDK's sandbox unless the operator turns it off
(`CASEWORK_WORKER_SANDBOX=false`, for measuring what it costs); either way a case runs to
the same result."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from casework.sandbox import worker_sandbox
from casework.settings import Settings
from tests.workflows import two_steps
from tests.workflows.two_steps import TwoSteps, WhereAmI, stamp


async def _run(env: WorkflowEnvironment, settings: Settings) -> tuple[bool, str]:
    queue = f"tq-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[WhereAmI, TwoSteps],
        activities=[stamp],
        workflow_runner=worker_sandbox(settings, two_steps.__name__),
    ):
        inside = await env.client.execute_workflow(
            WhereAmI.run, id=f"where-{uuid.uuid4()}", task_queue=queue
        )
        result = await asyncio.wait_for(
            env.client.execute_workflow(
                TwoSteps.run, "case", id=f"two-{uuid.uuid4()}", task_queue=queue
            ),
            timeout=30,
        )
    return inside, result


async def test_workflows_run_sandboxed_unless_the_operator_says_otherwise(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    assert await _run(ts_env, Settings(data_dir=tmp_path)) == (True, "case!!")
    assert await _run(ts_env, Settings(data_dir=tmp_path, worker_sandbox=False)) == (
        False,
        "case!!",
    )
