"""Legal clocks of the work-permit procedure, on the time-skipping server."""

from __future__ import annotations

import json
from datetime import timedelta

from activities.quota import ledger_entries, quota_view
from casework.contracts import (
    CaseStatus,
    DecisionOutcome,
    PaymentReceived,
    SupplyDocuments,
    TaskKind,
)
from tests.factories import EMPLOYER
from tests.workflows.conftest import CaseRunner
from tests.workflows.helpers import (
    case_row,
    clock,
    complete,
    event_kinds,
    notices,
    scheduled_activities,
    wait_task,
    wait_until,
)
from workflows.work_permit import WorkPermitWorkflow

FEE_CAT_3 = 170 * 4325


def pool(cases: CaseRunner, cat: str = "3") -> dict:
    return next(
        p for p in quota_view(cases.engine) if p["quota_key"] == f"work_permit:astana:{cat}:2026"
    )


async def test_unpaid_fee_lapses_the_application_and_returns_the_quota_unit(
    cases: CaseRunner,
) -> None:
    handle = await cases.start()
    await complete(handle, TaskKind.document_check, {"outcome": "complete"})
    await complete(handle, TaskKind.decision, {"decision": "approve"})
    await wait_until(
        lambda: (
            (row := case_row(cases.engine, handle.id)) is not None
            and row.status == "awaiting_payment"
        )
    )
    assert pool(cases)["reserved"] == 1

    await cases.env.sleep(timedelta(days=20))  # past 10 working days
    result = await handle.result()

    assert result.outcome == DecisionOutcome.lapsed
    assert pool(cases)["reserved"] == 0 and pool(cases)["used"] == 0
    actions = [e.action for e in ledger_entries(cases.engine, case_id=handle.id)]
    assert actions == ["reserve", "release"]
    row = case_row(cases.engine, handle.id)
    assert row is not None and row.status == CaseStatus.lapsed.value and row.decision_number
    assert "clock_breached" in event_kinds(cases.engine, handle.id)


async def test_paid_fee_issues_the_permit_and_uses_the_quota_unit(cases: CaseRunner) -> None:
    handle = await cases.start()
    await complete(handle, TaskKind.document_check, {"outcome": "complete"})
    await complete(handle, TaskKind.decision, {"decision": "approve"})
    await wait_until(
        lambda: (
            (row := case_row(cases.engine, handle.id)) is not None
            and row.status == "awaiting_payment"
        )
    )
    await cases.env.sleep(timedelta(days=3))
    await handle.execute_update(
        WorkPermitWorkflow.payment_received,
        PaymentReceived(
            payment_id="PAY-1", amount_kzt=FEE_CAT_3, paid_at="2026-11-25T10:00:00+05:00"
        ),
    )
    result = await handle.result()

    assert result.outcome == DecisionOutcome.granted
    assert result.decision.permit_number and result.decision.valid_to
    assert (result.decision.valid_to - result.decision.valid_from).days in range(364, 366)
    assert pool(cases)["used"] == 1 and pool(cases)["reserved"] == 0
    assert [e.action for e in ledger_entries(cases.engine, case_id=handle.id)] == [
        "reserve",
        "commit",
    ]


async def test_decision_term_breach_marks_the_case_breached_and_escalates(
    cases: CaseRunner,
) -> None:
    handle = await cases.start()
    await complete(handle, TaskKind.document_check, {"outcome": "complete"})
    decision_task = await wait_task(handle, TaskKind.decision)
    assert decision_task.priority == 0

    await cases.env.sleep(timedelta(days=16))  # 7 working days have passed, with weekends
    # The supervisors' notice is the last thing the breach does.
    await wait_until(
        lambda: any(
            n.kind == "deadline_breached" and n.to_role == "supervisor"
            for n in notices(cases.engine, handle.id)
        )
    )
    consideration = clock(cases.engine, handle.id, "consideration")
    assert consideration is not None and consideration.state == "breached"
    row = case_row(cases.engine, handle.id)
    assert row is not None and row.sla_state == "breached"
    kinds = event_kinds(cases.engine, handle.id)
    assert kinds.count("clock_at_risk") == 1 and kinds.count("clock_breached") == 1
    assert (
        kinds.index("clock_at_risk") < kinds.index("clock_breached") < kinds.index("task_escalated")
    )
    escalated = await wait_task(handle, TaskKind.decision)
    assert (
        escalated.priority > decision_task.priority and escalated.context.get("escalated") is True
    )


async def test_suspension_stops_the_clock(cases: CaseRunner) -> None:
    handle = await cases.start()
    await complete(
        handle,
        TaskKind.document_check,
        {"outcome": "incomplete", "missing_documents": ["notarised diploma"]},
    )
    await wait_until(
        lambda: (
            (c := clock(cases.engine, handle.id, "consideration")) is not None
            and c.state == "suspended"
        )
    )
    before = clock(cases.engine, handle.id, "consideration")
    assert before is not None and before.deadline is not None

    await cases.env.sleep(timedelta(days=30))  # far past the original deadline
    assert "clock_breached" not in event_kinds(cases.engine, handle.id)
    assert any(n.kind == "documents_requested" for n in notices(cases.engine, handle.id))

    await handle.execute_update(
        WorkPermitWorkflow.supply_documents,
        SupplyDocuments(actor=EMPLOYER, documents=["notarised diploma"]),
    )
    await wait_task(handle, TaskKind.document_check)  # a new check of the completed file
    after = clock(cases.engine, handle.id, "consideration")
    assert after is not None and after.state == "on_track" and after.deadline is not None
    assert after.deadline - before.deadline >= timedelta(days=28)
    assert "Suspended" in after.explanation
    assert "clock_breached" not in event_kinds(cases.engine, handle.id)


async def test_refusal_cannot_happen_without_a_hearing(cases: CaseRunner) -> None:
    handle = await cases.start(staffing={"citizens_in_category": 10, "foreigners_in_category": 5})
    await complete(handle, TaskKind.document_check, {"outcome": "complete"})
    decision = await wait_task(handle, TaskKind.decision)
    assert "local_content_unmet" in decision.context["proposed_grounds"]
    await complete(
        handle,
        TaskKind.decision,
        {
            "decision": "refuse",
            "grounds": ["local_content_unmet"],
            "reasoning": "Citizens are 62.5 % of staff.",
        },
    )
    await wait_until(
        lambda: any(n.kind == "intended_refusal" for n in notices(cases.engine, handle.id))
    )
    row = case_row(cases.engine, handle.id)
    assert row is not None and row.status == "hearing"
    intended = [n for n in notices(cases.engine, handle.id) if n.kind == "intended_refusal"]
    assert len(intended) == 1 and intended[0].to_party == "123456789012"
    assert "decision_issued" not in event_kinds(cases.engine, handle.id)

    await cases.env.sleep(timedelta(days=5))  # the objection term passes without objection
    await complete(
        handle,
        TaskKind.objection_review,
        {
            "decision": "refuse",
            "grounds": ["local_content_unmet"],
            "reasoning": "No objection; the share stays 62.5 %.",
        },
    )
    result = await handle.result()

    assert result.outcome == DecisionOutcome.refused
    kinds = event_kinds(cases.engine, handle.id)
    assert kinds.index("hearing_closed") < kinds.index("decision_issued")
    assert pool(cases)["reserved"] == 0
    assert [e.action for e in ledger_entries(cases.engine, case_id=handle.id)] == [
        "reserve",
        "release",
    ]


async def test_a_breach_reaches_the_read_model_in_one_step(cases: CaseRunner) -> None:
    """The clock event, the escalated task and the supervisors' notice are written
    together: one local activity, one transaction, after the breach timer fires. With no
    webhook endpoint configured, no delivery step is scheduled for the clock notices."""
    handle = await cases.start()
    await complete(handle, TaskKind.document_check, {"outcome": "complete"})
    await wait_task(handle, TaskKind.decision)
    await cases.env.sleep(timedelta(days=16))
    await wait_until(
        lambda: any(n.kind == "deadline_breached" for n in notices(cases.engine, handle.id))
    )
    history = await handle.fetch_history()
    steps: list[list[str]] = []  # local activities run in each workflow task
    for ev in history.events:
        if ev.HasField("workflow_task_completed_event_attributes"):
            steps.append([])
        elif ev.HasField("marker_recorded_event_attributes"):
            details = ev.marker_recorded_event_attributes.details
            if "data" in details and steps:
                steps[-1].append(json.loads(details["data"].payloads[0].data)["activity_type"])
    scheduled = scheduled_activities(history)
    assert "deliver_webhooks" not in scheduled
    breach_steps = [s for s in steps if "project_batch" in s]
    # at risk (the clock alone), then the breach with its escalation and notice
    assert breach_steps, steps
    assert breach_steps[-1].count("project_batch") == 1
    assert not {"project_clock", "project_task", "notify"} & set(breach_steps[-1])
    kinds = event_kinds(cases.engine, handle.id)
    breached_at = kinds.index("clock_breached")
    assert kinds[breached_at + 1 : breached_at + 3] == ["task_escalated", "notification"]
