"""Cases are findable in the Temporal Web UI and CLI by search attributes without personal data."""

from __future__ import annotations

from tests.api.conftest import Stack
from tests.api.flows import eventually, inbox_task, start_case, work_task
from tests.workflows.helpers import settled_history

ALLOWED = {"CaseProcedure", "CaseRegion", "CaseStatus", "SlaState", "SlaDeadline"}


async def test_case_is_searchable_by_procedure_region_status_and_sla(stack: Stack) -> None:
    case_id = (await start_case(stack)).json()["case_id"]
    await work_task(stack, case_id, "document_check", {"outcome": "complete"})
    client = stack.env.client
    query = (
        f"WorkflowId='{case_id}' AND CaseProcedure='work_permit' AND CaseRegion='astana' "
        "AND CaseStatus='decision' AND SlaState='on_track' AND SlaDeadline > '2020-01-01T00:00:00Z'"
    )

    async def found() -> list[str]:
        return [wf.id async for wf in client.list_workflows(query)]

    assert await eventually(found, timeout=30) == [case_id]
    desc = await client.get_workflow_handle(case_id).describe()
    custom = {
        k
        for k in desc.search_attributes
        if not k.startswith(("Temporal", "Build", "Binary", "Batcher"))
    }
    assert custom <= ALLOWED | {"ExecutionStatus", "WorkflowType", "TaskQueue"}
    values = " ".join(str(v) for v in desc.search_attributes.values())
    for personal in ("Ivan", "Petrov", "P1234567", "123456789012", "Steppe"):
        assert personal not in values


async def test_a_new_cases_status_and_clock_are_indexed_in_one_upsert(stack: Stack) -> None:
    # The first write (case row, running clock, first task) indexes the status and the
    # clock together: one history event and one visibility write, not one per change.
    case_id = (await start_case(stack)).json()["case_id"]
    await inbox_task(stack, case_id, "document_check")
    history = await settled_history(stack.env.client.get_workflow_handle(case_id))
    upserted = [
        set(ev.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
        for ev in history.events
        if ev.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    assert upserted == [{"TemporalChangeVersion"}, {"CaseStatus", "SlaState", "SlaDeadline"}]
