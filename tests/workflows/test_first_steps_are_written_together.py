"""A new work-permit case reaches its first task in one write: the labour exchange is
asked while the deadline is computed, then the case row, its running clock, the vacancy
check's timeline entry and the document-check task are written together (older histories
took five steps, then four, and asked the labour exchange in an activity)."""

from __future__ import annotations

from casework.contracts import TaskKind
from tests.workflows.conftest import CaseRunner
from tests.workflows.helpers import event_kinds, local_steps, wait_task


async def test_the_first_task_is_written_in_one_step(cases: CaseRunner) -> None:
    handle = await cases.start()
    await wait_task(handle, TaskKind.document_check)

    steps = await local_steps(handle)
    assert steps[0] == "load_rules"  # the factory's start carries no rule set
    assert sorted(steps[1:3]) == ["check_vacancy", "compute_deadline"]
    assert steps[3:] == ["project_batch"]
    kinds = event_kinds(cases.engine, handle.id)
    assert (
        kinds.index("case_started") < kinds.index("clock_started") < kinds.index("vacancy_checked")
    )
