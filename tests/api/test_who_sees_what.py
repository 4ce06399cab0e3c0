"""One policy for every route: role × scope (region, own party)."""

from __future__ import annotations

from tests.api.conftest import Stack
from tests.api.flows import EMPLOYER_SCOPE, case_in_status, inbox_task, start_case, work_task
from tests.factories import application_data


async def test_each_role_sees_only_its_scope(stack: Stack) -> None:
    astana = (await start_case(stack)).json()["case_id"]
    almaty_cw = stack.token("caseworker", region="almaty_city", user="cw-almaty")
    other_bin = {"party": "999999999990", "user": "emp-other"}
    r = await stack.http.post(
        "/api/v1/cases/work_permit",
        json=application_data(
            region="almaty_city", employer={"bin": "999999999990", "name": "Other LLP"}
        ),
        headers={**stack.token("employer", **other_bin), "Idempotency-Key": "other-employer-1"},
    )
    almaty = r.json()["case_id"]
    await inbox_task(stack, astana, "document_check")
    await inbox_task(
        stack, almaty, "document_check", scope={"region": "almaty_city", "user": "cw-almaty"}
    )

    def ids(body: dict) -> set[str]:
        return {c["case_id"] for c in body["items"]}

    views = {
        "employer": stack.token("employer", **EMPLOYER_SCOPE),
        "astana_cw": stack.token("caseworker", region="astana"),
        "almaty_cw": almaty_cw,
        "astana_supervisor": stack.token("supervisor", region="astana"),
        "national_supervisor": stack.token("supervisor"),
        "auditor": stack.token("auditor"),
        "consulate": stack.token("consulate_officer", consulate="KZ-CN-URUMQI"),
    }
    seen = {
        name: ids((await stack.http.get("/api/v1/cases", headers=h)).json())
        for name, h in views.items()
    }
    assert seen["employer"] == {astana}
    assert seen["astana_cw"] == {astana} and seen["astana_supervisor"] == {astana}
    assert seen["almaty_cw"] == {almaty}
    assert seen["national_supervisor"] == seen["auditor"] == {astana, almaty}
    assert seen["consulate"] == set()

    # A single case outside the scope is "not found", not "forbidden": nothing leaks.
    assert (await stack.http.get(f"/api/v1/cases/{astana}", headers=almaty_cw)).status_code == 404
    assert (
        await stack.http.get(f"/api/v1/cases/{almaty}", headers=views["employer"])
    ).status_code == 404
    inbox = (await stack.http.get("/api/v1/tasks", headers=almaty_cw)).json()
    assert {t["case_id"] for t in inbox} == {almaty}
    assert (await stack.http.get("/api/v1/tasks", headers=views["employer"])).json() == []
    assert (await stack.http.get("/api/v1/quotas", headers=views["employer"])).status_code == 403

    # An employer cannot file for another BIN; a caseworker cannot file outside their region.
    r = await stack.http.post(
        "/api/v1/cases/work_permit",
        json=application_data(employer={"bin": "999999999990", "name": "X LLP"}),
        headers={**views["employer"], "Idempotency-Key": "foreign-bin-1"},
    )
    assert r.status_code == 403 and r.json()["errors"][0]["name"] == "employer.bin"
    r = await stack.http.post(
        "/api/v1/cases/work_permit",
        json=application_data(),
        headers={**almaty_cw, "Idempotency-Key": "wrong-region-1"},
    )
    assert r.status_code == 403 and r.json()["errors"][0]["name"] == "region"


async def test_decisions_are_visible_only_within_scope_and_verification_is_public(
    stack: Stack,
) -> None:
    case_id = (
        await start_case(
            stack,
            category="ict",
            staffing={"citizens_in_category": 10, "foreigners_in_category": 0},
        )
    ).json()["case_id"]
    await work_task(stack, case_id, "document_check", {"outcome": "complete"})
    await work_task(stack, case_id, "decision", {"decision": "approve"})
    case = await case_in_status(stack, case_id, "issued")  # ICT: no fee, no quota
    number = case["decision_number"]
    assert case["decisions"][0]["outcome"] == "granted"
    almaty = stack.token("caseworker", region="almaty_city")
    assert (
        await stack.http.get(f"/api/v1/decisions/{number}/pdf", headers=almaty)
    ).status_code == 404
    assert (await stack.http.get("/api/v1/decisions", headers=almaty)).json() == []
    own = (
        await stack.http.get("/api/v1/decisions", headers=stack.token("employer", **EMPLOYER_SCOPE))
    ).json()
    assert [d["number"] for d in own] == [number]
    public = await stack.http.get(
        f"/api/v1/verify/{number}", params={"code": case["decisions"][0]["verification_code"]}
    )
    assert public.status_code == 200 and "applicant" not in public.text.lower()
