"""Audit: the hash-chained timeline (kk, ru, en), the raw history, replay, the access log.

Auditors (national, read-only) and supervisors within their scope read case audits; only
auditors read the access log. Caseworkers, consulates and employers are refused.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from sqlmodel import col, select
from temporalio.service import RPCError

from api import access, policy
from api.auth import CurrentActor
from api.deps import ClientDep, SessionDep
from api.errors import Problem, from_temporal
from casework.audit import ReplayReport, replay_case
from casework.contracts import Actor, Role
from casework.db import AccessLogRow, CaseRow
from casework.timeline import ChainReport, timeline, verify_chain

router = APIRouter(tags=["audit"])


def _auditing(actor: Actor) -> None:
    if actor.role not in (Role.auditor, Role.supervisor):
        raise Problem(
            403, "Forbidden", "audit views are for auditors and supervisors", kind="forbidden"
        )


def _case(actor: Actor, session: Any, case_id: str) -> CaseRow:
    _auditing(actor)
    return policy.require_case(actor, session.get(CaseRow, case_id), case_id)


@router.get("/audit/cases/{case_id}/timeline")
def case_timeline(
    case_id: str,
    actor: CurrentActor,
    session: SessionDep,
    request: Request,
    lang: Literal["kk", "ru", "en"] = "ru",
) -> dict[str, Any]:
    """Who did what, when, with which data: the case's hash-chained timeline in kk, ru or en."""
    _case(actor, session, case_id)
    entries = timeline(session, case_id, lang)
    access.record(session, actor, case_id, "timeline", request)
    return {"case_id": case_id, "lang": lang, "entries": entries}


@router.get("/audit/cases/{case_id}/timeline/verify", response_model=ChainReport)
def verify_timeline(case_id: str, actor: CurrentActor, session: SessionDep) -> ChainReport:
    """Whether the timeline's hash chain is intact; names every altered, missing or moved entry."""
    _case(actor, session, case_id)
    return verify_chain(session, case_id)


@router.get("/audit/cases/{case_id}/history")
async def raw_history(
    case_id: str, actor: CurrentActor, session: SessionDep, client: ClientDep, request: Request
) -> Any:
    """The raw Temporal event history as JSON (the format `temporal workflow show --output json` exports)."""
    _case(actor, session, case_id)
    try:
        history = await client.get_workflow_handle(case_id).fetch_history()
    except RPCError as exc:
        raise from_temporal(exc) from exc
    access.record(session, actor, case_id, "history", request)
    return json.loads(history.to_json())


@router.post("/audit/cases/{case_id}/replay", response_model=ReplayReport)
async def replay(
    case_id: str, actor: CurrentActor, session: SessionDep, client: ClientDep, request: Request
) -> ReplayReport:
    """Replay the history against today's code; report determinism and whether the decisions match the register."""
    _case(actor, session, case_id)
    try:
        report = await replay_case(client, session.get_bind(), case_id)  # type: ignore[arg-type]
    except RPCError as exc:
        raise from_temporal(exc) from exc
    access.record(session, actor, case_id, "replay", request)
    return report


@router.get("/audit/access-log")
def access_log(
    actor: CurrentActor,
    session: SessionDep,
    case_id: str | None = None,
    user_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Every view of a case's personal data, per case or per user (auditors only)."""
    if actor.role != Role.auditor:
        raise Problem(403, "Forbidden", "only auditors read the access log", kind="forbidden")
    stmt = select(AccessLogRow)
    if case_id:
        stmt = stmt.where(AccessLogRow.case_id == case_id)
    if user_id:
        stmt = stmt.where(AccessLogRow.user_id == user_id)
    rows = session.exec(stmt.order_by(col(AccessLogRow.at).desc()).limit(limit)).all()
    return [r.model_dump(mode="json", exclude={"id"}) for r in rows]
