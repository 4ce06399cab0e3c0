"""Replay a case's recorded history against today's code and check its decisions against
the decision register. Read-only: safe against production."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter

from casework.contracts import DecisionRecord, DecisionRequest
from casework.db import DecisionRow
from casework.runtime import WORKFLOWS  # what the worker runs is what an audit replays
from casework.sandbox import replayer
from workflows import activity_names as act


def workflows_for(history: WorkflowHistory) -> list[Any]:
    """The workflow class a history was recorded by (all of them if the type is unknown).

    The Replayer loads every class it is given into a fresh sandbox before it replays
    anything; for one case that costs about as much as the replay itself."""
    first = history.events[0] if history.events else None
    name = first.workflow_execution_started_event_attributes.workflow_type.name if first else ""
    return [w for w in WORKFLOWS if w.__name__ == name] or list(WORKFLOWS)


class DecisionCheck(BaseModel):
    number: str | None
    outcome: str
    grounds: list[str]
    sha256: str | None
    in_register: bool
    matches: bool
    differences: list[str]


class ReplayReport(BaseModel):
    case_id: str
    workflow_type: str
    events: int
    deterministic: bool
    failure: str | None
    decisions: list[DecisionCheck]
    decisions_match: bool

    @property
    def ok(self) -> bool:
        return self.deterministic and self.decisions_match


def decisions_in(history: WorkflowHistory) -> list[tuple[DecisionRequest, DecisionRecord | None]]:
    """The decision step's inputs and results, as recorded in the history."""
    conv = pydantic_data_converter.payload_converter
    scheduled: dict[int, DecisionRequest] = {}
    out: list[tuple[DecisionRequest, DecisionRecord | None]] = []
    done: dict[int, DecisionRecord] = {}
    for ev in history.events:
        if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            sched = ev.activity_task_scheduled_event_attributes
            if sched.activity_type.name == act.ISSUE_DECISION:
                [req] = conv.from_payloads(sched.input.payloads, [DecisionRequest])
                scheduled[ev.event_id] = req
        elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            comp = ev.activity_task_completed_event_attributes
            if comp.scheduled_event_id in scheduled:
                [rec] = conv.from_payloads(comp.result.payloads, [DecisionRecord])
                done[comp.scheduled_event_id] = rec
    for event_id, req in scheduled.items():
        out.append((req, done.get(event_id)))
    return out


def check_decisions(engine: Engine, history: WorkflowHistory) -> list[DecisionCheck]:
    checks = []
    with Session(engine) as s:
        for req, rec in decisions_in(history):
            row = s.exec(
                select(DecisionRow).where(DecisionRow.idempotency_key == req.idempotency_key)
            ).first()
            grounds = [g.code for g in req.grounds]
            diffs: list[str] = []
            if rec is None:
                diffs.append("the decision step has not completed in this history")
            if row is None:
                diffs.append("no entry in the decision register")
            if row is not None and rec is not None:
                if row.number != rec.number:
                    diffs.append(f"number: history {rec.number}, register {row.number}")
                if row.outcome != req.outcome.value:
                    diffs.append(f"outcome: history {req.outcome.value}, register {row.outcome}")
                if sorted(g["code"] for g in row.grounds) != sorted(grounds):
                    diffs.append(
                        f"grounds: history {grounds}, register {[g['code'] for g in row.grounds]}"
                    )
                if row.sha256 != rec.sha256:
                    diffs.append("document hash differs from the register")
            checks.append(
                DecisionCheck(
                    number=rec.number if rec else None,
                    outcome=req.outcome.value,
                    grounds=grounds,
                    sha256=rec.sha256 if rec else None,
                    in_register=row is not None,
                    matches=not diffs,
                    differences=diffs,
                )
            )
    return checks


async def replay_history(
    engine: Engine, history: WorkflowHistory, workflows: list[Any] | None = None
) -> ReplayReport:
    result = await replayer(workflows or workflows_for(history)).replay_workflow(
        history, raise_on_replay_failure=False
    )
    failure = result.replay_failure
    checks = check_decisions(engine, history)
    first = (
        history.events[0].workflow_execution_started_event_attributes if history.events else None
    )
    return ReplayReport(
        case_id=history.workflow_id,
        workflow_type=first.workflow_type.name if first else "",
        events=len(history.events),
        deterministic=failure is None,
        failure=f"{type(failure).__name__}: {failure}" if failure else None,
        decisions=checks,
        decisions_match=all(c.matches for c in checks),
    )


async def replay_case(client: Client, engine: Engine, case_id: str) -> ReplayReport:
    history = await client.get_workflow_handle(case_id).fetch_history()
    return await replay_history(engine, history)


async def replay_period(
    client: Client, engine: Engine, since: str, until: str, procedure: str | None = None
) -> dict[str, Any]:
    """Replay every case closed in [since, until) (dates, UTC); read-only."""
    query = f"ExecutionStatus != 'Running' AND CloseTime >= '{since}T00:00:00Z' AND CloseTime < '{until}T00:00:00Z'"
    if procedure:
        query += f" AND CaseProcedure = '{procedure}'"
    reports = []
    async for wf in client.list_workflows(query):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        reports.append(await replay_history(engine, history))
    return {
        "query": query,
        "replayed": len(reports),
        "deterministic": sum(r.deterministic for r in reports),
        "decisions_match": sum(r.decisions_match for r in reports),
        "problems": [r.model_dump(mode="json") for r in reports if not r.ok],
        "cases": [r.model_dump(mode="json") for r in reports],
    }
