"""What an employer, a caseworker and a supervisor do, over HTTP only."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from typing import Any

import httpx
from pypdf import PdfReader

from tests.api.conftest import Stack
from tests.factories import EMPLOYER_BIN, application_data

EMPLOYER_SCOPE = {"party": EMPLOYER_BIN, "user": "emp-steppe"}
CASEWORKER_SCOPE = {"region": "astana", "user": "cw-astana-1"}


async def start_case(stack: Stack, key: str | None = None, **overrides: Any) -> httpx.Response:
    return await stack.http.post(
        "/api/v1/cases/work_permit",
        json=application_data(**overrides),
        headers={
            **stack.token("employer", **EMPLOYER_SCOPE),
            "Idempotency-Key": key or str(uuid.uuid4()),
        },
    )


async def eventually(fn: Any, timeout: float = 60, every: float = 0.1) -> Any:
    """Poll until fn() returns something truthy (the read model is updated by activities)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError("not reached in time")
        await asyncio.sleep(every)


async def inbox_task(
    stack: Stack, case_id: str, kind: str, scope: dict[str, Any] = CASEWORKER_SCOPE
) -> dict[str, Any]:
    headers = stack.token("caseworker", **scope)

    async def find() -> dict[str, Any] | None:
        r = await stack.http.get("/api/v1/tasks", params={"kind": kind}, headers=headers)
        assert r.status_code == 200, r.text
        return next((t for t in r.json() if t["case_id"] == case_id), None)

    return await eventually(find)  # type: ignore[no-any-return]


async def work_task(stack: Stack, case_id: str, kind: str, form: dict[str, Any]) -> dict[str, Any]:
    task = await inbox_task(stack, case_id, kind)
    headers = stack.token("caseworker", **CASEWORKER_SCOPE)
    r = await stack.http.post(f"/api/v1/tasks/{task['task_id']}/claim", headers=headers)
    assert r.status_code == 200, r.text
    r = await stack.http.post(
        f"/api/v1/tasks/{task['task_id']}/complete", json={"form": form}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def case_in_status(stack: Stack, case_id: str, *statuses: str) -> dict[str, Any]:
    headers = stack.token("employer", **EMPLOYER_SCOPE)

    async def get() -> dict[str, Any] | None:
        r = await stack.http.get(f"/api/v1/cases/{case_id}", headers=headers)
        return r.json() if r.status_code == 200 and r.json()["status"] in statuses else None

    return await eventually(get)  # type: ignore[no-any-return]


async def pdf_text(stack: Stack, number: str, headers: dict[str, str] | None = None) -> str:
    headers = headers or stack.token("employer", **EMPLOYER_SCOPE)
    r = await stack.http.get(f"/api/v1/decisions/{number}/pdf", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text
    reader = PdfReader(io.BytesIO(r.content))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() or "" for page in reader.pages))
