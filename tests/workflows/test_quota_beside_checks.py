"""The quota unit is reserved while the registries answer; if they never answer, the
unit goes back to the quota (none is ever held by a case that cannot go on)."""

from __future__ import annotations

import dataclasses

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.quota import ledger_entries, quota_view
from activities.registries import RegistryFinding, SimulatedAdminOffences, simulated_registries
from casework.contracts import TaskKind
from casework.runtime import build_worker
from casework.settings import Settings
from tests.workflows.conftest import CaseRunner
from tests.workflows.helpers import complete, event_kinds, scheduled_activities, wait_task


def reserved(cases: CaseRunner) -> int:
    pool = next(
        p for p in quota_view(cases.engine) if p["quota_key"] == "work_permit:astana:3:2026"
    )
    return int(pool["reserved"])


async def test_the_unit_is_reserved_beside_the_checks_and_both_reach_the_decision(
    cases: CaseRunner,
) -> None:
    handle = await cases.start()
    await complete(handle, TaskKind.document_check, {"outcome": "complete"})
    task = await wait_task(handle, TaskKind.decision)
    assert task.context["findings"]["quota"]["state"] == "reserved"
    assert task.context["findings"]["registries"]
    assert reserved(cases) == 1
    kinds = event_kinds(cases.engine, handle.id)
    assert kinds.index("checks_completed") < kinds.index("quota_reserved") < len(kinds)
    history = await handle.fetch_history()
    scheduled = scheduled_activities(history)
    assert "quota_reserve" not in scheduled  # a local step, not a round trip via the server


class RegisterDown(SimulatedAdminOffences):
    async def check_employer(self, employer_bin: str) -> RegistryFinding:
        raise ApplicationError("register withdrawn", non_retryable=True)


async def test_a_case_whose_checks_fail_for_good_returns_its_reserved_unit(
    ts_env: WorkflowEnvironment, wf_settings: Settings
) -> None:
    registries = dataclasses.replace(
        simulated_registries(latency=0, failure_rate=0), admin_offences=RegisterDown(0, 0, None)
    )
    worker, pool = build_worker(ts_env.client, wf_settings, registries=registries)
    async with worker:
        cases = CaseRunner(ts_env, wf_settings)
        handle = await cases.start()
        await complete(handle, TaskKind.document_check, {"outcome": "complete"})
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    pool.shutdown(wait=False)
    assert [e.action for e in ledger_entries(cases.engine, case_id=handle.id)] == [
        "reserve",
        "release",
    ]
    assert reserved(cases) == 0
