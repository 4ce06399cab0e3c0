"""A case asks the external registries inside its own workflow tasks (local steps), so a
completed document check leads to the decision task with no round trip through the
server in between; a registry still down after the quick local attempts is asked again
durably (the day-long retry), and the case waits for it instead of failing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import (
    WorkflowHistory,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.quota import ledger_entries, quota_view
from activities.registries import (
    Registries,
    RegistryFinding,
    RegistryUnavailable,
    SimulatedAdminOffences,
    SimulatedLabourExchange,
    VacancyInfo,
    simulated_registries,
)
from casework.contracts import CompleteTask, TaskKind, TaskSpec
from casework.db import TaskRow
from casework.runtime import build_worker
from casework.settings import Settings
from tests.factories import CASEWORKER
from tests.workflows.conftest import CaseRunner
from tests.workflows.helpers import (
    case_row,
    clock,
    complete,
    events,
    local_steps,
    scheduled_activities,
    settled_history,
    wait_task,
    wait_until,
)
from workflows.work_permit import WorkPermitWorkflow


def task_rows(engine: Engine, case_id: str) -> dict[str, str]:
    with Session(engine) as s:
        rows = s.exec(select(TaskRow).where(TaskRow.case_id == case_id))
        return {row.kind: row.status for row in rows}


async def test_the_registries_answer_inside_the_cases_own_steps(cases: CaseRunner) -> None:
    handle = await cases.start()
    await complete(handle, TaskKind.document_check, {"outcome": "complete"})
    # When the caseworker's completion is answered, the checks have run and the decision
    # task is already in the inbox (one workflow task from the completion to it).
    assert task_rows(cases.engine, handle.id) == {"document_check": "done", "decision": "open"}
    task = await wait_task(handle, TaskKind.decision)

    assert task.context["findings"]["vacancy"]["ok"] is True
    assert task.context["findings"]["registries"]
    timeline = [(e.kind, e.data.get("status")) for e in events(cases.engine, handle.id)]
    assert (
        timeline.index(("task_completed", None))
        < timeline.index(("status", "registry_checks"))
        < timeline.index(("checks_completed", None))
    )
    steps = await local_steps(handle)
    assert {"check_vacancy", "run_registry_checks"} <= set(steps)
    assert scheduled_activities(await settled_history(handle)) == []
    # The `registry_checks` status went to the read model in the same write as the
    # findings and the decision task, not in a write of its own.
    assert "project_case" not in steps
    assert steps[-1] == "project_batch"


class DownForAWhile(SimulatedLabourExchange):
    """The labour exchange is down for its first `outage` calls, then answers."""

    def __init__(self, outage: int) -> None:
        super().__init__(latency=0, failure_rate=0, seed=None)
        self.outage = outage
        self.calls = 0

    async def get_vacancy(self, code: str, employer_bin: str, as_of: date) -> VacancyInfo:
        self.calls += 1
        if self.calls <= self.outage:
            raise RegistryUnavailable("Labour exchange temporarily unavailable")
        return await super().get_vacancy(code, employer_bin, as_of)


@asynccontextmanager
async def worker_with(
    env: WorkflowEnvironment,
    settings: Settings,
    base: Registries | None = None,
    **registries: object,
) -> AsyncIterator[CaseRunner]:
    """A live worker on `base` (simulated registries without latency or failures), with
    the registries given by name replaced."""
    base = base or simulated_registries(latency=0, failure_rate=0)
    replaced = dataclasses.replace(base, **registries)
    worker, pool = build_worker(env.client, settings, registries=replaced)
    async with worker:
        yield CaseRunner(env, settings)
    pool.shutdown(wait=False)


async def test_a_registry_down_for_the_local_attempts_is_asked_durably(
    ts_env: WorkflowEnvironment, wf_settings: Settings
) -> None:
    exchange = DownForAWhile(outage=3)  # down for every local attempt
    async with worker_with(ts_env, wf_settings, labour_exchange=exchange) as cases:
        handle = await cases.start()
        task = await wait_task(handle, TaskKind.document_check)
        history = await settled_history(handle)

    assert task.kind == TaskKind.document_check  # the case went on, not failed
    assert exchange.calls == 4  # three local attempts, then one durable
    assert scheduled_activities(history) == ["check_vacancy"]


async def test_while_the_exchange_stays_down_the_case_and_its_clock_are_on_record(
    ts_env: WorkflowEnvironment, wf_settings: Settings
) -> None:
    exchange = DownForAWhile(outage=10**9)
    async with worker_with(ts_env, wf_settings, labour_exchange=exchange) as cases:
        handle = await cases.start()
        # The supervisor's board shows the case and its running clock while the case waits
        # for the exchange (asked durably after the local attempts); no task is open yet.
        await wait_until(lambda: exchange.calls > 3)
        await wait_until(lambda: clock(cases.engine, handle.id, "consideration") is not None)
        row = case_row(cases.engine, handle.id)
        assert row is not None and row.deadline is not None
        assert task_rows(cases.engine, handle.id) == {}
        await handle.terminate("test over")


class Hangs(SimulatedAdminOffences):
    """The register of administrative offences hangs on its first `slow` calls."""

    def __init__(self, slow: int) -> None:
        super().__init__(latency=0, failure_rate=0, seed=None)
        self.slow = slow
        self.calls = 0

    async def check_employer(self, employer_bin: str) -> RegistryFinding:
        self.calls += 1
        if self.calls <= self.slow:
            await asyncio.sleep(3600)
        return await super().check_employer(employer_bin)


async def test_a_hanging_registry_does_not_hold_the_caseworkers_completion(
    ts_env: WorkflowEnvironment, wf_settings: Settings
) -> None:
    register = Hangs(slow=2)  # every local attempt hangs until it times out
    async with worker_with(ts_env, wf_settings, admin_offences=register) as cases:
        handle = await cases.start()
        # Answered once the local attempts give up (6 s in all), not when the register
        # does (an hour); the bound is generous for a loaded machine.
        done = await asyncio.wait_for(
            complete(handle, TaskKind.document_check, {"outcome": "complete"}), timeout=12
        )
        assert done.status == "done"
        task = await wait_task(handle, TaskKind.decision)
        history = await settled_history(handle)

    assert task.context["findings"]["registries"]
    assert scheduled_activities(history) == ["run_registry_checks"]


async def test_flaky_registries_lose_no_case_and_no_quota_unit(
    ts_env: WorkflowEnvironment, wf_settings: Settings
) -> None:
    # Every simulated registry fails 30 % of its calls: local attempts give up now and
    # then, and the durable retries (seconds apart, skipped on the test server's clock)
    # take over; each case still reaches its decision task, once, with one quota outcome.
    flaky = simulated_registries(latency=0, failure_rate=0.3, seed=11)

    async def open_task(handle, kind: TaskKind) -> TaskSpec:  # type: ignore[no-untyped-def]
        for _ in range(400):
            for task in await handle.query(WorkPermitWorkflow.open_tasks):
                if task.kind == kind:
                    return task
            await ts_env.sleep(2)  # lets a durable retry's backoff pass
        raise AssertionError(f"no {kind.value} task")

    async def complete_check(handle) -> None:  # type: ignore[no-untyped-def]
        """The caseworker completes the document check, and sends the request again if it
        timed out: the time-skipping server, with twelve cases' updates and retries in
        flight, now and then loses a workflow task's completion (its call times out), and
        an update waiting on that task with it. Sent twice, it must still count once."""
        check = await open_task(handle, TaskKind.document_check)
        for _ in range(3):
            try:
                await handle.execute_update(
                    WorkPermitWorkflow.complete_task,
                    CompleteTask(
                        task_id=check.task_id, actor=CASEWORKER, form={"outcome": "complete"}
                    ),
                )
                return
            except WorkflowUpdateRPCTimeoutOrCancelledError:
                pass
            except WorkflowUpdateFailedError as err:  # the first request went through
                if isinstance(err.cause, ApplicationError) and err.cause.type == "TaskClosed":
                    return
                raise
            still_open = await handle.query(WorkPermitWorkflow.open_tasks)
            if all(t.task_id != check.task_id for t in still_open):
                return
        raise AssertionError("the document check could not be completed")

    async def to_decision(handle) -> tuple[TaskSpec, WorkflowHistory]:  # type: ignore[no-untyped-def]
        await complete_check(handle)
        return await open_task(handle, TaskKind.decision), await settled_history(handle)

    async with worker_with(ts_env, wf_settings, flaky) as cases:
        handles = [await cases.start() for _ in range(12)]
        reached = await asyncio.gather(*(to_decision(h) for h in handles))

    assert all(task.context["findings"]["registries"] for task, _ in reached)
    durable = [name for _, history in reached for name in scheduled_activities(history)]
    assert durable  # some queries went durable (P(none) is about 1e-3 at this rate)
    # The pool (astana, category 3) has 5 units: 5 cases hold one each, 7 found it
    # exhausted, and no retry reserved a unit twice.
    states = sorted(task.context["findings"]["quota"]["state"] for task, _ in reached)
    assert states == ["exhausted"] * 7 + ["reserved"] * 5
    for handle in handles:
        entries = ledger_entries(cases.engine, case_id=handle.id)
        assert [e.action for e in entries].count("reserve") <= 1
    pool_row = next(
        p for p in quota_view(cases.engine) if p["quota_key"] == "work_permit:astana:3:2026"
    )
    assert pool_row["reserved"] == 5


async def test_while_the_registries_stay_down_the_case_shows_its_checks_are_pending(
    ts_env: WorkflowEnvironment, wf_settings: Settings
) -> None:
    register = Hangs(slow=10**9)
    async with worker_with(ts_env, wf_settings, admin_offences=register) as cases:
        handle = await cases.start()
        await asyncio.wait_for(
            complete(handle, TaskKind.document_check, {"outcome": "complete"}), timeout=12
        )
        # Asked durably now: the board says what the case waits for.
        row = case_row(cases.engine, handle.id)
        assert row is not None and row.status == "registry_checks"
        assert task_rows(cases.engine, handle.id) == {"document_check": "done"}
        await handle.terminate("test over")
