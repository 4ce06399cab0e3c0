"""A consulate starts a kandas case and follows it to the one-window PDF package, over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

from activities.quota import ensure_quota
from tests.api.conftest import Stack
from tests.api.flows import eventually, pdf_text
from tests.factories import kandas_data

CONSULATE = {"consulate": "KZ-CN-URUMQI", "user": "consul-1"}
PAVLODAR = {"region": "pavlodar", "user": "cw-pavlodar-1"}
COMMISSION = {"protocol_number": "P-17", "members": ["A. Ospanov", "B. Iskakova", "C. Nurlybekov"], "recommendation": "grant"}


async def task_of(stack: Stack, case_id: str, kind: str, role: str, scope: dict[str, Any]) -> dict[str, Any]:
    headers = stack.token(role, **scope)

    async def find() -> dict[str, Any] | None:
        r = await stack.http.get("/api/v1/tasks", params={"kind": kind}, headers=headers)
        return next((t for t in r.json() if t["case_id"] == case_id), None)

    return await eventually(find)  # type: ignore[no-any-return]


async def work(stack: Stack, case_id: str, kind: str, role: str, scope: dict[str, Any], form: dict[str, Any]) -> None:
    task = await task_of(stack, case_id, kind, role, scope)
    r = await stack.http.post(f"/api/v1/tasks/{task['task_id']}/complete", json={"form": form}, headers=stack.token(role, **scope))
    assert r.status_code == 200, r.text


async def test_consulate_follows_a_case_to_the_one_window_package(stack: Stack) -> None:
    for region, limit in {"pavlodar": 3, "akmola": 2}.items():
        ensure_quota(stack.engine, "kandas", region, "kandas", 2026, limit)
    consul = stack.token("consulate_officer", **CONSULATE)
    r = await stack.http.post(
        "/api/v1/cases/kandas_status", json=kandas_data(), headers={**consul, "Idempotency-Key": str(uuid.uuid4())}
    )
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    assert case_id.startswith("KS-")

    await work(stack, case_id, "consular_check", "consulate_officer", CONSULATE, {"outcome": "complete", "translations_verified": True})
    await work(stack, case_id, "commission", "caseworker", PAVLODAR, COMMISSION)
    settlement = await task_of(stack, case_id, "settlement", "caseworker", PAVLODAR)
    assert settlement["context"]["proposal"]["region"] == "pavlodar"
    await work(stack, case_id, "settlement", "caseworker", PAVLODAR, {"action": "accept"})
    await work(stack, case_id, "decision", "caseworker", PAVLODAR, {"decision": "approve"})

    async def active() -> dict[str, Any] | None:
        body = (await stack.http.get(f"/api/v1/cases/{case_id}", headers=consul)).json()
        return body if body.get("status") == "status_active" and body.get("decision_number") else None

    case = await active_case(active)
    # The consulate sees its own tasks only; the region's tasks are not in its view.
    assert {t["kind"] for t in case["tasks"]} == {"consular_check"}

    # Another mission and another region's caseworker cannot see the case.
    other_mission = stack.token("consulate_officer", consulate="KZ-MN-ULAANBAATAR")
    other_region = stack.token("caseworker", region="almaty_city")
    for headers in (other_mission, other_region):
        assert (await stack.http.get(f"/api/v1/cases/{case_id}", headers=headers)).status_code == 404
        assert case_id not in {c["case_id"] for c in (await stack.http.get("/api/v1/cases", headers=headers)).json()["items"]}
        assert (await stack.http.get(f"/api/v1/decisions/{case['decision_number']}/pdf", headers=headers)).status_code == 404
    assert [t for t in (await stack.http.get("/api/v1/tasks", headers=other_mission)).json() if t["case_id"] == case_id] == []

    register = (await stack.http.get("/api/v1/decisions", headers=consul)).json()
    assert [d["number"] for d in register] == [case["decision_number"]]
    r = await stack.http.get(f"/api/v1/decisions/{case['decision_number']}/pdf", headers=consul)
    assert r.status_code == 200
    text = await pdf_text(stack, case["decision_number"], headers=consul)
    visa = case["summary"]["visa_number"]
    for expected in (
        "Қандас мәртебесі берілді", "Статус кандаса присвоен",
        visa, "Въездная виза", "Кіру визасы",
        "Павлодар облысы", "Павлодарская область", "Павлодар",
        "Субсидия на переезд", "Көшуге арналған субсидия",
        "210 МРП", "210 АЕК", "908 250",  # 70 MCI x 3 family members at 4,325 KZT
        "300 МРП", "1 297 500",  # rent 25 MCI x 12 months
        "Nurlan Bekov", "Aigul Bekova",
    ):
        assert expected in text, expected

    quotas = (await stack.http.get("/api/v1/quotas", params={"kind": "kandas", "region": "pavlodar"}, headers=stack.token("supervisor"))).json()
    assert quotas[0]["used"] == 1 and quotas[0]["remaining"] == 2


async def active_case(fn: Any) -> dict[str, Any]:
    return await eventually(fn, timeout=60)  # type: ignore[no-any-return]


async def test_only_a_consulate_starts_kandas_cases(stack: Stack) -> None:
    for role, scope in (("caseworker", {"region": "pavlodar"}), ("employer", {"party": "123456789012"})):
        r = await stack.http.post(
            "/api/v1/cases/kandas_status", json=kandas_data(), headers={**stack.token(role, **scope), "Idempotency-Key": str(uuid.uuid4())}
        )
        assert r.status_code == 403
    r = await stack.http.post(
        "/api/v1/cases/kandas_status",
        json=kandas_data(survey={"preferred_regions": ["pavlodar", "pavlodar"]}),
        headers={**stack.token("consulate_officer", **CONSULATE), "Idempotency-Key": str(uuid.uuid4())},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["name"] == "survey.preferred_regions"
