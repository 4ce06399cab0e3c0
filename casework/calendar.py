"""The legal working-day calendar of Kazakhstan and deadline computation.

The `holidays` package supplies the statutory holidays and the transfers it already knows;
Government decrees published during a year arrive as operator-editable overrides
(`CalendarDayRow`). A computed deadline carries the calendar version and a plain-English
explanation, because a later calendar change must never silently rewrite a past deadline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from functools import lru_cache

import holidays
from holidays.version import __version__ as HOLIDAYS_VERSION
from sqlmodel import Session, select

from casework.contracts import KZ_TZ, Deadline, DeadlineRequest, DurationUnit, SkippedDay
from casework.db import CalendarDayRow

_TZ_LABEL = "Asia/Almaty, UTC+5"

DAY_OFF = "day_off"
WORKING_DAY = "working_day"
_KINDS = frozenset({DAY_OFF, WORKING_DAY})

_END_OF_DAY = time(23, 59, 59)
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# 2026 Government decree transfers that `holidays` does not model. The package already has
# 9 Mar, 24-25 Mar, 11 May and 26 Oct as observed days; it has no Constitution Day in 2026
# at all, so both the holiday (a Sunday) and its transfer to Monday 31 Aug are listed.
DEMO_DECREES_2026: list[tuple[date, str, str]] = [
    (date(2026, 8, 30), DAY_OFF, "Constitution Day"),
    (date(2026, 8, 31), DAY_OFF, "Constitution Day (transferred, Government decree)"),
]


@lru_cache(maxsize=64)
def _package_year(year: int) -> tuple[dict[date, str], frozenset[date]]:
    """Holidays and weekend working days the package knows for one year.

    Copied into plain containers: a `HolidayBase` lookup may lazily populate further years,
    which is slow and would make a hot loop depend on the package's expansion rules.
    """
    hols = holidays.country_holidays("KZ", years=year, language="en_US")
    days_off = {d: name for d, name in hols.items() if d.year == year}
    # The package's weekend-workday set leaks dates of other years; keep this year only.
    workdays = frozenset(d for d in getattr(hols, "weekend_workdays", ()) if d.year == year)
    return days_off, workdays


def _overrides_hash(overrides: Mapping[date, tuple[str, str]]) -> str:
    canonical = json.dumps(
        [[d.isoformat(), kind, reason] for d, (kind, reason) in sorted(overrides.items())],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]


class WorkingCalendar:
    """Working days per Kazakh law: Mon-Fri minus holidays, with decree overrides on top."""

    def __init__(self, overrides: Mapping[date, tuple[str, str]] | None = None) -> None:
        self._overrides: dict[date, tuple[str, str]] = {}
        for day, (kind, reason) in (overrides or {}).items():
            if kind not in _KINDS:
                raise ValueError(f"calendar override for {day}: unknown kind {kind!r}")
            self._overrides[day] = (kind, reason)
        self.version: str = f"holidays-{HOLIDAYS_VERSION}+ovr-{_overrides_hash(self._overrides)}"

    @property
    def overrides(self) -> dict[date, tuple[str, str]]:
        return dict(self._overrides)

    def why_not_working(self, d: date) -> str | None:
        """Why `d` is not a working day (weekday name and/or holiday), or None if it is one."""
        override = self._overrides.get(d)
        if override is not None and override[0] == WORKING_DAY:
            return None
        days_off, weekend_workdays = _package_year(d.year)
        if override is None and d in weekend_workdays:
            return None
        parts: list[str] = []
        if d.weekday() >= 5:
            parts.append(_WEEKDAY_NAMES[d.weekday()])
        # The decree text is the legal ground, so it replaces the package's name.
        holiday = override[1] if override is not None else days_off.get(d)
        if holiday:
            parts.append(holiday)
        elif override is not None and not parts:
            parts.append("Day off (Government decree)")
        return "; ".join(parts) or None

    def is_working_day(self, d: date) -> bool:
        return self.why_not_working(d) is None

    def add_working_days(self, d: date, n: int) -> tuple[date, list[date], list[SkippedDay]]:
        """The n-th working day after `d` (`d` never counts), the days counted, the days skipped."""
        if n < 0:
            raise ValueError("n must be >= 0")
        counted: list[date] = []
        skipped: list[SkippedDay] = []
        day = d
        while len(counted) < n:
            day += timedelta(days=1)
            reason = self.why_not_working(day)
            if reason is None:
                counted.append(day)
            else:
                skipped.append(SkippedDay(day=day, reason=reason))
        return day, counted, skipped

    def next_working_day_on_or_after(self, d: date) -> tuple[date, list[SkippedDay]]:
        """`d` itself if it is a working day, else the next one; with the days passed over."""
        reason = self.why_not_working(d)
        if reason is None:
            return d, []
        day, _, skipped = self.add_working_days(d, 1)
        return day, [SkippedDay(day=d, reason=reason), *skipped]


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")


def _end_of_day(d: date) -> datetime:
    return datetime.combine(d, _END_OF_DAY, tzinfo=KZ_TZ)


def _term_label(amount: int, unit: DurationUnit) -> str:
    # Term.label() always says "days"; an explanation read by people should say "1 working day".
    words = unit.value.replace("_", " ")
    return f"{amount} {words[:-1] if amount == 1 else words}"


def _skipped_text(skipped: list[SkippedDay]) -> str:
    return ", ".join(f"{s.day.isoformat()} ({s.reason})" for s in skipped)


def compute_deadline(req: DeadlineRequest, cal: WorkingCalendar) -> Deadline:
    """The legal deadline for a term started at `req.start`, with how it was reached."""
    start = req.start
    _require_aware(start, "start")
    term = req.term
    n = term.amount
    local_start = start.astimezone(KZ_TZ).date()
    label = _term_label(n, term.unit)
    counted: list[date] = []
    skipped: list[SkippedDay] = []

    if term.unit is DurationUnit.working_days:
        if n == 0:
            day, skipped = cal.next_working_day_on_or_after(local_start)
        else:
            day, counted, skipped = cal.add_working_days(local_start, n)
        deadline = _end_of_day(day)
        how = f"skipped {_skipped_text(skipped)}" if skipped else "no non-working days skipped"
        explanation = (
            f"{label} from {local_start.isoformat()}: {how}; "
            f"deadline end of {day.isoformat()} ({_TZ_LABEL})"
        )
    elif term.unit is DurationUnit.calendar_days:
        target = local_start + timedelta(days=n)
        day, skipped = cal.next_working_day_on_or_after(target)
        deadline = _end_of_day(day)
        if skipped:
            how = (
                f"reach {target.isoformat()}, not a working day, so the deadline moves to "
                f"the next working day: skipped {_skipped_text(skipped)}"
            )
        else:
            how = f"reach {target.isoformat()}, a working day"
        explanation = (
            f"{label} from {local_start.isoformat()} {how}; "
            f"deadline end of {day.isoformat()} ({_TZ_LABEL})"
        )
    else:
        # Exact durations exist for SLA drills and tests; the legal calendar does not apply.
        seconds_per_unit = {
            DurationUnit.hours: 3600,
            DurationUnit.minutes: 60,
            DurationUnit.seconds: 1,
        }[term.unit]
        deadline = (start + timedelta(seconds=n * seconds_per_unit)).astimezone(KZ_TZ)
        explanation = (
            f"{label} from {start.astimezone(KZ_TZ).isoformat()}: exact duration, "
            f"no calendar applied; deadline {deadline.isoformat()} ({_TZ_LABEL})"
        )

    warn_at: datetime | None = None
    if req.warn_fraction is not None:
        warn_at = (start + (deadline - start) * req.warn_fraction).astimezone(KZ_TZ)

    return Deadline(
        start=start,
        term=term,
        deadline=deadline,
        warn_at=warn_at,
        counted_days=counted,
        skipped_days=skipped,
        calendar_version=cal.version,
        explanation=explanation,
    )


def remaining_working_days(cal: WorkingCalendar, at: datetime, deadline: datetime) -> int:
    """Working days after `at`'s local date up to and including `deadline`'s local date."""
    _require_aware(at, "at")
    _require_aware(deadline, "deadline")
    day = at.astimezone(KZ_TZ).date()
    last = deadline.astimezone(KZ_TZ).date()
    count = 0
    while day < last:
        day += timedelta(days=1)
        if cal.is_working_day(day):
            count += 1
    return count


def load_calendar(session: Session) -> WorkingCalendar:
    """The calendar in force: the package plus the decree rows the operator maintains."""
    rows = session.exec(select(CalendarDayRow)).all()
    return WorkingCalendar({row.day: (row.kind, row.reason) for row in rows})
