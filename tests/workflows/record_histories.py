"""Record workflow histories from real runs, as replay fixtures.

    .venv/bin/python -m tests.workflows.record_histories

Runs every recorded path (work permit: approval, refusal, lapse; kandas: approval then
citizenship, refusal after a hearing) with the real activities, on a local Temporal dev
server and the time-skipping server (lapse), and writes the histories to
tests/workflows/histories/*.json. Existing files are never overwritten: after a
workflow change guarded by `workflow.patched`, record the new code's histories beside
the old ones under a generation suffix (`... record_histories --suffix=.v2`), so replay
covers both paths. Changing a workflow incompatibly must fail replay, never be hidden by
re-recording (use workflow.patched).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.quota import ensure_quota
from casework.binaries import DEV_SERVER_TUNING, temporal_cli, temporal_test_server
from casework.contracts import KZ_TZ, PaymentReceived, SubmitObjection, TaskKind
from casework.db import create_all, get_engine
from casework.rules import load_rules
from casework.runtime import build_worker
from casework.settings import Settings
from tests.factories import EMPLOYER, case_start
from tests.workflows.helpers import complete
from workflows.search_attributes import ALL_KEYS
from workflows.work_permit import WorkPermitWorkflow

HERE = Path(__file__).parent / "histories"


SUFFIX = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--suffix=")), "")


def _as_filed(start: Any) -> Any:
    """The start as the API makes it: with the rule set in force today in its input."""
    rules = load_rules(start.procedure, datetime.now(KZ_TZ).date())
    return start.model_copy(
        update={"rules": rules.model_dump(mode="json"), "ruleset_version": rules.version}
    )


async def _save(handle: WorkflowHandle, name: str) -> None:  # type: ignore[type-arg]
    name += SUFFIX
    target = HERE / f"{name}.json"
    if target.exists():
        print(f"kept {name}: a recorded history is never overwritten")
        return
    history = await handle.fetch_history()
    target.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    print(f"recorded {name}: {len(history.events)} events")


async def _approved(client: Client, tq: str, index: bool) -> WorkflowHandle:  # type: ignore[type-arg]
    start = _as_filed(case_start(case_id=f"WP-REC-{uuid.uuid4().hex[:6].upper()}"))
    start.index_search_attributes = index
    h = await client.start_workflow(WorkPermitWorkflow.run, start, id=start.case_id, task_queue=tq)
    await complete(
        h, TaskKind.document_check, {"outcome": "incomplete", "missing_documents": ["diploma"]}
    )
    while True:  # wait for the request to the employer
        desc = await h.query(WorkPermitWorkflow.open_tasks)
        if not desc:
            break
    await asyncio.sleep(0.5)
    from casework.contracts import SupplyDocuments

    await h.execute_update(
        WorkPermitWorkflow.supply_documents, SupplyDocuments(actor=EMPLOYER, documents=["diploma"])
    )
    await complete(h, TaskKind.document_check, {"outcome": "complete"})
    await complete(h, TaskKind.decision, {"decision": "approve"})
    await asyncio.sleep(1)
    await h.execute_update(
        WorkPermitWorkflow.payment_received,
        PaymentReceived(
            payment_id="PAY-REC-1", amount_kzt=170 * 4325, paid_at="2026-11-21T10:00:00+05:00"
        ),
    )
    await h.result()
    return h


async def _refused(client: Client, tq: str) -> WorkflowHandle:  # type: ignore[type-arg]
    start = _as_filed(
        case_start(
            case_id=f"WP-REC-{uuid.uuid4().hex[:6].upper()}",
            staffing={"citizens_in_category": 10, "foreigners_in_category": 5},
        )
    )
    h = await client.start_workflow(WorkPermitWorkflow.run, start, id=start.case_id, task_queue=tq)
    await complete(h, TaskKind.document_check, {"outcome": "complete"})
    await complete(
        h,
        TaskKind.decision,
        {"decision": "refuse", "grounds": ["local_content_unmet"], "reasoning": "62.5 %"},
    )
    await asyncio.sleep(1)
    await h.execute_update(
        WorkPermitWorkflow.submit_objection, SubmitObjection(actor=EMPLOYER, text="We disagree.")
    )
    await complete(
        h,
        TaskKind.objection_review,
        {
            "decision": "refuse",
            "grounds": ["local_content_unmet"],
            "reasoning": "Share stays 62.5 %.",
        },
    )
    await h.result()
    return h


async def _kandas(client: Client, tq: str, refuse: bool) -> WorkflowHandle:  # type: ignore[type-arg]
    from casework.kandas import CitizenshipGranted
    from tests.factories import CASEWORKER_PAVLODAR, CONSUL, kandas_start
    from workflows.kandas_status import KandasStatusWorkflow

    start = _as_filed(kandas_start(case_id=f"KS-REC-{uuid.uuid4().hex[:6].upper()}"))
    h = await client.start_workflow(
        KandasStatusWorkflow.run, start, id=start.case_id, task_queue=tq
    )
    await complete(
        h,
        TaskKind.consular_check,
        {"outcome": "complete", "translations_verified": True},
        actor=CONSUL,
    )
    commission = {"protocol_number": "P-1", "members": ["A", "B", "C"], "recommendation": "grant"}
    if refuse:
        commission.update(
            recommendation="doubts", doubts=["ethnicity_not_proven"], reasoning="unclear"
        )
    await complete(h, TaskKind.commission, commission, actor=CASEWORKER_PAVLODAR)
    await complete(h, TaskKind.settlement, {"action": "accept"}, actor=CASEWORKER_PAVLODAR)
    if refuse:
        form = {"decision": "refuse", "grounds": ["ethnicity_not_proven"], "reasoning": "No proof."}
        await complete(h, TaskKind.decision, form, actor=CASEWORKER_PAVLODAR)
        await asyncio.sleep(1)
        await h.execute_update(
            KandasStatusWorkflow.submit_objection,
            SubmitObjection(actor=CONSUL, text="The archive record follows."),
        )
        await complete(h, TaskKind.objection_review, form, actor=CASEWORKER_PAVLODAR)
    else:
        await complete(h, TaskKind.decision, {"decision": "approve"}, actor=CASEWORKER_PAVLODAR)
        while True:
            try:
                await h.execute_update(
                    KandasStatusWorkflow.citizenship_granted,
                    CitizenshipGranted(
                        actor=CASEWORKER_PAVLODAR, granted_on="2026-11-21", reference="Decree 1"
                    ),
                )
                break
            except Exception:  # noqa: BLE001 - the status is not active yet
                await asyncio.sleep(0.2)
    await h.result()
    return h


async def main() -> None:
    HERE.mkdir(exist_ok=True)
    data = Path(tempfile.mkdtemp())
    settings = Settings(
        data_dir=data,
        simulator_latency=0,
        simulator_failure_rate=0,
        task_queue=f"rec-{uuid.uuid4()}",
    )
    engine = get_engine(settings.effective_database_url)
    create_all(engine)
    ensure_quota(engine, "work_permit", "astana", "3", 2026, 10)
    ensure_quota(engine, "kandas", "pavlodar", "kandas", 2026, 10)

    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_cli(),
        search_attributes=ALL_KEYS,
        dev_server_extra_args=DEV_SERVER_TUNING,
    )
    worker, pool = build_worker(env.client, settings)
    async with worker:
        await _save(await _approved(env.client, settings.task_queue, True), "work_permit_approved")
        await _save(await _refused(env.client, settings.task_queue), "work_permit_refused")
        await _save(
            await _kandas(env.client, settings.task_queue, refuse=False),
            "kandas_approved_then_citizenship",
        )
        await _save(
            await _kandas(env.client, settings.task_queue, refuse=True),
            "kandas_refused_after_hearing",
        )
    await env.shutdown()

    ts = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=temporal_test_server()
    )
    worker, pool = build_worker(ts.client, settings)
    async with worker:
        start = _as_filed(case_start(case_id=f"WP-REC-{uuid.uuid4().hex[:6].upper()}"))
        start.index_search_attributes = False
        h = await ts.client.start_workflow(
            WorkPermitWorkflow.run, start, id=start.case_id, task_queue=settings.task_queue
        )
        await complete(h, TaskKind.document_check, {"outcome": "complete"})
        await complete(h, TaskKind.decision, {"decision": "approve"})
        await asyncio.sleep(1)
        await ts.sleep(timedelta(days=20))
        await h.result()
        await _save(h, "work_permit_lapsed")
    await ts.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
    os._exit(0)  # see casework.cli._hard_exit
