"""Case activities: rule sets, legal deadlines, read-model projection, quota ledger, notices,
external registries and the payment gateway.

Every activity here is idempotent: the workflow may retry any of them after a crash.
Projection writes carry the workflow's event counter (`rev`) so a stale write never
overwrites a newer one, and timeline entries are unique per (case, seq).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity

from activities import quota as ledger
from activities.registries import PaymentGateway, Registries
from casework.calendar import compute_deadline, load_calendar, remaining_working_days
from casework.contracts import (
    BatchWritten,
    BookkeepingBatch,
    BookkeepingEntry,
    CaseEventIn,
    CaseProjection,
    ClockProjection,
    Deadline,
    DeadlineRequest,
    DurationUnit,
    InvoiceInfo,
    InvoiceRequest,
    LoadRules,
    Notification,
    QuotaRequest,
    QuotaResult,
    RegistryCheckRequest,
    RegistryCheckResult,
    ResumeDeadline,
    SlaState,
    TaskChange,
    TaskStatus,
    Term,
    VacancyCheck,
    VacancyCheckResult,
)
from casework.db import CaseEventRow, CaseRow, ClockRow, NotificationRow, TaskRow
from casework.projection import case_row_values
from casework.readmodel_sql import insert_once, upsert
from casework.rules import load_rules
from casework.timeline import seal_after_write, sealed_together
from casework.writer import GroupCommit
from workflows import activity_names as act

log = logging.getLogger("casework.activities")
T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


def add_event(conn: Connection | Session, ev: CaseEventIn | None) -> None:
    """Append a timeline entry once (a retried activity finds it there), then seal."""
    if ev is None:
        return
    values = {
        "case_id": ev.case_id,
        "seq": ev.seq,
        "kind": ev.kind,
        "at": ev.at,
        "actor": ev.actor,
        "data": ev.data,
    }
    insert_once(conn, CaseEventRow, values, ("case_id", "seq"))
    seal_after_write(conn, ev.case_id)


def case_writer(p: CaseProjection | None) -> Callable[[Connection], None]:
    """Writes the case row (rev-guarded) and its timeline entries; nothing for None. The
    row's values are built here, before the write transaction starts."""
    if p is None:
        return lambda conn: None
    values = case_row_values(p)

    def write(conn: Connection) -> None:
        upsert(conn, CaseRow, values, ("case_id",))
        for ev in p.events:
            add_event(conn, ev)

    return write


_OPEN_TASKS_SLA = (
    update(TaskRow)
    .where(
        TaskRow.case_id == bindparam("cid"),  # type: ignore[arg-type]
        TaskRow.status.in_([TaskStatus.open.value, TaskStatus.claimed.value]),  # type: ignore[attr-defined]
    )
    .values(sla_state=bindparam("state"))
)
_CLOCK_STATE = (
    select(ClockRow.state)
    .where(ClockRow.case_id == bindparam("cid"), ClockRow.state != SlaState.stopped.value)
    .limit(1)
)


def task_writer(change: TaskChange) -> Callable[[Connection], None]:
    """Writes a task row (rev-guarded; a live task takes its case's clock state) and its
    timeline entry."""
    t = change.task
    values: dict[str, Any] = t.model_dump(mode="python")
    for key in ("kind", "role", "status"):
        values[key] = values[key].value
    values["region"] = t.region.value if t.region else None
    values["rev"] = change.rev
    live = t.status in (TaskStatus.open, TaskStatus.claimed)

    def write(conn: Connection) -> None:
        if live:
            state = conn.execute(_CLOCK_STATE, {"cid": t.case_id}).scalar()
            values["sla_state"] = state or SlaState.on_track.value
        else:
            values["sla_state"] = SlaState.stopped.value
        upsert(conn, TaskRow, values, ("task_id",))
        add_event(conn, change.event)

    return write


def clock_writer(c: ClockProjection) -> Callable[[Connection], None]:
    """Writes a clock row, the state of the case's open tasks, the timeline entry and,
    when given, the case row."""
    values: dict[str, Any] = {
        "case_id": c.case_id,
        "name": c.name,
        "step": c.step,
        "state": c.state.value,
        "term": c.term.model_dump(mode="json"),
        "started_at": c.started_at,
        "deadline": c.deadline,
        "warn_at": c.warn_at,
        "explanation": c.explanation,
        "skipped_days": [d.model_dump(mode="json") for d in c.skipped_days],
        "on_breach": c.on_breach.value,
        "updated_at": _now(),
        "rev": c.rev,
    }
    write_case = case_writer(c.case)

    def write(conn: Connection) -> None:
        upsert(conn, ClockRow, values, ("case_id", "name"))
        if c.state != SlaState.stopped:
            conn.execute(_OPEN_TASKS_SLA, {"cid": c.case_id, "state": c.state.value})
        add_event(conn, c.event)
        write_case(conn)

    return write


def notice_writer(n: Notification) -> Callable[[Connection], None]:
    """Keeps a notice in the outbox table once and, when given, writes the case row."""
    values = {
        "case_id": n.case_id,
        "seq": n.seq,
        "to_role": n.to_role.value,
        "to_party": n.to_party,
        "region": n.region.value if n.region else None,
        "kind": n.kind,
        "text_ru": n.text_ru,
        "text_kk": n.text_kk,
        "data": n.data,
        "created_at": _now(),
    }
    write_case = case_writer(n.case)

    def write(conn: Connection) -> None:
        insert_once(conn, NotificationRow, values, ("case_id", "seq"))
        write_case(conn)

    return write


def _log_notice(n: Notification) -> None:
    log.info("notice %s to %s on case %s", n.kind, n.to_role.value, n.case_id)


def entry_writer(e: BookkeepingEntry) -> Callable[[Connection], None]:
    if e.task is not None:
        return task_writer(e.task)
    if e.clock is not None:
        return clock_writer(e.clock)
    if e.notice is not None:
        return notice_writer(e.notice)
    return case_writer(e.case)


class CaseActivities:
    def __init__(
        self,
        engine: Engine,
        registries: Registries,
        gateway: PaymentGateway,
        ruleset_override_dir: Path | None = None,
        webhook_endpoints: int = 0,
    ) -> None:
        self.engine = engine
        self.webhook_endpoints = webhook_endpoints
        self.registries = registries
        self.gateway = gateway
        self.override_dir = ruleset_override_dir
        self.group = GroupCommit(engine)

    async def _db(self, fn: Callable[[], T]) -> T:
        # The database driver is blocking: keep it off the event loop shared with workflows.
        return await asyncio.to_thread(fn)

    async def _write(self, fn: Callable[[Connection], None]) -> None:
        """One write, committed together with the others waiting at that moment (tried
        again if two writers raced on an insert)."""
        for attempt in range(5):
            try:
                await self.group.write(fn)
                return
            except IntegrityError:
                if attempt == 4:
                    raise

    # ------------------------------------------------------------------ rules and calendar

    @activity.defn(name=act.LOAD_RULES)
    async def load_rules(self, req: LoadRules) -> Any:
        return load_rules(req.procedure, req.on, req.version, self.override_dir)

    def _calendar_deadline(self, req: DeadlineRequest) -> Deadline:
        with Session(self.engine) as s:
            cal = load_calendar(s)
        return compute_deadline(req, cal)

    @activity.defn(name=act.COMPUTE_DEADLINE)
    async def compute_deadline(self, req: DeadlineRequest) -> Deadline:
        return await self._db(lambda: self._calendar_deadline(req))

    @activity.defn(name=act.RESUME_DEADLINE)
    async def resume_deadline(self, req: ResumeDeadline) -> Deadline:
        """After a suspension the remaining part of the term runs again from the resume time."""

        def run() -> Deadline:
            with Session(self.engine) as s:
                cal = load_calendar(s)
            if req.term.unit == DurationUnit.working_days:
                left = remaining_working_days(cal, req.suspended_at, req.deadline)
                term = Term(amount=left, unit=DurationUnit.working_days)
                d = compute_deadline(
                    DeadlineRequest(
                        start=req.resumed_at, term=term, warn_fraction=req.warn_fraction
                    ),
                    cal,
                )
            else:
                left_s = max(0, int((req.deadline - req.suspended_at).total_seconds()))
                term = Term(amount=left_s, unit=DurationUnit.seconds)
                d = compute_deadline(
                    DeadlineRequest(
                        start=req.resumed_at, term=term, warn_fraction=req.warn_fraction
                    ),
                    cal,
                )
            note = (
                f"Suspended {req.suspended_at.isoformat()} - resumed {req.resumed_at.isoformat()}; "
                f"remaining {term.label()} counted again: {d.explanation}"
            )
            return d.model_copy(update={"term": req.term, "explanation": note})

        return await self._db(run)

    # ------------------------------------------------------------------ projection

    @activity.defn(name=act.PROJECT_CASE)
    async def project_case(self, p: CaseProjection) -> None:
        await self._write(case_writer(p))

    @activity.defn(name=act.PROJECT_TASK)
    async def project_task(self, change: TaskChange) -> None:
        await self._write(task_writer(change))

    @activity.defn(name=act.PROJECT_CLOCK)
    async def project_clock(self, c: ClockProjection) -> None:
        await self._write(clock_writer(c))

    @activity.defn(name=act.NOTIFY)
    async def notify(self, n: Notification) -> None:
        """Deliver a notice: kept in the outbox table (read by the party through the API)."""
        await self._write(notice_writer(n))
        _log_notice(n)

    @activity.defn(name=act.PROJECT_BATCH)
    async def project_batch(self, batch: BookkeepingBatch) -> BatchWritten:
        """The writes of one workflow step, in their order, in one transaction."""
        writers = [entry_writer(e) for e in batch.entries]

        def write(conn: Connection) -> None:
            with sealed_together(conn):
                for w in writers:
                    w(conn)

        await self._write(write)
        for e in batch.entries:
            if e.notice is not None:
                _log_notice(e.notice)
        return BatchWritten(webhook_endpoints=self.webhook_endpoints)

    # ------------------------------------------------------------------ quota ledger

    @activity.defn(name=act.QUOTA_RESERVE)
    async def quota_reserve(self, req: QuotaRequest) -> QuotaResult:
        return await self._db(lambda: ledger.reserve(self.engine, req))

    @activity.defn(name=act.QUOTA_COMMIT)
    async def quota_commit(self, req: QuotaRequest) -> QuotaResult:
        return await self._db(lambda: ledger.commit(self.engine, req))

    @activity.defn(name=act.QUOTA_RELEASE)
    async def quota_release(self, req: QuotaRequest) -> QuotaResult:
        return await self._db(lambda: ledger.release(self.engine, req))

    # ------------------------------------------------------------------ external registries

    @activity.defn(name=act.CHECK_VACANCY)
    async def check_vacancy(self, req: VacancyCheck) -> VacancyCheckResult:
        info = await self.registries.labour_exchange.get_vacancy(
            req.vacancy_code, req.employer_bin, req.filed_on
        )
        if not info.found or info.posted_on is None:
            return VacancyCheckResult(
                ok=False, code="not_found", detail=f"vacancy {req.vacancy_code} not found"
            )
        if info.status == "closed":
            return VacancyCheckResult(
                ok=False, code="closed", detail="vacancy is closed", posted_on=info.posted_on
            )
        earliest = info.posted_on + timedelta(days=req.min_posting_days)
        if req.filed_on < earliest:
            return VacancyCheckResult(
                ok=False,
                code="posted_too_recently",
                detail=f"posted {info.posted_on}; filing allowed from {earliest} ({req.min_posting_days} CD)",
                posted_on=info.posted_on,
            )
        return VacancyCheckResult(
            ok=True, code="posted", detail=f"posted {info.posted_on}", posted_on=info.posted_on
        )

    @activity.defn(name=act.RUN_REGISTRY_CHECKS)
    async def run_registry_checks(self, req: RegistryCheckRequest) -> RegistryCheckResult:
        r = self.registries
        results = await asyncio.gather(
            r.admin_offences.check_employer(req.employer_bin),
            r.migration_police.check_worker(req.passport_number, req.citizenship),
            r.labour_safety.check_employer(req.employer_bin),
            r.esutd.check_contracts(req.employer_bin, req.passport_number),
        )
        return RegistryCheckResult(findings=[f.model_dump(mode="json") for f in results])

    @activity.defn(name=act.CREATE_INVOICE)
    async def create_invoice(self, req: InvoiceRequest) -> InvoiceInfo:
        inv = await self.gateway.create_invoice(req.case_id, req.amount_kzt, req.due)
        return InvoiceInfo.model_validate(inv.model_dump())

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.load_rules,
            self.compute_deadline,
            self.resume_deadline,
            self.project_case,
            self.project_task,
            self.project_clock,
            self.notify,
            self.project_batch,
            self.quota_reserve,
            self.quota_commit,
            self.quota_release,
            self.check_vacancy,
            self.run_registry_checks,
            self.create_invoice,
        ]
