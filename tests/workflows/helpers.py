"""Driving a case workflow in tests the way a caseworker would."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowHistory

from casework.contracts import Actor, CompleteTask, TaskKind, TaskSpec
from casework.db import CaseEventRow, CaseRow, ClockRow, NotificationRow
from tests.factories import CASEWORKER
from workflows.work_permit import WorkPermitWorkflow


async def wait_task(
    handle: WorkflowHandle[Any, Any], kind: TaskKind, timeout: float = 30
) -> TaskSpec:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        for task in await handle.query(WorkPermitWorkflow.open_tasks):
            if task.kind == kind:
                return task
        await asyncio.sleep(0.05)
    raise AssertionError(f"no open {kind.value} task within {timeout}s")


async def complete(
    handle: WorkflowHandle[Any, Any],
    kind: TaskKind,
    form: dict[str, Any],
    actor: Actor = CASEWORKER,
) -> TaskSpec:
    task = await wait_task(handle, kind)
    return await handle.execute_update(
        WorkPermitWorkflow.complete_task, CompleteTask(task_id=task.task_id, actor=actor, form=form)
    )


async def wait_until(predicate: Any, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def case_row(engine: Engine, case_id: str) -> CaseRow | None:
    with Session(engine) as s:
        return s.get(CaseRow, case_id)


def events(engine: Engine, case_id: str) -> list[CaseEventRow]:
    with Session(engine) as s:
        return list(
            s.exec(
                select(CaseEventRow)
                .where(CaseEventRow.case_id == case_id)
                .order_by(CaseEventRow.seq)
            )
        )  # type: ignore[arg-type]


def event_kinds(engine: Engine, case_id: str) -> list[str]:
    return [e.kind for e in events(engine, case_id)]


def clock(engine: Engine, case_id: str, name: str) -> ClockRow | None:
    with Session(engine) as s:
        return s.get(ClockRow, (case_id, name))


def notices(engine: Engine, case_id: str) -> list[NotificationRow]:
    with Session(engine) as s:
        return list(s.exec(select(NotificationRow).where(NotificationRow.case_id == case_id)))


async def settled_history(handle: WorkflowHandle[Any, Any], timeout: float = 30) -> WorkflowHistory:
    """The case's history once no workflow task is in flight. What a workflow task did
    (its local steps' markers) is recorded when the task completes, and the read-model
    rows its local steps wrote can be visible before that."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        history = await handle.fetch_history()
        kinds = [ev.event_type for ev in history.events]
        scheduled = kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED)
        ended = sum(kinds.count(k) for k in _WORKFLOW_TASK_ENDED)
        if scheduled == ended or loop.time() > end:
            return history
        await asyncio.sleep(0.05)


_WORKFLOW_TASK_ENDED = (
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
)


def scheduled_activities(history: WorkflowHistory) -> list[str]:
    """The regular activities a history scheduled (round trips through the server), in order."""
    return [
        ev.activity_task_scheduled_event_attributes.activity_type.name
        for ev in history.events
        if ev.HasField("activity_task_scheduled_event_attributes")
    ]


async def local_steps(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The local activities a case ran, in order, read from its history's markers (of
    every workflow task completed so far; none is left in flight)."""
    history = await settled_history(handle)
    names = []
    for ev in history.events:
        if ev.HasField("marker_recorded_event_attributes"):
            payloads = ev.marker_recorded_event_attributes.details.get("data")
            if payloads and payloads.payloads:
                data = json.loads(payloads.payloads[0].data)
                if isinstance(data, dict) and "activity_type" in data:
                    names.append(data["activity_type"])
    return names
