"""Bare Temporal baselines: workflows and an empty activity with no engine code in them.

They run on their own worker process (`python -m bench.bare_worker`) with the same SDK,
the same data converter (pydantic) and the same sandbox setting (the SDK's sandbox, this
module passed through as the engine's worker passes `workflows` through) as the engine's
worker, against the same dev server.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

BARE_STATUS = SearchAttributeKey.for_keyword("CaseStatus")
# The engine's projection activities use the same timeout and retry policy.
ACTIVITY = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(seconds=30)),
}
NOOP = "bare_noop"


@activity.defn(name=NOOP)
async def bare_noop(n: int) -> int:
    """An empty activity: what is left is Temporal's own cost of an activity."""
    return n


@workflow.defn
class BareEmpty:
    """What `client.start_workflow` starts in the case-start baseline."""

    @workflow.run
    async def run(self, payload: dict[str, Any]) -> None:
        return None


@workflow.defn
class BareIdle:
    """An idle workflow that answers updates at once (task-completion baseline)."""

    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.done)
        await workflow.wait_condition(workflow.all_handlers_finished)

    @workflow.update
    async def ping(self, n: int) -> int:
        return n

    @workflow.signal
    def finish(self) -> None:
        self.done = True


@workflow.defn
class BareRegistration:
    """The shape of the API's case start: update-with-start whose update returns once two
    activities (rules, projection) have run. Informative, beside the bare start."""

    def __init__(self) -> None:
        self.registered = False

    @workflow.run
    async def run(self, payload: dict[str, Any]) -> None:
        await workflow.execute_activity(NOOP, 1, **ACTIVITY)  # type: ignore[arg-type]
        await workflow.execute_activity(NOOP, 2, **ACTIVITY)  # type: ignore[arg-type]
        self.registered = True
        await workflow.wait_condition(workflow.all_handlers_finished)

    @workflow.update
    async def registration(self, actor: dict[str, Any]) -> bool:
        await workflow.wait_condition(lambda: self.registered)
        return True


@workflow.defn
class BareCase:
    """A workflow of the same shape as a recorded case: `ops` lists, in history order,
    activities ("a", empty, sequential; "l": the same as a local activity, for the
    experiments), search-attribute upserts ("u"), timers started
    ("t+", long, as the legal clock's) and cancelled ("t-"), and waits for the next
    update ("U"). Update handlers return at once; every activity runs in the main
    coroutine, in the recorded order."""

    def __init__(self) -> None:
        self.waiting = -1
        self.released = 0
        self.cancelled: list[bool] = []

    async def _timer(self, idx: int) -> None:
        try:
            await workflow.wait_condition(lambda: self.cancelled[idx], timeout=timedelta(days=7))
        except TimeoutError:
            pass

    @workflow.run
    async def run(self, ops: list[str]) -> int:
        timers: list[asyncio.Task[None]] = []
        update = 0
        done = 0
        for op in ops:
            if op == "a":
                done += await workflow.execute_activity(NOOP, 1, **ACTIVITY)  # type: ignore[arg-type]
            elif op == "l":
                done += await workflow.execute_local_activity(NOOP, 1, **ACTIVITY)  # type: ignore[arg-type]
            elif op == "u":
                workflow.upsert_search_attributes([BARE_STATUS.value_set(f"s{done}")])
            elif op == "t+":
                self.cancelled.append(False)
                timers.append(asyncio.create_task(self._timer(len(self.cancelled) - 1)))
            elif op == "t-":
                first = self.cancelled.index(False)
                self.cancelled[first] = True
            elif op == "U":
                self.waiting = update
                await workflow.wait_condition(lambda u=update: self.released > u)  # type: ignore[misc]
                update += 1
        for i in range(len(self.cancelled)):
            self.cancelled[i] = True
        await asyncio.gather(*timers)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return done

    @workflow.update
    async def step(self, i: int) -> int:
        await workflow.wait_condition(lambda: self.waiting >= i)
        self.released = max(self.released, i + 1)
        return i


@workflow.defn
class BareBreach:
    """The shape of a legal clock's breach, empty: a timer up to an absolute moment, then
    in the workflow task that follows it what the engine's breach does (one search-attribute
    upsert, one local activity), and then an idle wait, as a breached case waits for its
    caseworker. The bench terminates it afterwards."""

    @workflow.run
    async def run(self, due_epoch: float) -> None:
        await workflow.sleep(max(0.001, due_epoch - workflow.now().timestamp()))
        workflow.upsert_search_attributes([BARE_STATUS.value_set("breached")])
        await workflow.execute_local_activity(NOOP, 1, **ACTIVITY)  # type: ignore[arg-type]
        await workflow.wait_condition(lambda: False)


@workflow.defn
class BareBurst:
    """Schedules a burst of the engine's decision step on the engine's task queue, so the
    renders run inside the engine worker while its workflow tasks are probed."""

    @workflow.run
    async def run(self, requests: list[dict[str, Any]], task_queue: str) -> int:
        await asyncio.gather(
            *(
                workflow.execute_activity(
                    "issue_decision",
                    req,
                    task_queue=task_queue,
                    start_to_close_timeout=timedelta(minutes=10),
                    result_type=dict,
                )
                for req in requests
            )
        )
        return len(requests)


WORKFLOWS = [BareEmpty, BareIdle, BareRegistration, BareCase, BareBreach, BareBurst]
ACTIVITIES = [bare_noop]
