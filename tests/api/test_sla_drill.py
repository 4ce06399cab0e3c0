"""An SLA drill on a live stack: an override rule set with short terms produces real
at-risk and breached events, in history, read model and search attributes."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.api.conftest import Stack, _settings, _stack
from tests.api.flows import EMPLOYER_SCOPE, eventually, work_task
from tests.factories import application_data

DRILL = Path(__file__).resolve().parents[2] / "drills" / "work_permit" / "drill-minutes.json"


@pytest.fixture
async def drill_stack(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    rules = json.loads(DRILL.read_text())
    rules["version"] = "drill-seconds"
    rules["clocks"]["consideration"]["term"] = {"amount": 8, "unit": "seconds"}
    (tmp_path / "overrides" / "work_permit").mkdir(parents=True)
    (tmp_path / "overrides" / "work_permit" / "drill.json").write_text(json.dumps(rules))
    async for s in _stack(dev_env, _settings(tmp_path, ruleset_override_dir=tmp_path / "overrides")):
        yield s


async def test_drill_rule_set_breaches_within_seconds(drill_stack: Stack) -> None:
    stack = drill_stack
    headers = {**stack.token("employer", **EMPLOYER_SCOPE), "Idempotency-Key": str(uuid.uuid4())}
    refused = await stack.http.post(
        "/api/v1/cases/work_permit", json=application_data(), headers={**headers, "X-Ruleset-Version": "2025.09"}
    )
    assert refused.status_code == 422  # a caller can never pick the rules of a real case

    r = await stack.http.post(
        "/api/v1/cases/work_permit", json=application_data(), headers={**headers, "X-Ruleset-Version": "drill-seconds"}
    )
    assert r.status_code == 201 and r.json()["ruleset_version"] == "drill-seconds"
    case_id = r.json()["case_id"]
    await work_task(stack, case_id, "document_check", {"outcome": "complete"})
    supervisor = stack.token("supervisor")

    async def breached() -> dict | None:
        case = (await stack.http.get(f"/api/v1/cases/{case_id}", headers=supervisor)).json()
        escalated = any(e["kind"] == "task_escalated" for e in case["timeline"])
        return case if case["sla_state"] == "breached" and escalated else None

    case = await eventually(breached, timeout=60)
    kinds = [e["kind"] for e in case["timeline"]]
    assert kinds.index("clock_at_risk") < kinds.index("clock_breached")

    async def indexed() -> list[str]:
        query = f"WorkflowId='{case_id}' AND SlaState='breached'"
        return [wf.id async for wf in stack.env.client.list_workflows(query)]

    assert await eventually(indexed, timeout=30) == [case_id]
