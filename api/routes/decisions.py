"""The decision register, the PDFs, and public verification of a document."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlmodel import col, select

from api import access, policy
from api.auth import CurrentActor
from api.deps import SessionDep
from api.errors import Problem
from casework.db import CaseRow, DecisionRow

router = APIRouter(tags=["decisions"])


def register_view(row: DecisionRow) -> dict[str, Any]:
    return row.model_dump(mode="json", exclude={"document_path", "idempotency_key"})


@router.get("/decisions")
def register(
    actor: CurrentActor,
    session: SessionDep,
    case_id: str | None = None,
    outcome: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """The decision register, within the caller's scope, newest first."""
    stmt = select(DecisionRow).where(policy.decision_filter(actor))
    if case_id:
        stmt = stmt.where(DecisionRow.case_id == case_id)
    if outcome:
        stmt = stmt.where(DecisionRow.outcome == outcome)
    rows = session.exec(
        stmt.order_by(col(DecisionRow.issued_at).desc()).offset(offset).limit(limit)
    ).all()
    return [register_view(r) for r in rows]


def _visible(actor: Any, session: Any, number: str) -> DecisionRow:
    row = session.get(DecisionRow, number)
    case = session.get(CaseRow, row.case_id) if row else None
    if row is None or case is None or not policy.can_see_case(actor, case):
        raise Problem(404, "Not found", f"no decision {number}", kind="not-found")
    return row  # type: ignore[no-any-return]


@router.get("/decisions/{number}")
def get_decision(number: str, actor: CurrentActor, session: SessionDep) -> dict[str, Any]:
    """One register entry."""
    return register_view(_visible(actor, session, number))


@router.get("/decisions/{number}/pdf", response_class=FileResponse)
def get_pdf(
    number: str, actor: CurrentActor, session: SessionDep, request: Request
) -> FileResponse:
    """The bilingual (kk/ru) decision document."""
    row = _visible(actor, session, number)
    access.record(session, actor, row.case_id, "document", request)
    if row.status != "issued" or not Path(row.document_path).is_file():
        raise Problem(409, "Not ready", "the document is being issued", kind="not-ready")
    return FileResponse(
        row.document_path, media_type="application/pdf", filename=f"{row.number}.pdf"
    )


def _verdict(row: DecisionRow, genuine: bool, reason: str) -> dict[str, Any]:
    return {
        "genuine": genuine,
        "reason": reason,
        "number": row.number,
        "procedure": row.procedure,
        "outcome": row.outcome,
        "issued_at": row.issued_at.isoformat(),
        "valid_from": row.valid_from.isoformat() if row.valid_from else None,
        "valid_to": row.valid_to.isoformat() if row.valid_to else None,
        "permit_number": row.permit_number,
        "ruleset_version": row.ruleset_version,
    }


@router.get("/verify/{number}")
def verify(
    number: str,
    session: SessionDep,
    code: Annotated[
        str | None, Query(max_length=40, description="verification code printed on the document")
    ] = None,
    sha256: Annotated[
        str | None, Query(pattern="^[0-9a-fA-F]{64}$", description="SHA-256 of the PDF file")
    ] = None,
) -> dict[str, Any]:
    """Confirm a decision document is genuine, by its code or its file hash (no login)."""
    row = session.get(DecisionRow, number)
    if row is None or row.status != "issued":
        raise Problem(404, "Not found", f"no issued decision {number}", kind="not-found")
    if code is None and sha256 is None:
        raise Problem(
            422,
            "Invalid request",
            "give the verification code or the file's SHA-256",
            kind="invalid-request",
            errors=[{"name": "code", "reason": "code or sha256 required"}],
        )
    if code is not None and code.strip().upper() != row.verification_code:
        raise Problem(
            409,
            "Not genuine",
            "the verification code does not match the register",
            kind="not-genuine",
            errors=[{"name": "code", "reason": "does not match"}],
        )
    if sha256 is not None and sha256.lower() != row.sha256:
        raise Problem(
            409,
            "Not genuine",
            "the file's hash does not match the register",
            kind="not-genuine",
            errors=[{"name": "sha256", "reason": "does not match"}],
        )
    return _verdict(row, True, "matches the decision register")


@router.post("/verify/{number}")
async def verify_file(number: str, request: Request, session: SessionDep) -> dict[str, Any]:
    """Upload a PDF (raw body) to check it byte for byte against the register (no login)."""
    body = await request.body()
    if not body:
        raise Problem(
            422,
            "Invalid request",
            "send the PDF as the request body",
            kind="invalid-request",
            errors=[{"name": "body", "reason": "empty"}],
        )
    return verify(number, session, sha256=hashlib.sha256(body).hexdigest())
