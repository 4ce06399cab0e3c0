"""Malformed and semantically wrong requests get field-level RFC 9457 problems and leave no trace."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlmodel import Session, func, select

from casework.db import CaseEventRow, CaseRow, QuotaEntryRow, TaskRow
from tests.api.conftest import Stack
from tests.api.flows import CASEWORKER_SCOPE, case_in_status, inbox_task, start_case, work_task
from tests.factories import application_data


def counts(stack: Stack) -> dict[str, int]:
    with Session(stack.engine) as s:
        return {
            t.__name__: s.exec(select(func.count()).select_from(t)).one()
            for t in (CaseRow, TaskRow, CaseEventRow, QuotaEntryRow)
        }


async def workflow_count(stack: Stack, expected: int) -> int:
    """The number of workflows on the stack's task queue, read from the server's visibility
    store. That store lags a start by a moment, so wait (up to 10 s) for the `expected`
    count, then read again a little later: a late extra workflow still shows."""
    query = f'TaskQueue="{stack.settings.task_queue}"'
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        count = (await stack.env.client.count_workflows(query)).count
        if count == expected or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    return (await stack.env.client.count_workflows(query)).count


def names(body: dict[str, Any]) -> set[str]:
    return {e["name"] for e in body.get("errors", [])}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"region": "atlantis"}, "region"),
        ({"category": "7"}, "category"),
        ({"staffing": {"total_staff": -5}}, "staffing.total_staff"),
        ({"staffing": {"citizens_in_category": -1}}, "staffing.citizens_in_category"),
        ({"vacancy_code": "12345"}, "vacancy_code"),
        ({"employer": {"bin": "12AB"}}, "employer.bin"),
        ({"category": "seasonal"}, "seasonal_days"),
        ({"staffing": {"total_staff": 10, "citizens_in_category": 95}}, "staffing.total_staff"),
        ({"worker": {"birth_date": "2015-01-01"}}, "worker.birth_date"),
        ({"validity_years": 2}, "validity_years"),
        ({"unexpected": True}, "unexpected"),
    ],
)
async def test_invalid_application_is_rejected_field_by_field(
    stack: Stack, overrides: dict[str, Any], field: str
) -> None:
    before = counts(stack)
    r = await start_case(stack, **overrides)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 422 and body["type"].endswith("invalid-request")
    assert field in names(body)
    assert counts(stack) == before
    assert await workflow_count(stack, 0) == 0


async def test_missing_idempotency_key_is_a_field_error(stack: Stack) -> None:
    r = await stack.http.post(
        "/api/v1/cases/work_permit",
        json=application_data(),
        headers=stack.token("employer", party="123456789012"),
    )
    assert r.status_code == 422 and "Idempotency-Key" in names(r.json())


async def test_a_retry_with_the_same_key_returns_the_same_case(stack: Stack) -> None:
    key = str(uuid.uuid4())
    first = await start_case(stack, key=key)
    again = await start_case(stack, key=key)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert await workflow_count(stack, 1) == 1
    reused = await start_case(stack, key=key, position="Crane operator")
    assert reused.status_code == 422 and "Idempotency-Key" in names(reused.json())
    assert await workflow_count(stack, 1) == 1


async def test_invalid_forms_wrong_scope_and_completed_tasks_change_nothing(stack: Stack) -> None:
    case_id = (await start_case(stack)).json()["case_id"]
    task = await inbox_task(stack, case_id, "document_check")
    url = f"/api/v1/tasks/{task['task_id']}"
    cw = stack.token("caseworker", **CASEWORKER_SCOPE)

    form = (await stack.http.get(f"{url}/form", headers=cw)).json()
    assert set(form["schema"]["properties"]) == {"outcome", "missing_documents", "note"}

    before = counts(stack)
    bad = await stack.http.post(f"{url}/complete", json={"form": {"outcome": "maybe"}}, headers=cw)
    assert bad.status_code == 422 and "form.outcome" in names(bad.json())
    semantic = await stack.http.post(
        f"{url}/complete", json={"form": {"outcome": "incomplete"}}, headers=cw
    )
    assert semantic.status_code == 422 and "form.missing_documents" in names(semantic.json())

    other_region = stack.token("caseworker", region="almaty_city")
    hidden = await stack.http.post(f"{url}/claim", headers=other_region)
    assert hidden.status_code == 404
    employer = stack.token("employer", party="123456789012")
    assert (
        await stack.http.post(
            f"{url}/complete", json={"form": {"outcome": "complete"}}, headers=employer
        )
    ).status_code == 403
    assert counts(stack) == before

    claimed = await stack.http.post(f"{url}/claim", headers=cw)
    assert claimed.status_code == 200 and claimed.json()["assignee"] == "cw-astana-1"
    colleague = stack.token("caseworker", region="astana", user="cw-astana-2")
    taken = await stack.http.post(
        f"{url}/complete", json={"form": {"outcome": "complete"}}, headers=colleague
    )
    assert taken.status_code == 409 and taken.json()["type"].endswith("task-claimed")

    done = await stack.http.post(
        f"{url}/complete", json={"form": {"outcome": "complete"}}, headers=cw
    )
    assert done.status_code == 200
    # The next read shows the completion.
    assert (await stack.http.get(url, headers=cw)).json()["status"] == "done"
    # The case moves on by itself (registry checks, quota) until it waits for the
    # caseworker's decision; only then is it quiet enough to count.
    await inbox_task(stack, case_id, "decision")
    after_done = counts(stack)
    again = await stack.http.post(
        f"{url}/complete", json={"form": {"outcome": "complete"}}, headers=cw
    )
    assert again.status_code == 409 and "task_id" in names(again.json())
    assert counts(stack) == after_done


async def test_refusal_needs_known_grounds_and_reasoning(stack: Stack) -> None:
    case_id = (await start_case(stack)).json()["case_id"]
    await work_task(stack, case_id, "document_check", {"outcome": "complete"})
    task = await inbox_task(stack, case_id, "decision")
    cw = stack.token("caseworker", **CASEWORKER_SCOPE)
    url = f"/api/v1/tasks/{task['task_id']}/complete"
    r = await stack.http.post(
        url, json={"form": {"decision": "refuse", "grounds": ["no_reason"]}}, headers=cw
    )
    assert r.status_code == 422
    assert {"form.grounds.0", "form.reasoning"} <= names(r.json())
    r = await stack.http.post(url, json={"form": {"decision": "refuse"}}, headers=cw)
    assert "form.grounds" in names(r.json())
    case = await case_in_status(stack, case_id, "decision")
    assert case["decisions"] == []


async def test_requests_without_a_valid_token_are_refused(stack: Stack) -> None:
    assert (await stack.http.get("/api/v1/cases")).status_code == 401
    r = await stack.http.get("/api/v1/tasks", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401 and r.json()["type"].endswith("unauthorized")
