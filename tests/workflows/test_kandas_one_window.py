"""Kandas status through the consulate one window, on the time-skipping server."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError

from activities.kandas import simulated_kandas_registries
from activities.quota import ledger_entries, quota_view
from activities.registries import RegistryUnavailable
from casework.contracts import CaseStatus, DecisionOutcome, TaskKind
from casework.kandas import CheckFinding, ExtensionRequest, SecurityCheckRequest
from tests.factories import CASEWORKER_PAVLODAR, CONSUL
from tests.workflows.conftest import CaseRunner
from tests.workflows.helpers import (
    case_row,
    complete,
    event_kinds,
    notices,
    scheduled_activities,
    settled_history,
    wait_task,
    wait_until,
)
from workflows.kandas_status import KandasStatusWorkflow

COMMISSION = {
    "protocol_number": "P-17",
    "members": ["A. Ospanov", "B. Iskakova", "C. Nurlybekov"],
    "recommendation": "grant",
}


def pools(cases: CaseRunner) -> dict[str, dict[str, Any]]:
    return {p["region"]: p for p in quota_view(cases.engine, kind="kandas")}


async def through_settlement(
    cases: CaseRunner, handle: Any, commission: dict[str, Any] = COMMISSION
) -> dict[str, Any]:
    await complete(
        handle,
        TaskKind.consular_check,
        {"outcome": "complete", "translations_verified": True},
        actor=CONSUL,
    )
    await complete(handle, TaskKind.commission, commission, actor=CASEWORKER_PAVLODAR)
    settlement = await wait_task(handle, TaskKind.settlement)
    await complete(handle, TaskKind.settlement, {"action": "accept"}, actor=CASEWORKER_PAVLODAR)
    return settlement.context["proposal"]


async def test_approval_delivers_the_one_window_result(cases: CaseRunner) -> None:
    handle = await cases.start_kandas()
    consular = await wait_task(handle, TaskKind.consular_check)
    assert (
        consular.role == "consulate_officer"
        and consular.consulate == "KZ-CN-URUMQI"
        and consular.region is None
    )
    proposal = await through_settlement(cases, handle)
    assert proposal["region"] == "pavlodar" and proposal["ranking"][0]["reasons"]
    assert pools(cases)["pavlodar"]["reserved"] == 1
    await complete(handle, TaskKind.decision, {"decision": "approve"}, actor=CASEWORKER_PAVLODAR)

    await wait_until(
        lambda: any(n.kind == "one_window_result" for n in notices(cases.engine, handle.id))
    )
    row = case_row(cases.engine, handle.id)
    assert row is not None and row.status == "status_active"
    assert row.decision_number and row.consulate == "KZ-CN-URUMQI"
    assert row.summary["visa_number"].startswith("KZV-")
    assert pools(cases)["pavlodar"]["used"] == 1 and pools(cases)["pavlodar"]["reserved"] == 0
    kinds = event_kinds(cases.engine, handle.id)
    assert (
        kinds.index("commission_protocol")
        < kinds.index("settlement_proposed")
        < kinds.index("visa_issued")
    )
    # Only the outside services and the decision step are round trips through the server;
    # registry queries, settlement, support and the quota ledger are local steps.
    history = await settled_history(handle)
    assert set(scheduled_activities(history)) == {
        "kandas_security_check",
        "kandas_request_visa",
        "issue_decision",
    }


async def test_preliminary_refusal_goes_to_a_hearing_and_refusal_returns_the_quota_unit(
    cases: CaseRunner,
) -> None:
    handle = await cases.start_kandas()
    doubts = {
        **COMMISSION,
        "recommendation": "doubts",
        "doubts": ["ethnicity_not_proven"],
        "reasoning": "Record unclear.",
    }
    await through_settlement(cases, handle, doubts)
    decision = await wait_task(handle, TaskKind.decision)
    assert decision.context["proposed_grounds"] == ["ethnicity_not_proven"]
    await complete(
        handle,
        TaskKind.decision,
        {
            "decision": "refuse",
            "grounds": ["ethnicity_not_proven"],
            "reasoning": "No proof of ethnicity.",
        },
        actor=CASEWORKER_PAVLODAR,
    )
    await wait_until(
        lambda: any(n.kind == "intended_refusal" for n in notices(cases.engine, handle.id))
    )
    notice = next(n for n in notices(cases.engine, handle.id) if n.kind == "intended_refusal")
    assert notice.to_role == "consulate_officer"  # the applicant is reached through the mission
    await cases.env.sleep(timedelta(days=4))  # the 2 working days to object pass
    review = await wait_task(handle, TaskKind.objection_review)
    assert review.context["hearing"]["objection_text"] is None
    await complete(
        handle,
        TaskKind.objection_review,
        {
            "decision": "refuse",
            "grounds": ["ethnicity_not_proven"],
            "reasoning": "No objection was made.",
        },
        actor=CASEWORKER_PAVLODAR,
    )
    result = await handle.result()
    assert result.outcome == DecisionOutcome.refused and result.final_status == CaseStatus.refused
    assert pools(cases)["pavlodar"]["reserved"] == 0 and pools(cases)["pavlodar"]["used"] == 0
    assert [e.action for e in ledger_entries(cases.engine, case_id=handle.id)] == [
        "reserve",
        "release",
    ]


@dataclasses.dataclass
class FlakySecurity:
    """The security service: down for its first calls, then answers."""

    failures: int
    calls: int = 0

    async def check(self, req: SecurityCheckRequest) -> CheckFinding:
        self.calls += 1
        if self.calls <= self.failures:
            raise RegistryUnavailable("KNB check temporarily unavailable")
        return CheckFinding(registry="knb", ok=True, code="no_objection", detail="no objection")


@pytest.fixture
def kandas_registries(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    base = simulated_kandas_registries(latency=0, failure_rate=0)
    if request.node.get_closest_marker("flaky_security"):
        return dataclasses.replace(base, security=FlakySecurity(failures=2))
    return base


@pytest.mark.flaky_security
async def test_security_check_outage_is_retried_until_it_answers(
    cases: CaseRunner, kandas_registries: Any
) -> None:
    handle = await cases.start_kandas()
    await complete(
        handle,
        TaskKind.consular_check,
        {"outcome": "complete", "translations_verified": True},
        actor=CONSUL,
    )
    commission = await wait_task(handle, TaskKind.commission, timeout=60)
    knb = next(f for f in commission.context["findings"]["registries"] if f["registry"] == "knb")
    assert knb["code"] == "no_objection"
    assert kandas_registries.security.calls == 3  # two outages, then the answer


async def test_status_expires_after_one_year(cases: CaseRunner) -> None:
    handle = await cases.start_kandas(family=[])
    await through_settlement(cases, handle)
    await complete(handle, TaskKind.decision, {"decision": "approve"}, actor=CASEWORKER_PAVLODAR)
    await wait_until(
        lambda: (r := case_row(cases.engine, handle.id)) is not None and r.status == "status_active"
    )
    await cases.env.sleep(timedelta(days=367))
    result = await handle.result()
    assert result.final_status == CaseStatus.status_expired
    assert "status_expired" in event_kinds(cases.engine, handle.id)


async def test_one_extension_is_allowed_and_a_second_is_rejected(cases: CaseRunner) -> None:
    handle = await cases.start_kandas(family=[])
    await through_settlement(cases, handle)
    await complete(handle, TaskKind.decision, {"decision": "approve"}, actor=CASEWORKER_PAVLODAR)
    await wait_until(
        lambda: (r := case_row(cases.engine, handle.id)) is not None and r.status == "status_active"
    )
    first_valid_to = case_row(cases.engine, handle.id).summary["valid_to"]  # type: ignore[union-attr]

    with pytest.raises(WorkflowUpdateFailedError):  # more than 6 months is refused before history
        await handle.execute_update(
            KandasStatusWorkflow.request_extension,
            ExtensionRequest(actor=CONSUL, months=9, reason="studies"),
        )
    await handle.execute_update(
        KandasStatusWorkflow.request_extension,
        ExtensionRequest(actor=CONSUL, months=6, reason="housing not ready"),
    )
    await complete(
        handle,
        TaskKind.extension_decision,
        {"decision": "approve", "months": 6},
        actor=CASEWORKER_PAVLODAR,
    )
    await wait_until(
        lambda: (
            (r := case_row(cases.engine, handle.id)) is not None
            and r.status == "status_active"
            and r.summary["valid_to"] != first_valid_to
        )
    )
    row = case_row(cases.engine, handle.id)
    assert row is not None and row.summary["valid_to"] > first_valid_to

    with pytest.raises(WorkflowUpdateFailedError) as second:
        await handle.execute_update(
            KandasStatusWorkflow.request_extension,
            ExtensionRequest(actor=CONSUL, months=3, reason="again"),
        )
    assert "only once" in str(second.value.cause)
