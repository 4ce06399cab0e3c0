"""A new work-permit case reaches its first task in four local steps: the deadline is
computed, the case row is written with its running clock, the labour exchange is asked
about the vacancy, then the check's timeline entry is written with the document-check task
(older histories took five steps and asked the labour exchange in an activity)."""

from __future__ import annotations

from casework.contracts import TaskKind
from tests.workflows.conftest import CaseRunner
from tests.workflows.helpers import event_kinds, local_steps, wait_task


async def test_the_first_task_comes_after_four_local_steps(cases: CaseRunner) -> None:
    handle = await cases.start()
    await wait_task(handle, TaskKind.document_check)

    steps = await local_steps(handle)
    assert steps[:5] == [
        "load_rules",
        "compute_deadline",
        "project_batch",
        "check_vacancy",
        "project_batch",
    ]
    kinds = event_kinds(cases.engine, handle.id)
    assert (
        kinds.index("case_started") < kinds.index("clock_started") < kinds.index("vacancy_checked")
    )
