"""Histories recorded from real runs replay against today's code (design.md section 6)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.workflow import NondeterminismError

from casework.contracts import CaseStart, QuotaRequest
from casework.sandbox import replayer
from workflows.kandas_status import KandasStatusWorkflow
from workflows.work_permit import CaseResult, WorkPermitWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_every_path_has_a_recorded_history() -> None:
    assert {p.stem for p in HISTORIES} >= {
        "work_permit_approved",
        "work_permit_refused",
        "work_permit_lapsed",
    }


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays_with_todays_code(path: Path) -> None:
    result = await replayer([WorkPermitWorkflow, KandasStatusWorkflow]).replay_workflow(load(path))
    assert result.replay_failure is None


@workflow.defn(name="WorkPermitWorkflow")
class ReorderedWorkPermit(WorkPermitWorkflow):
    """An incompatible change: the quota is reserved before the registry checks."""

    @workflow.run
    async def run(self, start: CaseStart) -> CaseResult:
        await workflow.execute_activity(
            "quota_reserve",
            QuotaRequest(case_id=start.case_id, quota_key="x"),
            start_to_close_timeout=timedelta(seconds=5),
        )
        return await super().run(start)


async def test_an_incompatible_change_is_reported_as_nondeterministic() -> None:
    with pytest.raises(NondeterminismError):
        await replayer([ReorderedWorkPermit]).replay_workflow(
            load(next(p for p in HISTORIES if p.stem == "work_permit_approved"))
        )


async def test_the_audit_replay_reports_an_incompatible_change(sqlite_engine) -> None:  # type: ignore[no-untyped-def]
    from casework.audit import replay_history

    history = load(next(p for p in HISTORIES if p.stem == "work_permit_refused"))
    today = await replay_history(sqlite_engine, history)
    assert today.deterministic is True
    changed = await replay_history(sqlite_engine, history, workflows=[ReorderedWorkPermit])
    assert changed.deterministic is False and "Nondeterminism" in (changed.failure or "")
    # This database never saw the case: its decisions are reported as missing from the register.
    assert today.decisions and not today.decisions_match
    assert today.decisions[0].differences == ["no entry in the decision register"]


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_the_audit_replay_loads_only_the_class_that_recorded_the_case(path: Path) -> None:
    from casework.audit import workflows_for

    history = load(path)
    chosen = workflows_for(history)
    expected = KandasStatusWorkflow if path.stem.startswith("kandas") else WorkPermitWorkflow
    assert chosen == [expected]
    result = await replayer(chosen).replay_workflow(history)
    assert result.replay_failure is None
