"""A new work-permit case reaches its first task in three local steps: the deadline is
computed, then the case row is written with its running clock, then the vacancy check's
timeline entry with the document-check task (older histories took five)."""

from __future__ import annotations

from casework.contracts import TaskKind
from tests.workflows.conftest import CaseRunner
from tests.workflows.helpers import event_kinds, local_steps, wait_task


async def test_the_first_task_comes_after_three_local_steps(cases: CaseRunner) -> None:
    handle = await cases.start()
    await wait_task(handle, TaskKind.document_check)

    steps = await local_steps(handle)
    assert steps[:4] == ["load_rules", "compute_deadline", "project_batch", "project_batch"]
    kinds = event_kinds(cases.engine, handle.id)
    assert (
        kinds.index("case_started") < kinds.index("clock_started") < kinds.index("vacancy_checked")
    )
