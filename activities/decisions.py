"""The decision step: number, render, hash, store, register. Safe to retry.

Runs as a synchronous activity on the worker's thread pool: WeasyPrint is blocking and
CPU-bound, and must never starve workflow tasks on the event loop.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.documents import (
    DocumentContext,
    DocumentRenderer,
    content_digest,
    verification_code_for,
)
from casework.calendar import compute_deadline, load_calendar
from casework.contracts import (
    KZ_TZ,
    DeadlineRequest,
    DecisionOutcome,
    DecisionRecord,
    DecisionRequest,
)
from casework.db import CounterRow, DecisionRow
from casework.rules import PROCEDURES, load_rules
from casework.writer import serialized_writes
from workflows import activity_names as act

log = logging.getLogger("casework.decisions")


def next_value(engine: Engine, name: str) -> int:
    """A gap-tolerant, race-free counter (one row per series)."""
    for _ in range(10):
        with serialized_writes(engine), Session(engine) as s:
            res = s.execute(
                update(CounterRow)
                .where(col(CounterRow.name) == name)
                .values(value=CounterRow.value + 1)
            )
            if res.rowcount == 1:  # type: ignore[attr-defined]
                value = s.exec(select(CounterRow.value).where(CounterRow.name == name)).one()
                s.commit()
                return value
            try:
                s.add(CounterRow(name=name, value=1))
                s.commit()
                return 1
            except IntegrityError:
                s.rollback()
    raise RuntimeError(f"counter {name} is contended")


def record_of(row: DecisionRow) -> DecisionRecord:
    return DecisionRecord(
        number=row.number,
        case_id=row.case_id,
        outcome=DecisionOutcome(row.outcome),
        issued_at=row.issued_at,
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        permit_number=row.permit_number,
        sha256=row.sha256,
        verification_code=row.verification_code,
        ruleset_version=row.ruleset_version,
        appeal_deadline=row.appeal_deadline,
    )


class DecisionActivities:
    def __init__(
        self,
        engine: Engine,
        document_dir: Path,
        public_base_url: str,
        renderer: DocumentRenderer | None = None,
        ruleset_override_dir: Path | None = None,
    ) -> None:
        self.engine = engine
        self.document_dir = document_dir
        self.public_base_url = public_base_url.rstrip("/")
        self.renderer = renderer or DocumentRenderer()
        self.override_dir = ruleset_override_dir

    def _allocate(self, req: DecisionRequest) -> DecisionRow:
        """Number the decision once per idempotency key; a retry finds the same row."""
        with Session(self.engine, expire_on_commit=False) as s:
            row = s.exec(
                select(DecisionRow).where(DecisionRow.idempotency_key == req.idempotency_key)
            ).first()
            if row is not None:
                return row
        year = req.decided_at.astimezone(KZ_TZ).year
        prefix = PROCEDURES[req.procedure]["case_prefix"]
        number = f"{prefix}-D-{year}-{next_value(self.engine, f'decision:{prefix}:{year}'):06d}"
        permit = None
        if req.outcome == DecisionOutcome.granted:
            permit = f"KZ-{prefix}-{year}-{next_value(self.engine, f'permit:{prefix}:{year}'):06d}"
        appeal_deadline: date | None = None
        if req.appeal_term is not None:
            with Session(self.engine) as s:
                cal = load_calendar(s)
            appeal_deadline = compute_deadline(
                DeadlineRequest(start=req.decided_at, term=req.appeal_term), cal
            ).deadline.date()
        row = DecisionRow(
            number=number,
            idempotency_key=req.idempotency_key,
            case_id=req.case_id,
            procedure=req.procedure,
            region=req.region.value,
            outcome=req.outcome.value,
            status="pending",
            issued_at=datetime.now(UTC),
            valid_from=req.valid_from,
            valid_to=req.valid_to,
            permit_number=permit,
            grounds=[g.model_dump(mode="json") for g in req.grounds],
            ruleset_version=req.ruleset_version,
            appeal_deadline=appeal_deadline,
        )
        try:
            with serialized_writes(self.engine), Session(self.engine, expire_on_commit=False) as s:
                s.add(row)
                s.commit()
            return row
        except IntegrityError:
            # A concurrent retry won the race: use its number (ours becomes a gap).
            with Session(self.engine, expire_on_commit=False) as s:
                return s.exec(
                    select(DecisionRow).where(DecisionRow.idempotency_key == req.idempotency_key)
                ).one()

    def issue(self, req: DecisionRequest) -> DecisionRecord:
        if req.outcome == DecisionOutcome.refused and req.hearing is None:
            # Administrative Procedure Code art. 73: no refusal without a hearing.
            raise ApplicationError(
                "a refusal needs a hearing record", type="HearingRequired", non_retryable=True
            )
        if req.outcome == DecisionOutcome.refused and not req.grounds:
            raise ApplicationError(
                "a refusal needs grounds", type="GroundsRequired", non_retryable=True
            )
        row = self._allocate(req)
        if row.status == "issued" and Path(row.document_path).is_file():
            return record_of(row)
        rules = load_rules(
            req.procedure, row.issued_at.date(), req.ruleset_version, self.override_dir
        )
        titles = PROCEDURES[req.procedure]
        digest = content_digest(
            req.model_copy(update={"permit_number": row.permit_number}), row.number, row.issued_at
        )
        code = verification_code_for(row.number, digest)
        ctx = DocumentContext(
            request=req.model_copy(update={"permit_number": row.permit_number}),
            number=row.number,
            issued_at=row.issued_at,
            verification_code=code,
            verify_url=f"{self.public_base_url}/api/v1/verify/{row.number}?code={code}",
            procedure_title_kk=titles["title_kk"],
            procedure_title_ru=titles["title_ru"],
            authority_kk=rules.authority.name_kk,
            authority_ru=rules.authority.name_ru,
            appeal_route_kk=rules.appeal_route_kk,
            appeal_route_ru=rules.appeal_route_ru,
            appeal_deadline=row.appeal_deadline,
        )
        # Written in the render process pool: this thread waits with the GIL released. If a
        # render process dies this raises (retryable); the retry reuses the row and number.
        pdf = self.renderer.render_pdf(ctx)
        sha = hashlib.sha256(pdf).hexdigest()
        folder = self.document_dir / row.issued_at.strftime("%Y/%m")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{row.number}.pdf"
        tmp = path.with_suffix(".pdf.tmp")
        tmp.write_bytes(pdf)
        tmp.replace(path)  # atomic: a crash never leaves half a document under the real name
        with serialized_writes(self.engine), Session(self.engine, expire_on_commit=False) as s:
            stored = s.get(DecisionRow, row.number)
            assert stored is not None
            stored.sha256 = sha
            stored.verification_code = code
            stored.document_path = str(path.resolve())
            stored.status = "issued"
            s.add(stored)
            s.commit()
            log.info(
                "decision %s issued for case %s (%s)", row.number, req.case_id, req.outcome.value
            )
            return record_of(stored)

    @activity.defn(name=act.ISSUE_DECISION)
    def issue_decision(self, req: DecisionRequest) -> DecisionRecord:
        return self.issue(req)
