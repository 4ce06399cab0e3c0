"""The whole approval path and the whole refusal path, through HTTP only."""

from __future__ import annotations

import hashlib

from tests.api.conftest import Stack
from tests.api.flows import (
    EMPLOYER_SCOPE,
    case_in_status,
    eventually,
    inbox_task,
    pdf_text,
    start_case,
    work_task,
)

FEE_CAT_3 = 170 * 4325


async def test_employer_gets_a_permit_after_approval_and_payment(db_stack: Stack) -> None:
    stack = db_stack
    r = await start_case(stack)
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    assert r.headers["Location"] == f"/api/v1/cases/{case_id}"

    await work_task(stack, case_id, "document_check", {"outcome": "complete"})
    decision = await inbox_task(stack, case_id, "decision")
    assert decision["context"]["findings"]["quota"]["state"] == "reserved"
    await work_task(
        stack, case_id, "decision", {"decision": "approve", "reasoning": "All conditions met."}
    )

    case = await case_in_status(stack, case_id, "awaiting_payment")
    assert case["fee_kzt"] == FEE_CAT_3
    employer = stack.token("employer", **EMPLOYER_SCOPE)

    async def fee_notice() -> bool:
        notes = (
            await stack.http.get(
                "/api/v1/notifications", params={"case_id": case_id}, headers=employer
            )
        ).json()
        return any(
            n["kind"] == "fee_notice" and n["data"]["amount_kzt"] == FEE_CAT_3 for n in notes
        )

    await eventually(fee_notice)

    paid = await stack.http.post(f"/api/v1/dev/payments/{case_id}/pay", json={}, headers=employer)
    assert paid.status_code == 200, paid.text
    case = await case_in_status(stack, case_id, "issued")
    number = case["decision_number"]
    entry = case["decisions"][0]
    assert entry["outcome"] == "granted" and entry["permit_number"].startswith("KZ-WP-")

    text = await pdf_text(stack, number)
    for expected in (
        "Рұқсат берілді",
        "Разрешение выдано",
        entry["permit_number"],
        number,
        "Ivan Petrov",
        entry["verification_code"],
    ):
        assert expected in text, expected
    valid_from = "{2}.{1}.{0}".format(*entry["valid_from"].split("-"))
    valid_to = "{2}.{1}.{0}".format(*entry["valid_to"].split("-"))
    assert valid_from in text and valid_to in text

    quotas = (
        await stack.http.get(
            "/api/v1/quotas",
            params={"region": "astana", "kind": "work_permit"},
            headers=stack.token("supervisor"),
        )
    ).json()
    pool = next(q for q in quotas if q["category"] == "3")
    assert pool["used"] == 1 and pool["reserved"] == 0 and pool["remaining"] == pool["limit"] - 1

    # Anyone can check the document without logging in; a wrong hash is rejected.
    pdf = (await stack.http.get(f"/api/v1/decisions/{number}/pdf", headers=employer)).content
    ok = await stack.http.get(
        f"/api/v1/verify/{number}", params={"sha256": hashlib.sha256(pdf).hexdigest()}
    )
    assert ok.status_code == 200 and ok.json()["genuine"] is True
    by_code = await stack.http.get(
        f"/api/v1/verify/{number}", params={"code": entry["verification_code"]}
    )
    assert by_code.status_code == 200
    forged = await stack.http.get(f"/api/v1/verify/{number}", params={"sha256": "0" * 64})
    assert forged.status_code == 409 and forged.json()["errors"][0]["name"] == "sha256"
    uploaded = await stack.http.post(f"/api/v1/verify/{number}", content=pdf + b"%tampered")
    assert uploaded.status_code == 409


async def test_refusal_goes_through_a_hearing_and_ends_in_a_reasoned_pdf(db_stack: Stack) -> None:
    stack = db_stack
    r = await start_case(stack, staffing={"citizens_in_category": 10, "foreigners_in_category": 5})
    case_id = r.json()["case_id"]
    await work_task(stack, case_id, "document_check", {"outcome": "complete"})
    task = await inbox_task(stack, case_id, "decision")
    assert task["context"]["proposed_grounds"] == ["local_content_unmet"]
    await work_task(
        stack,
        case_id,
        "decision",
        {
            "decision": "refuse",
            "grounds": ["local_content_unmet"],
            "reasoning": "Citizens are 62.5 % of the category.",
        },
    )

    await case_in_status(stack, case_id, "hearing")
    employer = stack.token("employer", **EMPLOYER_SCOPE)

    async def intended() -> bool:
        notes = (
            await stack.http.get(
                "/api/v1/notifications", params={"case_id": case_id}, headers=employer
            )
        ).json()
        return any(n["kind"] == "intended_refusal" for n in notes)

    await eventually(intended)
    objection = "We hired 12 citizens last month; the staffing table is attached."
    r = await stack.http.post(
        f"/api/v1/cases/{case_id}/objection", json={"text": objection}, headers=employer
    )
    assert r.status_code == 200, r.text
    review = await inbox_task(stack, case_id, "objection_review")
    assert review["context"]["hearing"]["objection_text"] == objection
    await work_task(
        stack,
        case_id,
        "objection_review",
        {
            "decision": "refuse",
            "grounds": ["local_content_unmet"],
            "reasoning": "The new hires are not in the category; the share stays 62.5 %.",
        },
    )

    case = await case_in_status(stack, case_id, "refused")
    entry = case["decisions"][0]
    assert entry["outcome"] == "refused" and entry["appeal_deadline"]
    kinds = [e["kind"] for e in case["timeline"]]
    assert (
        kinds.index("objection_received")
        < kinds.index("hearing_closed")
        < kinds.index("decision_issued")
    )

    text = await pdf_text(stack, case["decision_number"])
    for expected in (
        "Бас тарту туралы шешім",
        "Решение об отказе",
        "Не соблюдены условия по местному содержанию в кадрах",
        "Кадрлардағы жергілікті қамту шарттары сақталмады",
        "Приказ МТСЗН РК № 279",
        "We hired 12 citizens last month",
        "руководителю услугодателя",
        "{2}.{1}.{0}".format(*entry["appeal_deadline"].split("-")),
    ):
        assert expected in text, expected
    quotas = (
        await stack.http.get(
            "/api/v1/quotas", params={"region": "astana"}, headers=stack.token("supervisor")
        )
    ).json()
    assert next(q for q in quotas if q["category"] == "3")["reserved"] == 0
