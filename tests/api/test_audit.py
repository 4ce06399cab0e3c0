"""Auditors: a verifiable timeline, the raw history, replay against the register, the access
log; and auditors change nothing anywhere."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, SQLModel

from casework.db import CaseEventRow, DecisionRow
from tests.api.conftest import Stack
from tests.api.flows import EMPLOYER_SCOPE, case_in_status, start_case, work_task

AUDITOR = {"user": "auditor-1"}


async def issued_case(stack: Stack) -> dict[str, Any]:
    r = await start_case(stack, category="ict", staffing={"citizens_in_category": 10, "foreigners_in_category": 0})
    case_id = r.json()["case_id"]
    await work_task(stack, case_id, "document_check", {"outcome": "complete"})
    await work_task(stack, case_id, "decision", {"decision": "approve"})
    return await case_in_status(stack, case_id, "issued")


def snapshot(stack: Stack) -> dict[str, list[tuple[Any, ...]]]:
    with Session(stack.engine) as s:
        return {
            t.name: sorted(tuple(map(str, row)) for row in s.execute(text(f'SELECT * FROM "{t.name}"')))  # noqa: S608
            for t in SQLModel.metadata.sorted_tables
            if t.name != "access_log"
        }


async def test_auditor_reads_a_verifiable_timeline_history_and_replay(stack: Stack) -> None:
    case = await issued_case(stack)
    case_id = case["case_id"]
    auditor = stack.token("auditor", **AUDITOR)
    before = snapshot(stack)

    for lang, word in (("en", "Case started"), ("ru", "Дело начато"), ("kk", "Іс басталды")):
        body = (await stack.http.get(f"/api/v1/audit/cases/{case_id}/timeline", params={"lang": lang}, headers=auditor)).json()
        texts = [e["text"] for e in body["entries"]]
        assert texts[0].startswith(word)
        assert any("document_check" in t or "T1" in t for t in texts)
        assert all(e["hash"] for e in body["entries"])
    chain = (await stack.http.get(f"/api/v1/audit/cases/{case_id}/timeline/verify", headers=auditor)).json()
    assert chain["intact"] is True and chain["entries"] > 10

    history = (await stack.http.get(f"/api/v1/audit/cases/{case_id}/history", headers=auditor)).json()
    assert history["events"][0]["eventType"] in ("EVENT_TYPE_WORKFLOW_EXECUTION_STARTED", "WorkflowExecutionStarted")

    report = (await stack.http.post(f"/api/v1/audit/cases/{case_id}/replay", headers=auditor)).json()
    assert report["deterministic"] is True and report["decisions_match"] is True
    assert report["decisions"][0]["number"] == case["decision_number"]

    # Nothing the auditor did changed a row (the access log aside, which records the views).
    assert snapshot(stack) == before
    log = (await stack.http.get("/api/v1/audit/access-log", params={"case_id": case_id}, headers=auditor)).json()
    assert {e["what"] for e in log if e["user_id"] == "auditor-1"} >= {"timeline", "history", "replay"}

    # Tampering shows: an altered register entry is a mismatch, an altered timeline entry breaks the chain.
    with Session(stack.engine) as s:
        row = s.get(DecisionRow, case["decision_number"])
        assert row is not None
        row.outcome = "refused"
        s.add(row)
        event = s.exec(__import__("sqlmodel").select(CaseEventRow).where(CaseEventRow.case_id == case_id, CaseEventRow.seq == 2)).one()
        event.actor = "someone-else"
        s.add(event)
        s.commit()
    report = (await stack.http.post(f"/api/v1/audit/cases/{case_id}/replay", headers=auditor)).json()
    assert report["deterministic"] is True and report["decisions_match"] is False
    assert any("outcome" in d for d in report["decisions"][0]["differences"])
    chain = (await stack.http.get(f"/api/v1/audit/cases/{case_id}/timeline/verify", headers=auditor)).json()
    assert chain["intact"] is False and chain["problems"][0] == {"seq": 2, "problem": "altered", "detail": chain["problems"][0]["detail"]}


async def test_audit_routes_refuse_caseworkers_consulates_and_employers(stack: Stack) -> None:
    case_id = (await start_case(stack)).json()["case_id"]
    await work_task(stack, case_id, "document_check", {"outcome": "complete"})
    callers = [
        stack.token("caseworker", region="astana"),
        stack.token("consulate_officer", consulate="KZ-CN-URUMQI"),
        stack.token("employer", **EMPLOYER_SCOPE),
    ]
    for headers in callers:
        for method, path in (
            ("GET", f"/api/v1/audit/cases/{case_id}/timeline"),
            ("GET", f"/api/v1/audit/cases/{case_id}/timeline/verify"),
            ("GET", f"/api/v1/audit/cases/{case_id}/history"),
            ("POST", f"/api/v1/audit/cases/{case_id}/replay"),
            ("GET", "/api/v1/audit/access-log"),
        ):
            r = await stack.http.request(method, path, headers=headers)
            assert r.status_code == 403, (method, path, r.status_code)
    # Only auditors read the access log, not even a national supervisor.
    assert (await stack.http.get("/api/v1/audit/access-log", headers=stack.token("supervisor"))).status_code == 403


async def test_no_route_lets_an_auditor_change_anything(stack: Stack) -> None:
    case = await issued_case(stack)
    auditor = stack.token("auditor", **AUDITOR)
    before = snapshot(stack)
    task_id = f"{case['case_id']}-T1"
    samples = {
        "{case_id}": case["case_id"],
        "{task_id}": task_id,
        "{day}": "2026-12-31",
        "{number}": case["decision_number"],
    }
    openapi = (await stack.http.get("/api/v1/openapi.json")).json()
    tried = 0
    for path, ops in openapi["paths"].items():
        for method in ops:
            if method.upper() not in ("POST", "PUT", "PATCH", "DELETE"):
                continue
            if path.startswith("/api/v1/audit/") or path.startswith("/api/v1/verify/"):
                continue  # read-only computations (replay, verification), covered above
            url = path
            for key, value in samples.items():
                url = url.replace(key, value)
            body: dict[str, Any] = {"form": {"outcome": "complete"}, "text": "x", "documents": ["x"], "months": 1,
                                    "reason": "x", "kind": "day_off", "granted_on": "2026-12-01", "reference": "x",
                                    "from_user": "x"}
            r = await stack.http.request(method.upper(), url, json=body,
                                         headers={**auditor, "Idempotency-Key": str(uuid.uuid4())})
            tried += 1
            assert r.status_code >= 400, (method, path, r.status_code, r.text[:200])
    assert tried >= 10
    assert snapshot(stack) == before


async def test_bulk_replay_of_a_period_reports_every_closed_case(stack: Stack) -> None:
    from datetime import UTC, datetime, timedelta

    from casework.audit import replay_period

    first = await issued_case(stack)
    second = await issued_case(stack)
    today = datetime.now(UTC).date()

    async def both_visible() -> dict[str, Any] | None:
        summary = await replay_period(stack.env.client, stack.engine, str(today), str(today + timedelta(days=1)), "work_permit")
        ids = {c["case_id"] for c in summary["cases"]}
        return summary if {first["case_id"], second["case_id"]} <= ids else None

    from tests.api.flows import eventually

    summary = await eventually(both_visible, timeout=30, every=0.5)
    mine = [c for c in summary["cases"] if c["case_id"] in (first["case_id"], second["case_id"])]
    assert all(c["deterministic"] and c["decisions_match"] for c in mine)
