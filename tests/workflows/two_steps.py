"""A workflow with one local and one regular activity: the smallest that carries payloads
through every kind of SDK message (start, local activity marker, activity, result)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def stamp(text: str) -> str:
    return f"{text}!"


@workflow.defn
class TwoSteps:
    @workflow.run
    async def run(self, text: str) -> str:
        local = await workflow.execute_local_activity(
            stamp, text, start_to_close_timeout=timedelta(seconds=5)
        )
        return await workflow.execute_activity(
            stamp, local, start_to_close_timeout=timedelta(seconds=5)
        )


@workflow.defn
class WhereAmI:
    """Says whether its code runs inside the SDK's sandbox."""

    @workflow.run
    async def run(self) -> bool:
        return workflow.unsafe.in_sandbox()
