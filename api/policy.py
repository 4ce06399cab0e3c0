"""The one authorization policy: role × scope (region, consulate, own party).

Every route, list, search and export asks this module; lists apply the same rule as a
SQL filter so nothing outside the caller's scope is ever read.
"""

from __future__ import annotations

from sqlalchemy import false, true
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select

from api.errors import Problem
from casework.contracts import Actor, Role, WorkPermitApplication
from casework.db import CaseRow, DecisionRow, NotificationRow, TaskRow

STAFF = {Role.caseworker, Role.supervisor, Role.auditor}


def case_filter(actor: Actor) -> ColumnElement[bool]:
    """Which case rows the caller may see."""
    if actor.role == Role.auditor:
        return true()
    if actor.role in (Role.caseworker, Role.supervisor):
        return true() if actor.region is None else (col(CaseRow.region) == actor.region.value)
    if actor.role == Role.employer:
        return (col(CaseRow.procedure) == "work_permit") & (
            col(CaseRow.applicant_party) == actor.party
        )
    if actor.role == Role.consulate_officer:
        return col(CaseRow.consulate) == actor.consulate
    return false()


def can_see_case(actor: Actor, row: CaseRow) -> bool:
    if actor.role == Role.auditor:
        return True
    if actor.role in (Role.caseworker, Role.supervisor):
        return actor.region is None or row.region == actor.region.value
    if actor.role == Role.employer:
        return row.procedure == "work_permit" and row.applicant_party == actor.party
    if actor.role == Role.consulate_officer:
        return row.consulate is not None and row.consulate == actor.consulate
    return False


def require_case(actor: Actor, row: CaseRow | None, case_id: str) -> CaseRow:
    # Outside the scope is "not found": the caller learns nothing about other cases.
    if row is None or not can_see_case(actor, row):
        raise Problem(404, "Not found", f"no case {case_id}", kind="not-found")
    return row


def task_filter(actor: Actor) -> ColumnElement[bool]:
    """The inbox: tasks for the caller's role in the caller's scope."""
    if actor.role == Role.caseworker:
        region = actor.region.value if actor.region else None
        return (col(TaskRow.role) == Role.caseworker.value) & (col(TaskRow.region) == region)
    if actor.role == Role.supervisor:
        return true() if actor.region is None else (col(TaskRow.region) == actor.region.value)
    if actor.role == Role.auditor:
        return true()
    if actor.role == Role.consulate_officer:
        return (col(TaskRow.role) == Role.consulate_officer.value) & (
            TaskRow.consulate == actor.consulate
        )
    return false()


def can_see_task(actor: Actor, row: TaskRow) -> bool:
    if actor.role == Role.caseworker:
        return (
            row.role == Role.caseworker.value
            and actor.region is not None
            and row.region == actor.region.value
        )
    if actor.role == Role.supervisor:
        return actor.region is None or row.region == actor.region.value
    if actor.role == Role.auditor:
        return True
    if actor.role == Role.consulate_officer:
        return row.role == Role.consulate_officer.value and row.consulate == actor.consulate
    return False


def require_task(actor: Actor, row: TaskRow | None, task_id: str) -> TaskRow:
    if row is None or not can_see_task(actor, row):
        raise Problem(404, "Not found", f"no task {task_id}", kind="not-found")
    return row


def require_task_worker(actor: Actor) -> None:
    if actor.role not in (Role.caseworker, Role.supervisor, Role.consulate_officer):
        raise Problem(
            403, "Forbidden", f"role {actor.role.value} cannot work on tasks", kind="forbidden"
        )


def decision_filter(actor: Actor) -> ColumnElement[bool]:
    if actor.role == Role.auditor:
        return true()
    if actor.role in (Role.caseworker, Role.supervisor):
        return true() if actor.region is None else (col(DecisionRow.region) == actor.region.value)
    if actor.role in (Role.employer, Role.consulate_officer):
        visible = select(CaseRow.case_id).where(case_filter(actor))
        return col(DecisionRow.case_id).in_(visible)
    return false()


def notification_filter(actor: Actor) -> ColumnElement[bool]:
    if actor.role == Role.employer:
        return (col(NotificationRow.to_role) == Role.employer.value) & (
            col(NotificationRow.to_party) == actor.party
        )
    if actor.role in (Role.caseworker, Role.supervisor):
        scope = (
            true() if actor.region is None else (col(NotificationRow.region) == actor.region.value)
        )
        return (col(NotificationRow.to_role) == actor.role.value) & scope
    if actor.role == Role.consulate_officer:
        mine = select(CaseRow.case_id).where(case_filter(actor))
        return (col(NotificationRow.to_role) == Role.consulate_officer.value) & col(
            NotificationRow.case_id
        ).in_(mine)
    if actor.role == Role.auditor:
        return true()
    return false()


def require_can_start_kandas(actor: Actor) -> str:
    """Kandas cases start at a foreign mission: the consulate comes from the caller's token."""
    if actor.role != Role.consulate_officer or not actor.consulate:
        raise Problem(
            403,
            "Forbidden",
            "only a consulate officer starts kandas cases (one window)",
            kind="forbidden",
        )
    return actor.consulate


def require_can_start(actor: Actor, procedure: str, app: WorkPermitApplication) -> None:
    """Employers file for themselves; a caseworker files on an employer's behalf in their region."""
    if procedure == "work_permit":
        if actor.role == Role.employer and actor.party == app.employer.bin:
            return
        if actor.role == Role.caseworker and actor.region == app.region:
            return
        if actor.role == Role.employer:
            raise Problem(
                403,
                "Forbidden",
                "an employer may file only for its own BIN",
                kind="forbidden",
                errors=[{"name": "employer.bin", "reason": "not the caller's BIN"}],
            )
        if actor.role == Role.caseworker:
            raise Problem(
                403,
                "Forbidden",
                "a caseworker may file only in their own region",
                kind="forbidden",
                errors=[{"name": "region", "reason": "outside the caller's region"}],
            )
    raise Problem(
        403,
        "Forbidden",
        f"role {actor.role.value} cannot start {procedure} cases",
        kind="forbidden",
    )


def require_staff(actor: Actor) -> None:
    if actor.role not in STAFF:
        raise Problem(403, "Forbidden", "staff only", kind="forbidden")


def require_oversight(actor: Actor) -> None:
    """Supervisors and auditors: views of other people's workload (SLA board, audits)."""
    if actor.role not in (Role.supervisor, Role.auditor):
        raise Problem(403, "Forbidden", "for supervisors and auditors", kind="forbidden")


def require_calendar_operator(actor: Actor) -> None:
    if not (actor.role == Role.supervisor and actor.region is None):
        raise Problem(
            403, "Forbidden", "only a national supervisor edits the calendar", kind="forbidden"
        )


def require_applicant(actor: Actor, row: CaseRow) -> None:
    ok = (
        (actor.role == Role.employer and row.applicant_party == actor.party)
        or (actor.role == Role.consulate_officer and row.consulate == actor.consulate)
        or (
            actor.role == Role.caseworker
            and actor.region is not None
            and row.region == actor.region.value
        )
    )
    if not ok:
        raise Problem(
            403,
            "Forbidden",
            "only the applicant (or a caseworker of the region) may do this",
            kind="forbidden",
        )
