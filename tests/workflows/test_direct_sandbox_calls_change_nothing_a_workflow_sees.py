"""The workers' sandbox asks for payload contexts without re-entering the sandbox
(`casework.sandbox._DirectInstance`); a deployment's payload codec still gets the same
context for every payload, and workflow code still runs under every restriction.

A payload codec that encrypts per activity or per workflow (the SDK's serialization
contexts exist for that) would decrypt nothing if a context were wrong, so the contexts
are compared with the SDK's own instance, payload by payload.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime

import pytest
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    ActivitySerializationContext,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import RestrictedWorkflowAccessError

from casework.sandbox import DirectSandboxRunner, sandbox_runner
from tests.workflows import two_steps
from tests.workflows.two_steps import TwoSteps, stamp


@workflow.defn(failure_exception_types=[RestrictedWorkflowAccessError])
class ReadsTheClock:
    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()  # noqa: DTZ005 - the sandbox must refuse this


def _seen(ctx: SerializationContext | None) -> tuple[object, ...]:
    """A context without the case's own id (each run has its own)."""
    if isinstance(ctx, ActivitySerializationContext):
        return ("activity", ctx.activity_type, ctx.is_local, ctx.workflow_type)
    if isinstance(ctx, WorkflowSerializationContext):
        return ("workflow", ctx.namespace)
    return (type(ctx).__name__,)


class RecordingCodec(PayloadCodec, WithSerializationContext):
    """Leaves payloads as they are; records the context of each it encodes."""

    def __init__(self, log: list[tuple[object, ...]], ctx: SerializationContext | None = None):
        self.log, self.ctx = log, ctx

    def with_context(self, context: SerializationContext) -> RecordingCodec:
        return RecordingCodec(self.log, context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.log.extend(_seen(self.ctx) for _ in payloads)
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


async def _contexts(env: WorkflowEnvironment, *, direct: bool) -> tuple[str, list[object]]:
    log: list[tuple[object, ...]] = []
    converter = dataclasses.replace(pydantic_data_converter, payload_codec=RecordingCodec(log))
    client = Client(**{**env.client.config(), "data_converter": converter})
    queue = f"tq-{uuid.uuid4()}"
    runner = sandbox_runner(two_steps.__name__, direct=direct)
    assert isinstance(runner, DirectSandboxRunner) == direct
    async with Worker(
        client, task_queue=queue, workflows=[TwoSteps], activities=[stamp], workflow_runner=runner
    ):
        result = await client.execute_workflow(
            TwoSteps.run, "case", id=f"ctx-{uuid.uuid4()}", task_queue=queue
        )
    return result, sorted(log, key=repr)


async def test_every_payload_gets_the_context_the_sdk_would_give_it(
    ts_env: WorkflowEnvironment,
) -> None:
    sdk_result, sdk = await _contexts(ts_env, direct=False)
    direct_result, direct = await _contexts(ts_env, direct=True)
    assert direct_result == sdk_result == "case!!"
    assert direct == sdk
    # The activities' payloads were encoded with their own context, local and regular.
    assert ("activity", "stamp", True, "TwoSteps") in direct
    assert ("activity", "stamp", False, "TwoSteps") in direct


@pytest.mark.parametrize("direct", [True, False])
async def test_workflow_code_still_may_not_read_the_clock(
    ts_env: WorkflowEnvironment, direct: bool
) -> None:
    queue = f"tq-{uuid.uuid4()}"
    async with Worker(
        ts_env.client,
        task_queue=queue,
        workflows=[ReadsTheClock],
        workflow_runner=sandbox_runner(__name__, reload=True, direct=direct),
    ):
        with pytest.raises(WorkflowFailureError) as failed:
            await ts_env.client.execute_workflow(
                ReadsTheClock.run, id=f"clock-{uuid.uuid4()}", task_queue=queue
            )
    assert "datetime.datetime.now" in str(failed.value.cause)
