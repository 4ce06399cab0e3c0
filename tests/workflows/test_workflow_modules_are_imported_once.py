"""The worker imports the engine's workflow modules once for every case; replays still
import them afresh for each history, under every sandbox restriction.

The SDK's sandbox imports a workflow's module again for each case it runs (defining
`WorkPermitWorkflow` again costs about 5 ms of a core per case started), to isolate any
state the module keeps. The engine's worker passes `workflows` through instead
(`casework.sandbox.sandbox_runner`). What makes that safe is checked here: a workflow
module that kept per-case state would leak it into the next case on such a worker, and
the strict replay the audit and CI run would reject that case's history.
"""

from __future__ import annotations

import uuid

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.workflow import NondeterminismError

from casework.sandbox import replayer, sandbox_runner

_cases_seen: list[str] = []  # module state a workflow must never keep


@workflow.defn
class KeepsModuleState:
    """A workflow that breaks the rule: its second case sees the first one's state."""

    @workflow.run
    async def run(self) -> int:
        _cases_seen.append(workflow.info().workflow_id)
        if len(_cases_seen) > 1:
            await workflow.sleep(1)  # a command the first case's code path does not issue
        return len(_cases_seen)


async def _two_cases(client: Client, *, reload: bool) -> list[tuple[int, object]]:
    _cases_seen.clear()
    queue = f"tq-{uuid.uuid4()}"
    out = []
    async with Worker(
        client,
        task_queue=queue,
        workflows=[KeepsModuleState],
        workflow_runner=sandbox_runner(__name__, reload=reload),
    ):
        for _ in range(2):
            handle = await client.start_workflow(
                KeepsModuleState.run, id=f"leak-{uuid.uuid4()}", task_queue=queue
            )
            out.append((await handle.result(), await handle.fetch_history()))
    return out


async def test_a_passed_through_module_is_shared_and_strict_replay_catches_its_state(
    ts_env: WorkflowEnvironment,
) -> None:
    cases = await _two_cases(ts_env.client, reload=False)
    # One import for both cases: the second sees what the first left behind.
    assert [count for count, _ in cases] == [1, 2]
    strict = replayer([KeepsModuleState])
    await strict.replay_workflow(cases[0][1])  # type: ignore[arg-type]
    with pytest.raises(NondeterminismError):
        await strict.replay_workflow(cases[1][1])  # type: ignore[arg-type]


async def test_reloading_gives_every_case_its_own_module(ts_env: WorkflowEnvironment) -> None:
    cases = await _two_cases(ts_env.client, reload=True)
    assert [count for count, _ in cases] == [1, 1]
