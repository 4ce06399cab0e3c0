"""A case runs under the rule set the API loaded when it was filed: the rule set travels
in the start input and is recorded in the case's first history event, so no step loads
it again. A start without it (older clients, older histories) loads it in a local step."""

from __future__ import annotations

from datetime import date
from typing import Any

from temporalio.client import WorkflowHandle

from casework.contracts import PermitCategory
from casework.rules import WorkPermitRules, load_rules
from tests.factories import case_start
from tests.workflows.conftest import CaseRunner
from tests.workflows.helpers import case_row, local_steps, wait_until
from workflows.work_permit import WorkPermitWorkflow


async def start(cases: CaseRunner, **fields: Any) -> WorkflowHandle[Any, Any]:
    """A category-3 work-permit case whose start input carries these fields."""
    case = case_start(category="3").model_copy(update=fields)
    case.index_search_attributes = False  # the test server has no custom search attributes
    return await cases.env.client.start_workflow(
        WorkPermitWorkflow.run, case, id=case.case_id, task_queue=cases.settings.task_queue
    )


def fee(cases: CaseRunner, case_id: str) -> int | None:
    row = case_row(cases.engine, case_id)
    return None if row is None else row.summary.get("fee_kzt")


async def test_the_rule_set_in_the_start_is_the_one_the_case_uses(cases: CaseRunner) -> None:
    in_force = load_rules("work_permit", date(2026, 11, 21))
    rules = in_force.model_dump(mode="json")
    rules["fee_mci"]["3"] += 1  # recognisably this start's rule set, not a reloaded one
    expected = WorkPermitRules.model_validate(rules).fee_kzt(PermitCategory("3"), None)
    assert expected != in_force.fee_kzt(PermitCategory("3"), None)

    handle = await start(cases, rules=rules, ruleset_version=in_force.version)
    await wait_until(lambda: fee(cases, handle.id) == expected)

    assert "load_rules" not in await local_steps(handle)


async def test_a_start_without_the_rule_set_loads_it(cases: CaseRunner) -> None:
    in_force = load_rules("work_permit", date(2026, 11, 21))

    handle = await start(cases)
    await wait_until(lambda: fee(cases, handle.id) == in_force.fee_kzt(PermitCategory("3"), None))

    assert "load_rules" in await local_steps(handle)
