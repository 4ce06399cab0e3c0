"""The legal-deadline calculator (public) and the operator's table of decree changes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlmodel import col, select

from api import policy
from api.auth import CurrentActor
from api.deps import SessionDep
from api.errors import Problem
from casework.calendar import compute_deadline, load_calendar
from casework.contracts import KZ_TZ, Deadline, DeadlineRequest, DurationUnit, Term
from casework.db import CalendarDayRow

router = APIRouter(tags=["calendar"])


@router.get("/calendar/deadline", response_model=Deadline)
def deadline(
    session: SessionDep,
    start: Annotated[
        datetime,
        Query(description="filing time (ISO 8601); a date alone means its start, Astana time"),
    ],
    term: Annotated[int, Query(ge=0, le=3660, description="length of the term")],
    unit: DurationUnit = DurationUnit.working_days,
) -> Deadline:
    """Compute a legal deadline with the explanation of every day skipped (no login needed)."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=KZ_TZ)
    cal = load_calendar(session)
    return compute_deadline(DeadlineRequest(start=start, term=Term(amount=term, unit=unit)), cal)


class CalendarDayIn(BaseModel):
    kind: Literal["day_off", "working_day"]
    reason: str = Field(min_length=3, max_length=300)


@router.get("/calendar/days")
def list_days(session: SessionDep, year: int | None = None) -> list[dict[str, object]]:
    """The decree changes in force on top of the holiday law (public)."""
    stmt = select(CalendarDayRow).order_by(col(CalendarDayRow.day))
    rows = session.exec(stmt).all()
    return [r.model_dump(mode="json") for r in rows if year is None or r.day.year == year]


@router.put("/calendar/days/{day}")
def put_day(
    day: date, body: CalendarDayIn, actor: CurrentActor, session: SessionDep
) -> dict[str, object]:
    """Record a Government decree: an extra day off or a working Saturday. Past deadlines keep their value."""
    policy.require_calendar_operator(actor)
    row = session.get(CalendarDayRow, day) or CalendarDayRow(
        day=day, kind=body.kind, reason=body.reason, updated_at=datetime.now(UTC)
    )
    row.kind, row.reason, row.updated_at = body.kind, body.reason, datetime.now(UTC)
    session.add(row)
    session.commit()
    return row.model_dump(mode="json")


@router.delete("/calendar/days/{day}", status_code=204)
def delete_day(day: date, actor: CurrentActor, session: SessionDep) -> None:
    """Remove a decree change recorded by mistake."""
    policy.require_calendar_operator(actor)
    row = session.get(CalendarDayRow, day)
    if row is None:
        raise Problem(404, "Not found", f"no decree change on {day}", kind="not-found")
    session.delete(row)
    session.commit()
