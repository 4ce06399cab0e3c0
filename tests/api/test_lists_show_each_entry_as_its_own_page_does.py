"""The inbox and the case list write their pages to JSON in one call (`api/routes/tasks.py`,
`api/routes/cases.py`); each entry is exactly what its own page shows, dates, nested
findings and non-ASCII text included."""

from __future__ import annotations

from tests.api.conftest import Stack
from tests.api.flows import (
    CASEWORKER_SCOPE,
    EMPLOYER_SCOPE,
    inbox_task,
    start_case,
    work_task,
)


async def test_an_inbox_entry_is_the_task_as_its_own_page_shows_it(stack: Stack) -> None:
    case_id = (await start_case(stack)).json()["case_id"]
    await work_task(stack, case_id, "document_check", {"outcome": "complete"})
    listed = await inbox_task(stack, case_id, "decision")
    headers = stack.token("caseworker", **CASEWORKER_SCOPE)

    page = await stack.http.get("/api/v1/tasks", params={"kind": "decision"}, headers=headers)
    assert page.status_code == 200
    assert page.headers["content-type"] == "application/json"
    own = await stack.http.get(f"/api/v1/tasks/{listed['task_id']}", headers=headers)
    assert own.status_code == 200
    assert listed == own.json()
    assert "rev" not in listed
    assert listed["opened_at"].endswith("Z") and listed["due_at"].endswith("Z")
    assert listed["context"]["findings"]["quota"]["state"] == "reserved"

    # The OpenAPI document still says the inbox is a list.
    spec = (await stack.http.get("/api/v1/openapi.json")).json()
    ok = spec["paths"]["/api/v1/tasks"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["type"] == "array"


async def test_a_case_list_entry_is_the_case_as_its_own_page_shows_it(stack: Stack) -> None:
    filed = await start_case(stack, employer={"name": "ТОО «Дала Құрылыс»"})
    case_id = filed.json()["case_id"]
    await inbox_task(stack, case_id, "document_check")
    headers = stack.token("employer", **EMPLOYER_SCOPE)

    page = await stack.http.get("/api/v1/cases", params={"q": case_id}, headers=headers)
    assert page.status_code == 200
    assert page.headers["content-type"] == "application/json"
    body = page.json()
    assert body["total"] == 1 and [c["case_id"] for c in body["items"]] == [case_id]
    listed = body["items"][0]
    assert "rev" not in listed
    own = (await stack.http.get(f"/api/v1/cases/{case_id}", headers=headers)).json()
    assert listed == {key: own[key] for key in listed}
    assert listed["applicant_name"] == "ТОО «Дала Құрылыс»"

    spec = (await stack.http.get("/api/v1/openapi.json")).json()
    ok = spec["paths"]["/api/v1/cases"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/CaseList"}
