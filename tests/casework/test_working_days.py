"""The legal working-day calendar: dates checked by hand against the 2026 Kazakh calendar.

2026 facts used below (from the `holidays` package unless marked as a decree override):
Nauryz Sat 21 - Mon 23 Mar, observed Tue 24 and Wed 25 Mar; Victory Day Sat 9 May,
observed Mon 11 May; Constitution Day Sun 30 Aug and its transfer to Mon 31 Aug (decree
overrides, absent from the package); Republic Day Sun 25 Oct, observed Mon 26 Oct.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import holidays
import pytest
from sqlalchemy.engine import Engine

from casework.calendar import (
    DEMO_DECREES_2026,
    KZ_TZ,
    WorkingCalendar,
    compute_deadline,
    load_calendar,
    remaining_working_days,
)
from casework.contracts import DeadlineRequest, DurationUnit, SkippedDay, Term
from casework.db import CalendarDayRow, session


def kz(y: int, m: int, d: int, hh: int = 10, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=KZ_TZ)


def end_of(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, 23, 59, 59, tzinfo=KZ_TZ)


def wd(n: int) -> Term:
    return Term(amount=n, unit=DurationUnit.working_days)


def cd(n: int) -> Term:
    return Term(amount=n, unit=DurationUnit.calendar_days)


def demo_calendar() -> WorkingCalendar:
    return WorkingCalendar({d: (kind, reason) for d, kind, reason in DEMO_DECREES_2026})


@pytest.fixture
def cal() -> WorkingCalendar:
    return WorkingCalendar()


# --------------------------------------------------------------------------- working days


def test_seven_working_days_skip_nauryz(cal: WorkingCalendar) -> None:
    result = compute_deadline(DeadlineRequest(start=kz(2026, 3, 20), term=wd(7)), cal)

    assert result.deadline == end_of(2026, 4, 3)
    assert result.deadline.utcoffset() == timedelta(hours=5)
    assert result.counted_days == [
        date(2026, 3, 26),
        date(2026, 3, 27),
        date(2026, 3, 30),
        date(2026, 3, 31),
        date(2026, 4, 1),
        date(2026, 4, 2),
        date(2026, 4, 3),
    ]
    assert result.skipped_days == [
        SkippedDay(day=date(2026, 3, 21), reason="Saturday; Nowruz Holiday"),
        SkippedDay(day=date(2026, 3, 22), reason="Sunday; Nowruz Holiday"),
        SkippedDay(day=date(2026, 3, 23), reason="Nowruz Holiday"),
        SkippedDay(day=date(2026, 3, 24), reason="Nowruz Holiday (observed)"),
        SkippedDay(day=date(2026, 3, 25), reason="Nowruz Holiday (observed)"),
        SkippedDay(day=date(2026, 3, 28), reason="Saturday"),
        SkippedDay(day=date(2026, 3, 29), reason="Sunday"),
    ]
    assert result.start == kz(2026, 3, 20)
    assert result.calendar_version == cal.version
    assert result.warn_at is None


def test_explanation_lists_every_skipped_day_and_the_deadline(cal: WorkingCalendar) -> None:
    result = compute_deadline(DeadlineRequest(start=kz(2026, 3, 20), term=wd(7)), cal)

    text = result.explanation
    assert text.startswith("7 working days from 2026-03-20: skipped 2026-03-21 (")
    for skipped in result.skipped_days:
        assert f"{skipped.day.isoformat()} ({skipped.reason})" in text
    assert text.endswith("deadline end of 2026-04-03 (Asia/Almaty, UTC+5)")


def test_working_days_without_holidays_just_skip_the_weekend(cal: WorkingCalendar) -> None:
    # Thu 2 Apr + 3 WD: Fri 3, Mon 6, Tue 7 Apr.
    result = compute_deadline(DeadlineRequest(start=kz(2026, 4, 2), term=wd(3)), cal)

    assert result.deadline == end_of(2026, 4, 7)
    assert result.counted_days == [date(2026, 4, 3), date(2026, 4, 6), date(2026, 4, 7)]
    assert [s.day for s in result.skipped_days] == [date(2026, 4, 4), date(2026, 4, 5)]


def test_start_on_holiday_counts_from_next_working_day(cal: WorkingCalendar) -> None:
    # Registered on Mon 23 Mar (Nauryz): 24-25 Mar are observed days off, so day 1 is Thu 26.
    result = compute_deadline(DeadlineRequest(start=kz(2026, 3, 23), term=wd(1)), cal)
    assert result.deadline == end_of(2026, 3, 26)
    assert result.counted_days == [date(2026, 3, 26)]
    # The start day is never counted and is not reported as passed over.
    assert [s.day for s in result.skipped_days] == [date(2026, 3, 24), date(2026, 3, 25)]

    # Registered on Sat 9 May (Victory Day): Sun 10 and Mon 11 (observed) are off.
    result = compute_deadline(DeadlineRequest(start=kz(2026, 5, 9), term=wd(1)), cal)
    assert result.deadline == end_of(2026, 5, 12)
    assert result.skipped_days == [
        SkippedDay(day=date(2026, 5, 10), reason="Sunday"),
        SkippedDay(day=date(2026, 5, 11), reason="Victory Day (observed)"),
    ]


def test_start_date_is_taken_in_kazakhstan_time(cal: WorkingCalendar) -> None:
    # 20:00 UTC on Thu 19 Mar is already 01:00 on Fri 20 Mar in Kazakhstan.
    start = datetime(2026, 3, 19, 20, 0, tzinfo=UTC)
    result = compute_deadline(DeadlineRequest(start=start, term=wd(7)), cal)

    assert result.start == start
    assert result.deadline == end_of(2026, 4, 3)
    assert result.explanation.startswith("7 working days from 2026-03-20")


def test_zero_working_days_ends_the_same_working_day(cal: WorkingCalendar) -> None:
    result = compute_deadline(DeadlineRequest(start=kz(2026, 3, 20), term=wd(0)), cal)
    assert result.deadline == end_of(2026, 3, 20)
    assert result.counted_days == []
    assert result.skipped_days == []


def test_zero_working_days_from_a_weekend_ends_on_the_next_working_day(
    cal: WorkingCalendar,
) -> None:
    result = compute_deadline(DeadlineRequest(start=kz(2026, 3, 21), term=wd(0)), cal)
    assert result.deadline == end_of(2026, 3, 26)
    assert [s.day for s in result.skipped_days] == [
        date(2026, 3, 21),
        date(2026, 3, 22),
        date(2026, 3, 23),
        date(2026, 3, 24),
        date(2026, 3, 25),
    ]


def test_term_crossing_new_year_skips_the_observed_holiday(cal: WorkingCalendar) -> None:
    # Wed 30 Dec 2026 + 2 WD: Thu 31 Dec; Fri 1 Jan and Sat 2 Jan are New Year, Mon 4 Jan
    # is its observed day off, so day 2 is Tue 5 Jan 2027.
    result = compute_deadline(DeadlineRequest(start=kz(2026, 12, 30), term=wd(2)), cal)
    assert result.deadline == end_of(2027, 1, 5)
    assert result.counted_days == [date(2026, 12, 31), date(2027, 1, 5)]
    assert [s.day for s in result.skipped_days] == [
        date(2027, 1, 1),
        date(2027, 1, 2),
        date(2027, 1, 3),
        date(2027, 1, 4),
    ]


# --------------------------------------------------------------------------- decrees


def test_decree_day_off_is_skipped_with_its_reason() -> None:
    # Fri 28 Aug + 1 WD: Sat 29, Sun 30 (Constitution Day), Mon 31 (transfer) -> Tue 1 Sep.
    result = compute_deadline(DeadlineRequest(start=kz(2026, 8, 28), term=wd(1)), demo_calendar())

    assert result.deadline == end_of(2026, 9, 1)
    assert result.skipped_days == [
        SkippedDay(day=date(2026, 8, 29), reason="Saturday"),
        SkippedDay(day=date(2026, 8, 30), reason="Sunday; Constitution Day"),
        SkippedDay(
            day=date(2026, 8, 31), reason="Constitution Day (transferred, Government decree)"
        ),
    ]
    assert "2026-08-31 (Constitution Day (transferred, Government decree))" in result.explanation


def test_without_the_decree_the_package_alone_keeps_31_august_working(
    cal: WorkingCalendar,
) -> None:
    result = compute_deadline(DeadlineRequest(start=kz(2026, 8, 28), term=wd(1)), cal)
    assert result.deadline == end_of(2026, 8, 31)


def test_demo_decrees_add_only_what_the_package_lacks() -> None:
    package = holidays.country_holidays("KZ", years=2026)
    # The decree transfers the package already models.
    for day in (date(2026, 3, 9), date(2026, 3, 24), date(2026, 3, 25), date(2026, 5, 11)):
        assert day in package
    assert date(2026, 10, 26) in package
    decree_days = {d for d, _, _ in DEMO_DECREES_2026}
    assert {date(2026, 8, 30), date(2026, 8, 31)} <= decree_days
    assert all(kind == "day_off" for _, kind, _ in DEMO_DECREES_2026)
    assert all(d not in package for d in decree_days)


def test_working_saturday_counts() -> None:
    cal = WorkingCalendar({date(2026, 3, 28): ("working_day", "Working Saturday (decree)")})

    assert cal.is_working_day(date(2026, 3, 28))
    assert cal.why_not_working(date(2026, 3, 28)) is None
    # Fri 27 Mar + 2 WD: Sat 28 (declared working), then Mon 30.
    result = compute_deadline(DeadlineRequest(start=kz(2026, 3, 27), term=wd(2)), cal)
    assert result.counted_days == [date(2026, 3, 28), date(2026, 3, 30)]
    assert result.skipped_days == [SkippedDay(day=date(2026, 3, 29), reason="Sunday")]
    assert result.deadline == end_of(2026, 3, 30)


def test_working_weekend_known_to_the_package_counts(cal: WorkingCalendar) -> None:
    # 2025: Fri 3 Jan was a day off transferred from Sun 5 Jan, which became a working day.
    assert cal.is_working_day(date(2025, 1, 5))
    day, counted, skipped = cal.add_working_days(date(2025, 1, 2), 1)
    assert day == date(2025, 1, 5)
    assert counted == [date(2025, 1, 5)]
    assert [s.day for s in skipped] == [date(2025, 1, 3), date(2025, 1, 4)]


def test_override_beats_the_package(cal: WorkingCalendar) -> None:
    # A decree could make an observed day a working day again, or add a day off.
    ovr = WorkingCalendar(
        {
            date(2026, 3, 25): ("working_day", "Returned to work (decree)"),
            date(2026, 4, 1): ("day_off", "Extra day off (decree)"),
        }
    )
    assert not cal.is_working_day(date(2026, 3, 25))
    assert ovr.is_working_day(date(2026, 3, 25))
    assert cal.is_working_day(date(2026, 4, 1))
    assert ovr.why_not_working(date(2026, 4, 1)) == "Extra day off (decree)"


def test_why_not_working_names_weekends_and_holidays(cal: WorkingCalendar) -> None:
    assert cal.why_not_working(date(2026, 3, 20)) is None
    assert cal.why_not_working(date(2026, 3, 28)) == "Saturday"
    assert cal.why_not_working(date(2026, 3, 29)) == "Sunday"
    assert cal.why_not_working(date(2026, 3, 8)) == "Sunday; International Women's Day"
    assert cal.why_not_working(date(2026, 3, 9)) == "International Women's Day (observed)"
    assert cal.why_not_working(date(2026, 12, 16)) == "Independence Day"


def test_unknown_override_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        WorkingCalendar({date(2026, 3, 28): ("holiday", "typo")})


# --------------------------------------------------------------------------- calendar days


def test_deadline_on_weekend_moves_to_monday_for_calendar_days(cal: WorkingCalendar) -> None:
    # Fri 20 Mar + 15 CD = Sat 4 Apr -> Mon 6 Apr.
    result = compute_deadline(DeadlineRequest(start=kz(2026, 3, 20), term=cd(15)), cal)

    assert result.deadline == end_of(2026, 4, 6)
    assert result.counted_days == []
    assert result.skipped_days == [
        SkippedDay(day=date(2026, 4, 4), reason="Saturday"),
        SkippedDay(day=date(2026, 4, 5), reason="Sunday"),
    ]
    assert "reach 2026-04-04" in result.explanation
    assert result.explanation.endswith("deadline end of 2026-04-06 (Asia/Almaty, UTC+5)")


def test_calendar_days_landing_in_nauryz_move_past_the_whole_break(cal: WorkingCalendar) -> None:
    # Fri 20 Mar + 3 CD = Mon 23 Mar (Nauryz); 24-25 Mar off too -> Thu 26 Mar.
    result = compute_deadline(DeadlineRequest(start=kz(2026, 3, 20), term=cd(3)), cal)
    assert result.deadline == end_of(2026, 3, 26)
    assert [s.day for s in result.skipped_days] == [
        date(2026, 3, 23),
        date(2026, 3, 24),
        date(2026, 3, 25),
    ]


def test_calendar_days_ignore_holidays_in_between(cal: WorkingCalendar) -> None:
    # Fri 20 Mar + 10 CD = Mon 30 Mar, a working day: Nauryz inside the span does not matter.
    result = compute_deadline(DeadlineRequest(start=kz(2026, 3, 20), term=cd(10)), cal)
    assert result.deadline == end_of(2026, 3, 30)
    assert result.skipped_days == []


# --------------------------------------------------------------------------- exact durations


def test_minutes_terms_ignore_the_calendar(cal: WorkingCalendar) -> None:
    # Late on Nauryz Saturday: 90 minutes later is past midnight, still a holiday; no matter.
    start = kz(2026, 3, 21, 23, 0)
    term = Term(amount=90, unit=DurationUnit.minutes)
    result = compute_deadline(DeadlineRequest(start=start, term=term), cal)

    assert result.deadline == kz(2026, 3, 22, 0, 30)
    assert result.skipped_days == []
    assert result.counted_days == []


def test_hours_and_seconds_terms_are_exact(cal: WorkingCalendar) -> None:
    start = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    hours = compute_deadline(
        DeadlineRequest(start=start, term=Term(amount=48, unit=DurationUnit.hours)), cal
    )
    assert hours.deadline == start + timedelta(hours=48)
    assert hours.deadline.utcoffset() == timedelta(hours=5)

    seconds = compute_deadline(
        DeadlineRequest(start=start, term=Term(amount=5, unit=DurationUnit.seconds)), cal
    )
    assert seconds.deadline == start + timedelta(seconds=5)


# --------------------------------------------------------------------------- warning, inputs


def test_warning_point_fraction(cal: WorkingCalendar) -> None:
    start = kz(2026, 3, 20, 10, 0)
    term = Term(amount=100, unit=DurationUnit.minutes)
    result = compute_deadline(DeadlineRequest(start=start, term=term, warn_fraction=0.8), cal)
    assert result.warn_at == kz(2026, 3, 20, 11, 20)

    # For a WD term the point is a share of the elapsed wall-clock span to the deadline.
    result = compute_deadline(DeadlineRequest(start=start, term=wd(7), warn_fraction=0.5), cal)
    assert result.warn_at is not None
    assert result.warn_at == start + (end_of(2026, 4, 3) - start) / 2


def test_naive_datetime_rejected(cal: WorkingCalendar) -> None:
    naive = datetime(2026, 3, 20, 10, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_deadline(DeadlineRequest(start=naive, term=wd(7)), cal)
    with pytest.raises(ValueError, match="timezone-aware"):
        remaining_working_days(cal, naive, end_of(2026, 4, 3))


# --------------------------------------------------------------------------- remaining days


def test_remaining_working_days_until_deadline(cal: WorkingCalendar) -> None:
    deadline = end_of(2026, 4, 3)
    assert remaining_working_days(cal, kz(2026, 3, 20), deadline) == 7
    assert remaining_working_days(cal, kz(2026, 3, 27), deadline) == 5
    assert remaining_working_days(cal, kz(2026, 4, 3, 9, 0), deadline) == 0
    assert remaining_working_days(cal, kz(2026, 4, 6), deadline) == 0


# --------------------------------------------------------------------------- versioning


def test_calendar_version_changes_with_overrides() -> None:
    base = WorkingCalendar()
    one = WorkingCalendar({date(2026, 8, 31): ("day_off", "Transfer")})
    same = WorkingCalendar({date(2026, 8, 31): ("day_off", "Transfer")})
    other_reason = WorkingCalendar({date(2026, 8, 31): ("day_off", "Transfer (amended)")})

    assert base.version.startswith(f"holidays-{holidays.__version__}+ovr-")
    assert one.version == same.version
    assert len({base.version, one.version, other_reason.version}) == 3


def test_calendar_version_ignores_override_order() -> None:
    items = [(d, (kind, reason)) for d, kind, reason in DEMO_DECREES_2026]
    assert WorkingCalendar(dict(items)).version == WorkingCalendar(dict(items[::-1])).version


# --------------------------------------------------------------------------- storage, speed


def test_load_calendar_from_table(sqlite_engine: Engine) -> None:
    now = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    working_saturday = date(2026, 3, 28)
    with session(sqlite_engine) as db:
        for day, kind, reason in DEMO_DECREES_2026:
            db.add(CalendarDayRow(day=day, kind=kind, reason=reason, updated_at=now))
        db.add(
            CalendarDayRow(
                day=working_saturday, kind="working_day", reason="Working Saturday", updated_at=now
            )
        )
        db.commit()

    with session(sqlite_engine) as db:
        cal = load_calendar(db)

    assert cal.why_not_working(date(2026, 8, 31)) == (
        "Constitution Day (transferred, Government decree)"
    )
    assert cal.is_working_day(working_saturday)
    expected = {d: (kind, reason) for d, kind, reason in DEMO_DECREES_2026}
    expected[working_saturday] = ("working_day", "Working Saturday")
    assert cal.version == WorkingCalendar(expected).version


def test_load_calendar_from_empty_table_is_the_package_calendar(sqlite_engine: Engine) -> None:
    with session(sqlite_engine) as db:
        cal = load_calendar(db)
    assert cal.version == WorkingCalendar().version


def test_explanation_uses_singular_for_one_day(cal: WorkingCalendar) -> None:
    result = compute_deadline(DeadlineRequest(start=kz(2026, 4, 2), term=wd(1)), cal)
    assert result.explanation.startswith("1 working day from 2026-04-02: ")
