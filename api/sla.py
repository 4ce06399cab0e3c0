"""The supervisors' SLA board: read-model queries behind `/api/v1/sla/*`.

Every query is cut to the caller's scope with `policy.case_filter` / `policy.task_filter`,
so a regional supervisor never reads another region's rows. Aggregates that do not port
between SQLite and PostgreSQL (percentiles, calendar-day buckets) are computed in Python.
Datetime columns hold aware UTC; every timestamp returned is ISO 8601 in UTC.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, func, select

from api import policy
from casework.contracts import CLOSED_STATUSES, KZ_TZ, Actor, SlaState, TaskStatus
from casework.db import CaseEventRow, CaseRow, ClockRow, TaskRow

BOARD_STATES = (
    SlaState.on_track.value,
    SlaState.at_risk.value,
    SlaState.breached.value,
    SlaState.suspended.value,
)
OPEN_TASK = (TaskStatus.open.value, TaskStatus.claimed.value)
CLOSED_CASE = tuple(s.value for s in CLOSED_STATUSES)
STREAM_KINDS = (
    "clock_at_risk",
    "clock_breached",
    "clock_suspended",
    "clock_resumed",
    "clock_extended",
    "task_escalated",
)
# Mirrors the workflow's choice of the clock that drives a case's SLA state.
SEVERITY = {"breached": 4, "at_risk": 3, "on_track": 2, "suspended": 1, "stopped": 0}


require_board = policy.require_oversight


# --------------------------------------------------------------------------- time helpers


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def db_time(value: datetime) -> datetime:
    """A bound parameter for a datetime column: the column type accepts aware values only."""
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    v = utc(value)
    return v.isoformat() if v else None


def hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 2)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), on any database."""
    if not values:
        return None
    data = sorted(values)
    rank = q * (len(data) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(data) - 1)
    return round(data[lo] + (data[hi] - data[lo]) * (rank - lo), 2)


def period_start(now: datetime, period_days: int) -> datetime:
    """Midnight Astana time `period_days - 1` days ago: a period is whole local days plus today."""
    first = now.astimezone(KZ_TZ).date() - timedelta(days=period_days - 1)
    return datetime.combine(first, datetime.min.time(), tzinfo=KZ_TZ).astimezone(UTC)


def scope_view(actor: Actor) -> dict[str, Any]:
    region = actor.region.value if actor.region else None
    return {"role": actor.role.value, "region": region, "national": region is None}


# --------------------------------------------------------------------------- scoped selects


def _task_region() -> Any:
    # Consular tasks carry no region of their own; they count in their case's region.
    return func.coalesce(TaskRow.region, CaseRow.region)


def _scoped_tasks(actor: Actor, *columns: Any) -> Any:
    return (
        select(*columns)
        .join(CaseRow, col(CaseRow.case_id) == col(TaskRow.case_id))
        .where(policy.task_filter(actor), policy.case_filter(actor))
    )


def _filters(
    procedure: str | None, region: str | None, proc_col: Any, region_col: Any
) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if procedure:
        out.append(proc_col == procedure)
    if region:
        out.append(region_col == region)
    return out


def _empty_counts() -> dict[str, int]:
    return {s: 0 for s in (*BOARD_STATES, "total")}


# --------------------------------------------------------------------------- overview


def overview(
    session: Session,
    actor: Actor,
    *,
    now: datetime,
    period_days: int,
    procedure: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    since = period_start(now, period_days)
    region_expr = _task_region()
    task_where = _filters(procedure, region, col(TaskRow.procedure), region_expr)

    open_rows = session.exec(
        _scoped_tasks(
            actor,
            TaskRow.task_id,
            TaskRow.case_id,
            TaskRow.procedure,
            TaskRow.kind,
            region_expr,
            TaskRow.sla_state,
            TaskRow.opened_at,
        ).where(col(TaskRow.status).in_(OPEN_TASK), *task_where)
    ).all()
    done_rows = session.exec(
        _scoped_tasks(
            actor,
            TaskRow.procedure,
            TaskRow.kind,
            region_expr,
            TaskRow.opened_at,
            TaskRow.completed_at,
        ).where(
            TaskRow.status == TaskStatus.done.value,
            col(TaskRow.completed_at) >= db_time(since),
            col(TaskRow.completed_at) <= db_time(now),
            *task_where,
        )
    ).all()

    groups: dict[tuple[str, str | None, str], dict[str, Any]] = {}

    def group(key: tuple[str, str | None, str]) -> dict[str, Any]:
        if key not in groups:
            groups[key] = {"open": _empty_counts(), "oldest": None, "durations": []}
        return groups[key]

    for task_id, case_id, proc, kind, reg, state, opened_at in open_rows:
        g = group((proc, reg, kind))
        if state in g["open"]:
            g["open"][state] += 1
        g["open"]["total"] += 1
        opened = utc(opened_at)
        assert opened is not None
        if g["oldest"] is None or opened < g["oldest"][1]:
            g["oldest"] = (task_id, opened, case_id, state)
    for proc, kind, reg, opened_at, completed_at in done_rows:
        span = utc(completed_at) - utc(opened_at)  # type: ignore[operator]
        group((proc, reg, kind))["durations"].append(span.total_seconds() / 3600)

    out_groups = []
    for (proc, reg, step), g in sorted(groups.items(), key=lambda kv: _sort_key(kv[0])):
        oldest = None
        if g["oldest"] is not None:
            task_id, opened, case_id, state = g["oldest"]
            oldest = {
                "task_id": task_id,
                "case_id": case_id,
                "sla_state": state,
                "opened_at": iso(opened),
                "age_hours": hours(now - opened),
            }
        durations: list[float] = g["durations"]
        out_groups.append(
            {
                "procedure": proc,
                "region": reg,
                "step": step,
                "open": g["open"],
                "oldest": oldest,
                "time_in_step_hours": {
                    "median": percentile(durations, 0.5),
                    "p90": percentile(durations, 0.9),
                    "count": len(durations),
                },
            }
        )

    return {
        "scope": scope_view(actor),
        "period_days": period_days,
        "period": {"from": iso(since), "to": iso(now)},
        "groups": out_groups,
        **_case_counts(session, actor, procedure, region),
        "breaches_per_day": _breaches_per_day(session, actor, since, now, procedure, region),
    }


def _sort_key(key: tuple[str, str | None, str]) -> tuple[str, str, str]:
    return key[0], key[1] or "", key[2]


def _case_counts(
    session: Session, actor: Actor, procedure: str | None, region: str | None
) -> dict[str, Any]:
    rows = session.exec(
        select(CaseRow.procedure, CaseRow.region, CaseRow.sla_state, func.count())
        .where(
            policy.case_filter(actor),
            col(CaseRow.status).not_in(CLOSED_CASE),
            *_filters(procedure, region, col(CaseRow.procedure), col(CaseRow.region)),
        )
        .group_by(CaseRow.procedure, CaseRow.region, CaseRow.sla_state)
    ).all()
    total = _empty_counts()
    by_group: dict[tuple[str, str], dict[str, int]] = defaultdict(_empty_counts)
    for proc, reg, state, n in rows:
        for counts in (total, by_group[(proc, reg)]):
            if state in counts:
                counts[state] += n
            counts["total"] += n
    return {
        "cases": total,
        "case_groups": [
            {"procedure": proc, "region": reg, "open": counts}
            for (proc, reg), counts in sorted(by_group.items())
        ],
    }


def _breaches_per_day(
    session: Session,
    actor: Actor,
    since: datetime,
    now: datetime,
    procedure: str | None,
    region: str | None,
) -> list[dict[str, Any]]:
    ats = session.exec(
        select(CaseEventRow.at)
        .join(CaseRow, col(CaseRow.case_id) == col(CaseEventRow.case_id))
        .where(
            policy.case_filter(actor),
            CaseEventRow.kind == "clock_breached",
            col(CaseEventRow.at) >= db_time(since),
            col(CaseEventRow.at) <= db_time(now),
            *_filters(procedure, region, col(CaseRow.procedure), col(CaseRow.region)),
        )
    ).all()
    # Days are Astana days: a legal deadline ends at 23:59:59 local time.
    per_day = Counter(utc(at).astimezone(KZ_TZ).date() for at in ats)  # type: ignore[union-attr]
    day = since.astimezone(KZ_TZ).date()
    last = now.astimezone(KZ_TZ).date()
    out = []
    while day <= last:
        out.append({"day": day.isoformat(), "count": per_day.get(day, 0)})
        day += timedelta(days=1)
    return out


# --------------------------------------------------------------------------- lists


def _clock_view(c: ClockRow) -> dict[str, Any]:
    return {
        "name": c.name,
        "step": c.step,
        "state": c.state,
        "deadline": iso(c.deadline),
        "warn_at": iso(c.warn_at),
        "explanation": c.explanation,
        "skipped_days": c.skipped_days,
    }


def _live_clocks(session: Session, case_ids: Iterable[str]) -> dict[str, list[ClockRow]]:
    ids = sorted(set(case_ids))
    out: dict[str, list[ClockRow]] = defaultdict(list)
    if not ids:
        return out
    rows = session.exec(
        select(ClockRow).where(
            col(ClockRow.case_id).in_(ids), ClockRow.state != SlaState.stopped.value
        )
    ).all()
    for c in rows:
        out[c.case_id].append(c)
    return out


def _driving_clock(clocks: list[ClockRow], deadline: datetime | None) -> ClockRow | None:
    """The clock behind a deadline: the one that ends then, else the most severe live one."""
    if not clocks:
        return None
    due = utc(deadline)
    for c in clocks:
        if due is not None and utc(c.deadline) == due:
            return c
    far = datetime.max.replace(tzinfo=UTC)
    return max(
        clocks,
        key=lambda c: (SEVERITY.get(c.state, 0), -(utc(c.deadline) or far).timestamp()),
    )


def _urgency(deadline: datetime | None, now: datetime) -> dict[str, Any]:
    due = utc(deadline)
    if due is None:
        return {"overdue_hours": 0.0, "hours_left": None}
    late = hours(now - due)
    return {"overdue_hours": max(late, 0.0), "hours_left": max(-late, 0.0)}


def _explained(clock: ClockRow | None) -> dict[str, Any]:
    return {
        "clock": clock.name if clock else None,
        "step": clock.step if clock else None,
        "clock_deadline": iso(clock.deadline) if clock else None,
        "explanation": clock.explanation if clock else None,
        "skipped_days": clock.skipped_days if clock else [],
    }


def _states(state: str | None) -> list[str]:
    return [state] if state else [SlaState.at_risk.value, SlaState.breached.value]


def sla_cases(
    session: Session,
    actor: Actor,
    *,
    now: datetime,
    state: str | None,
    limit: int,
    offset: int,
    procedure: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    stmt = select(CaseRow).where(
        policy.case_filter(actor),
        col(CaseRow.status).not_in(CLOSED_CASE),
        col(CaseRow.sla_state).in_(_states(state)),
        *_filters(procedure, region, col(CaseRow.procedure), col(CaseRow.region)),
    )
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    # Earliest deadline first is the most overdue first; cases without one go last.
    rows = session.exec(
        stmt.order_by(col(CaseRow.deadline).is_(None), col(CaseRow.deadline), col(CaseRow.case_id))
        .offset(offset)
        .limit(limit)
    ).all()
    clocks = _live_clocks(session, (r.case_id for r in rows))
    items = []
    for r in rows:
        live = clocks.get(r.case_id, [])
        items.append(
            {
                "case_id": r.case_id,
                "procedure": r.procedure,
                "region": r.region,
                "status": r.status,
                "sla_state": r.sla_state,
                "applicant_name": r.applicant_name,
                "deadline": iso(r.deadline),
                **_urgency(r.deadline, now),
                **_explained(_driving_clock(live, r.deadline)),
                "clocks": [_clock_view(c) for c in live],
            }
        )
    return {"total": total, "limit": limit, "offset": offset, "items": items}


def sla_tasks(
    session: Session,
    actor: Actor,
    *,
    now: datetime,
    state: str | None,
    limit: int,
    offset: int,
    window_days: int,
    procedure: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    region_expr = _task_region()
    stmt = _scoped_tasks(actor, TaskRow, CaseRow.region).where(
        col(TaskRow.status).in_(OPEN_TASK),
        col(TaskRow.sla_state).in_(_states(state)),
        *_filters(procedure, region, col(TaskRow.procedure), region_expr),
    )
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(
        stmt.order_by(
            col(TaskRow.due_at).is_(None),
            col(TaskRow.due_at),
            col(TaskRow.opened_at),
            col(TaskRow.task_id),
        )
        .offset(offset)
        .limit(limit)
    ).all()
    clocks = _live_clocks(session, (t.case_id for t, _ in rows))
    forecasts = (
        {f["task_id"]: f for f in forecast(session, actor, now=now, window_days=window_days)}
        if rows
        else {}
    )
    items = []
    for t, case_region in rows:
        live = clocks.get(t.case_id, [])
        fc = forecasts.get(t.task_id)
        items.append(
            {
                "task_id": t.task_id,
                "case_id": t.case_id,
                "procedure": t.procedure,
                "region": t.region or case_region,
                "kind": t.kind,
                "title": t.title,
                "status": t.status,
                "assignee": t.assignee,
                "priority": t.priority,
                "sla_state": t.sla_state,
                "opened_at": iso(t.opened_at),
                "due_at": iso(t.due_at),
                **_urgency(t.due_at, now),
                **_explained(_driving_clock(live, t.due_at)),
                "clocks": [_clock_view(c) for c in live],
                "forecast": _forecast_brief(fc) if fc else None,
            }
        )
    return {"total": total, "limit": limit, "offset": offset, "items": items}


# --------------------------------------------------------------------------- forecast

QueueKey = tuple[str, str, str | None, str | None]  # procedure, kind, region, consulate


def _throughput(
    session: Session, now: datetime, window_days: int
) -> tuple[dict[QueueKey, int], dict[tuple[str, str], int]]:
    # Read across regions on purpose: the national fallback rate is an aggregate of every
    # region's completions, and no row of another region leaves this function.
    rows = session.exec(
        select(  # type: ignore[call-overload]
            TaskRow.procedure, TaskRow.kind, TaskRow.region, TaskRow.consulate, func.count()
        )
        .where(
            TaskRow.status == TaskStatus.done.value,
            col(TaskRow.completed_at) >= db_time(now - timedelta(days=window_days)),
            col(TaskRow.completed_at) <= db_time(now),
        )
        .group_by(TaskRow.procedure, TaskRow.kind, TaskRow.region, TaskRow.consulate)
    ).all()
    regional: dict[QueueKey, int] = {}
    national: dict[tuple[str, str], int] = defaultdict(int)
    for proc, kind, reg, consulate, n in rows:
        regional[(proc, kind, reg, consulate)] = n
        national[(proc, kind)] += n
    return regional, national


def _rate(x: float) -> str:
    return f"{x:.3g}"


def forecast(
    session: Session,
    actor: Actor,
    *,
    now: datetime,
    window_days: int,
    procedure: str | None = None,
    region: str | None = None,
) -> list[dict[str, Any]]:
    """Every open task in scope with its queue position and whether it will likely breach."""
    region_expr = _task_region()
    rows = session.exec(
        _scoped_tasks(
            actor,
            TaskRow.task_id,
            TaskRow.case_id,
            TaskRow.procedure,
            TaskRow.kind,
            TaskRow.region,
            CaseRow.region,
            TaskRow.consulate,
            TaskRow.status,
            TaskRow.sla_state,
            TaskRow.due_at,
            TaskRow.opened_at,
        ).where(
            col(TaskRow.status).in_(OPEN_TASK),
            *_filters(procedure, region, col(TaskRow.procedure), region_expr),
        )
    ).all()
    far = datetime.max.replace(tzinfo=UTC)
    queues: dict[QueueKey, list[Any]] = defaultdict(list)
    for row in rows:
        queues[(row[2], row[3], row[4], row[6])].append(row)
    regional, national = _throughput(session, now, window_days)
    window_h = window_days * 24.0

    ranked: list[tuple[Any, dict[str, Any]]] = []
    for key, queue in queues.items():
        # A queue is worked in due order; equal or missing due times in arrival order.
        queue.sort(key=lambda r: (utc(r[9]) or far, utc(r[10]), r[0]))
        done_here = regional.get(key, 0)
        done_nationally = national.get((key[0], key[1]), 0)
        if done_here:
            rate, rate_scope = done_here / window_h, "region"
        elif done_nationally:
            rate, rate_scope = done_nationally / window_h, "national"
        else:
            rate, rate_scope = None, None
        for position, r in enumerate(queue, start=1):
            task_id, case_id, proc, kind, reg, case_reg, consulate, status, state, due, opened = r
            due_at = utc(due)
            item: dict[str, Any] = {
                "task_id": task_id,
                "case_id": case_id,
                "procedure": proc,
                "region": reg or case_reg,
                "consulate": consulate,
                "step": kind,
                "status": status,
                "sla_state": state,
                "opened_at": iso(opened),
                "due_at": iso(due_at),
                "position": position,
                "ahead": position - 1,
                "queue_length": len(queue),
                "throughput_per_hour": round(rate, 4) if rate else None,
                "throughput_scope": rate_scope,
                "expected_completion": None,
                "likely_breach": None,
            }
            ahead = f"{position - 1} task{'' if position == 2 else 's'} ahead"
            if rate is None:
                item["reason"] = "no recent throughput"
            elif due_at is None:
                item["reason"] = f"{ahead}; the task has no due time"
            else:
                # The task itself has to be worked too, hence its 1-based position.
                needed = timedelta(hours=position / rate)
                expected = now + needed
                item["expected_completion"] = iso(expected)
                item["likely_breach"] = expected > due_at
                left = hours(due_at - now)
                due_text = f"due in {left:.1f} h" if left >= 0 else f"overdue by {-left:.1f} h"
                national_note = " (national rate)" if rate_scope == "national" else ""
                item["reason"] = (
                    f"{ahead}, {_rate(rate)} tasks/h{national_note} → done in "
                    f"~{hours(needed):.1f} h, {due_text}"
                )
            # Likely breaches first, then by due time: what a supervisor should move first.
            rank = (item["likely_breach"] is not True, due_at or far, utc(opened), task_id)
            ranked.append((rank, item))
    ranked.sort(key=lambda pair: pair[0])
    return [item for _, item in ranked]


def _forecast_brief(f: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "position",
        "ahead",
        "queue_length",
        "throughput_per_hour",
        "throughput_scope",
        "expected_completion",
        "likely_breach",
        "reason",
    )
    return {k: f[k] for k in keys}


# --------------------------------------------------------------------------- event stream

# On PostgreSQL an id is taken at insert but becomes visible at commit, so a lower id can
# appear after a higher one. A hole in the ids is either such a transaction still running
# or a rolled-back insert that never will appear. The stream holds back behind a hole for
# GAP_GRACE_S from when it first saw it, unless the row after the hole is older than
# GAP_STALE_S (its `at`): a hole that old is history (a rollback), not a running insert.
GAP_GRACE_S = 5.0
GAP_STALE_S = 60.0
SCAN_IDS = 1000


@dataclass
class EventCursor:
    """Where one stream connection is in `case_event`, and which holes it is waiting on."""

    last: int
    grace: float = GAP_GRACE_S
    gaps: dict[int, float] = field(default_factory=dict)  # first missing id → first noticed

    def safe_upto(self, scan: Sequence[tuple[int, bool]], now: float) -> int:
        """The highest id below which every row is visible or given up on.

        `scan` is (id, row is stale) for the rows after `last`, ascending.
        """
        upto = self.last
        expected = self.last + 1
        blocked = False
        for i, stale in scan:
            if i > expected and not stale:
                # Note every hole in this scan now, so that holes seen together expire together.
                noticed = self.gaps.setdefault(expected, now)
                if now - noticed < self.grace:
                    blocked = True
            if not blocked:
                upto = i
            expected = i + 1
        for start in [g for g in self.gaps if g <= upto]:
            del self.gaps[start]
        return upto


def stream_batch(
    engine: Engine, actor: Actor, cursor: EventCursor
) -> tuple[list[dict[str, Any]], bool]:
    """The next events for this connection (blocking; run it in a thread) and whether more wait."""
    stale_before = datetime.now(UTC) - timedelta(seconds=GAP_STALE_S)
    with Session(engine) as s:
        scan = s.exec(
            select(CaseEventRow.id, CaseEventRow.at)
            .where(col(CaseEventRow.id) > cursor.last)
            .order_by(col(CaseEventRow.id))
            .limit(SCAN_IDS)
        ).all()
        ids = [i for i, _ in scan if i is not None]
        upto = cursor.safe_upto(
            [(i, utc(at) < stale_before) for i, at in scan if i is not None],  # type: ignore[operator]
            time.monotonic(),
        )
        if upto <= cursor.last:
            return [], False
        rows = s.exec(
            select(CaseEventRow, CaseRow.procedure, CaseRow.region)
            .join(CaseRow, col(CaseRow.case_id) == col(CaseEventRow.case_id))
            .where(
                policy.case_filter(actor),
                col(CaseEventRow.kind).in_(STREAM_KINDS),
                col(CaseEventRow.id) > cursor.last,
                col(CaseEventRow.id) <= upto,
            )
            .order_by(col(CaseEventRow.id))
        ).all()
    more = len(ids) == SCAN_IDS and upto == ids[-1]
    cursor.last = upto
    return [event_view(ev, proc, reg) for ev, proc, reg in rows], more


def event_view(ev: CaseEventRow, procedure: str, region: str) -> dict[str, Any]:
    data = dict(ev.data or {})
    out: dict[str, Any] = {
        "id": ev.id,
        "case_id": ev.case_id,
        "procedure": procedure,
        "region": region,
        "kind": ev.kind,
        "at": iso(ev.at),
        "clock": data.pop("clock", None),
        "step": data.pop("step", None),
        "deadline": data.pop("deadline", None),
        "explanation": data.pop("explanation", None),
    }
    # Kind-specific details (reason, extension, escalated task and action) ride along.
    for k, v in data.items():
        out.setdefault(k, v)
    return out


def sse_frame(event: dict[str, Any]) -> str:
    body = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"id: {event['id']}\nevent: {event['kind']}\ndata: {body}\n\n"
