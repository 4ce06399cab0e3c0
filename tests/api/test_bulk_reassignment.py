"""A supervisor moves all of an absent caseworker's tasks in one request."""

from __future__ import annotations

import asyncio

from sqlmodel import Session, col, select

from casework.db import CaseEventRow, TaskRow
from tests.api.conftest import Stack
from tests.api.flows import eventually, start_case

N = 50


async def test_bulk_reassignment_of_fifty_tasks_records_each_move(stack: Stack) -> None:
    gate = asyncio.Semaphore(10)

    async def start() -> str:
        async with gate:
            r = await start_case(stack)
            assert r.status_code == 201, r.text
            return str(r.json()["case_id"])

    case_ids = set(await asyncio.gather(*(start() for _ in range(N))))
    ill = stack.token("caseworker", region="astana", user="cw-ill")

    async def all_tasks() -> list[dict] | None:
        r = await stack.http.get("/api/v1/tasks", params={"kind": "document_check", "limit": 500}, headers=ill)
        tasks = [t for t in r.json() if t["case_id"] in case_ids]
        return tasks if len(tasks) == N else None

    tasks = await eventually(all_tasks)

    async def claim(task: dict) -> None:
        async with gate:
            r = await stack.http.post(f"/api/v1/tasks/{task['task_id']}/claim", headers=ill)
            assert r.status_code == 200, r.text

    await asyncio.gather(*(claim(t) for t in tasks))

    # A caseworker cannot bulk-move; another region's supervisor moves nothing of Astana's.
    body = {"from_user": "cw-ill", "to_user": "cw-cover", "reason": "sick leave"}
    assert (await stack.http.post("/api/v1/tasks/reassign", json=body, headers=ill)).status_code == 403
    other = await stack.http.post("/api/v1/tasks/reassign", json=body, headers=stack.token("supervisor", region="almaty_city"))
    assert other.json()["moved"] == 0

    r = await stack.http.post("/api/v1/tasks/reassign", json=body, headers=stack.token("supervisor", region="astana", user="sup-astana"))
    assert r.status_code == 200, r.text
    assert r.json()["moved"] == N and r.json()["failed"] == 0

    with Session(stack.engine) as s:
        rows = s.exec(select(TaskRow).where(col(TaskRow.case_id).in_(case_ids))).all()
        assert len(rows) == N
        assert {(t.status, t.assignee) for t in rows} == {("claimed", "cw-cover")}
        moves = s.exec(select(CaseEventRow).where(CaseEventRow.kind == "task_reassigned", col(CaseEventRow.case_id).in_(case_ids))).all()
    assert len(moves) == N and {m.case_id for m in moves} == case_ids
    assert all(m.data["from_user"] == "cw-ill" and m.data["to_user"] == "cw-cover" and m.actor == "sup-astana" for m in moves)

    # Back to the queue: nobody holds them, nobody twice.
    back = await stack.http.post("/api/v1/tasks/reassign", json={"from_user": "cw-cover", "to_user": None},
                                 headers=stack.token("supervisor"))
    assert back.json()["moved"] == N
    with Session(stack.engine) as s:
        rows = s.exec(select(TaskRow).where(col(TaskRow.case_id).in_(case_ids))).all()
    assert {(t.status, t.assignee) for t in rows} == {("open", None)}
