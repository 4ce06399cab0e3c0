"""The supervisors' SLA board: read-model queries behind `/api/v1/sla/*`.

Every query is cut to the caller's scope with `policy.case_filter` / `policy.task_filter`,
so a regional supervisor never reads another region's rows. A task or a clock breach is
cut by its case's region through the copy of it the database keeps on the row
(`case_region`, casework.db), so no board query joins the case table. Open tasks and open
cases are read from counts the database keeps, and (PostgreSQL) the time in step of whole
past days from the hours it keeps per day (casework.db); oldest tasks, queue positions,
today's time in step and breaches per day are aggregated in the database over partial
indexes, so no query reads all the open or done rows into Python. The two aggregates that
do not port (percentiles, calendar-day buckets) fall back to Python on SQLite, the small
embedded default. Lists sort by urgency in index order with LIMIT. Datetime columns hold
aware UTC; every timestamp returned is ISO 8601 in UTC.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Date,
    DateTime,
    Float,
    String,
    Table,
    bindparam,
    cast,
    column,
    except_all,
    exists,
    literal_column,
    or_,
    text,
    true,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy import select as sql_select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ColumnElement, True_
from sqlmodel import Session, col, func, select

from api import policy
from casework.contracts import CLOSED_STATUSES, KZ_TZ, Actor, SlaState, TaskStatus
from casework.db import (
    CASE_EVENT,
    TASK,
    CaseEventRow,
    CaseRow,
    ClockRow,
    DoneHoursRow,
    OpenCaseCountRow,
    OpenTaskCountRow,
    TaskRow,
    fold_board_shards,
)

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


CASE: Table = CaseRow.__table__  # type: ignore[attr-defined]
TASK_COUNTS: Table = OpenTaskCountRow.__table__  # type: ignore[attr-defined]
CASE_COUNTS: Table = OpenCaseCountRow.__table__  # type: ignore[attr-defined]
HOURS: Table = DoneHoursRow.__table__  # type: ignore[attr-defined]
TASK_CASE_REGION: Column[str] = TASK.c.case_region
EVENT_CASE_REGION: Column[str] = CASE_EVENT.c.case_region


def _task_region() -> Any:
    # Consular tasks carry no region of their own; they count in their case's region.
    return func.coalesce(TaskRow.region, TASK_CASE_REGION)


def _translated(
    conditions: Iterable[ColumnElement[bool]], onto: dict[tuple[str, str], Any]
) -> list[ColumnElement[bool]] | None:
    """Conditions on rows as conditions on other columns: a row's copy of its case's region,
    or the keys of the board's counts (casework.db). `onto` maps a (table, column) to its
    stand-in; None when a condition reads any other column."""
    columns = {
        (c.table.name, c.name)
        for cond in conditions
        for c in visitors.iterate(cond)
        if isinstance(c, Column)
    }
    if not columns <= set(onto):
        return None
    return [
        visitors.replacement_traverse(  # type: ignore[call-overload]
            cond,
            {},
            lambda el: onto[(el.table.name, el.name)] if isinstance(el, Column) else None,
        )
        for cond in conditions
    ]


def _case_scope(actor: Actor) -> ColumnElement[bool]:
    """`policy.case_filter` for task rows: on the task's copy of its case's region, or (a
    scope that reads other case columns) on the case row itself."""
    case_filter = policy.case_filter(actor)
    on_copy = _translated([case_filter], {("case_file", "region"): TASK_CASE_REGION})
    if on_copy is not None:
        return on_copy[0]
    return col(TaskRow.case_id).in_(select(CaseRow.case_id).where(case_filter))


TaskScope = tuple[ColumnElement[bool], ...]


def _task_scope(actor: Actor) -> TaskScope:
    """The caller's tasks: built once per request, used by each of its queries."""
    return policy.task_filter(actor), _case_scope(actor)


def _scoped_tasks(scope: TaskScope, *columns: Any) -> Any:
    return select(*columns).select_from(TaskRow).where(*scope)


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


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# Rows of the counts outside shard 0 beyond which the board folds them (casework.db).
FOLD_AFTER = 2000


def _fold_shards(session: Session, now: datetime) -> None:
    """PostgreSQL: each connection writes the board's counts and days' hours in rows of its
    own; when there are many, or some for days before today, they are folded into shard 0
    (fold_board_shards), in a short transaction of its own, so each read stays a few rows
    per key. Skipped while another request is folding; the figures are the same either way."""
    if not _is_postgres(session):
        return
    today = now.astimezone(KZ_TZ).date()
    strays = sql_select(TASK_COUNTS.c.shard).where(TASK_COUNTS.c.shard != 0).limit(FOLD_AFTER + 1)
    days, counts = session.exec(
        sql_select(  # type: ignore[call-overload]
            exists().where(HOURS.c.shard != 0, HOURS.c.day < today),
            sql_select(func.count()).select_from(strays.subquery()).scalar_subquery(),
        )
    ).one()
    engine = session.get_bind()
    if (days or counts > FOLD_AFTER) and isinstance(engine, Engine):
        with engine.begin() as conn:
            fold_board_shards(conn, before=today, wait=False)


def _board_session(session: Session) -> None:
    """No JIT and no parallel workers for the board's index scans (this transaction only).

    Summed over many small subqueries the planner's cost passes the JIT and parallel
    thresholds: compiling, or starting workers for each of 50 position counts, then takes
    longer (up to seconds) than running the whole query.
    """
    if _is_postgres(session):
        session.exec(text("SET LOCAL jit = off"))  # type: ignore[call-overload]
        session.exec(text("SET LOCAL max_parallel_workers_per_gather = 0"))  # type: ignore[call-overload]


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
    _board_session(session)
    _fold_shards(session, now)
    since = period_start(now, period_days)
    scope = _task_scope(actor)
    region_expr = _task_region()
    task_where = _filters(procedure, region, col(TaskRow.procedure), region_expr)
    open_where = [col(TaskRow.status).in_(OPEN_TASK), *task_where]

    groups: dict[tuple[str, str | None, str], dict[str, Any]] = {}

    def group(key: tuple[str, str | None, str]) -> dict[str, Any]:
        if key not in groups:
            groups[key] = {"open": _empty_counts(), "oldest": None, "time": (None, None, 0)}
        return groups[key]

    # Open tasks by state (the board region taken here), then the oldest opening time.
    counted = _open_task_counts(session, scope, open_where, task_where)
    opened_first = _first_opened(session, scope, open_where, {row[:4] for row in counted})
    first: dict[tuple[str, str | None, str], datetime] = {}
    for task_reg, case_reg, proc, kind, state, n in counted:
        key = (proc, task_reg if task_reg is not None else case_reg, kind)
        g = group(key)
        if state in g["open"]:
            g["open"][state] += n
        g["open"]["total"] += n
        at = opened_first[(task_reg, case_reg, proc, kind)]
        if key not in first or at < first[key]:
            first[key] = at
    # The oldest task itself: the few open tasks opened at one of those instants.
    if first:
        candidates = session.exec(
            _scoped_tasks(
                scope,
                TaskRow.task_id,
                TaskRow.case_id,
                TaskRow.procedure,
                region_expr,
                TaskRow.kind,
                TaskRow.sla_state,
                TaskRow.opened_at,
            ).where(
                *open_where,
                col(TaskRow.opened_at).in_(sorted({db_time(t) for t in first.values()})),
            )
        ).all()
        for task_id, case_id, proc, reg_v, kind, state, opened_at in sorted(
            candidates, key=lambda r: r[0]
        ):
            key = (proc, reg_v, kind)
            opened = utc(opened_at)
            if key in groups and groups[key]["oldest"] is None and opened == first.get(key):
                groups[key]["oldest"] = (task_id, opened, case_id, state)

    # A caller with a region sees that region's tasks only (policy.task_filter).
    board = region or (actor.region.value if actor.region else None)
    for key, time_in_step in _time_in_step(
        session, scope, region_expr, board, since, now, task_where
    ).items():
        group(key)["time"] = time_in_step

    out_groups = []
    for (proc, reg_v, step), g in sorted(groups.items(), key=lambda kv: _sort_key(kv[0])):
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
        median, p90, count = g["time"]
        out_groups.append(
            {
                "procedure": proc,
                "region": reg_v,
                "step": step,
                "open": g["open"],
                "oldest": oldest,
                "time_in_step_hours": {"median": median, "p90": p90, "count": count},
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


OpenKey = tuple[str | None, str | None, str, str]  # task region, case region, procedure, step


def _key(column: Any) -> Any:
    # A count's key holds '' for a missing region.
    return func.nullif(column, "")


_TASK_COUNTED = {
    ("task", "region"): _key(TASK_COUNTS.c.region),
    ("task", "case_region"): _key(TASK_COUNTS.c.case_region),
    ("task", "consulate"): _key(TASK_COUNTS.c.consulate),
    ("task", "procedure"): TASK_COUNTS.c.procedure,
    ("task", "kind"): TASK_COUNTS.c.kind,
    ("task", "sla_state"): TASK_COUNTS.c.sla_state,
}
_CASE_COUNTED = {
    ("case_file", "region"): CASE_COUNTS.c.region,
    ("case_file", "procedure"): CASE_COUNTS.c.procedure,
    ("case_file", "sla_state"): CASE_COUNTS.c.sla_state,
}


def _open_task_counts(
    session: Session,
    scope: TaskScope,
    open_where: list[ColumnElement[bool]],
    task_where: list[ColumnElement[bool]],
) -> list[tuple[str | None, str | None, str, str, str, int]]:
    """Open tasks by task region, case region, procedure, step and SLA state in scope: from
    the database's counts (casework.db), summed over their shards; for a scope the counts
    cannot tell, counted from the rows."""
    where = _translated([*scope, *task_where], _TASK_COUNTED)
    if where is not None:
        c = TASK_COUNTS.c
        by = (c.region, c.case_region, c.procedure, c.kind, c.sla_state)
        return [
            (reg or None, case_reg or None, proc, kind, state, n)
            for reg, case_reg, proc, kind, state, n in session.exec(
                sql_select(*by, func.sum(c.n))
                .where(*where)
                .group_by(*by)
                .having(func.sum(c.n) != 0)  # type: ignore[call-overload]
            ).all()
        ]
    by_row = (TaskRow.region, TASK_CASE_REGION, TaskRow.procedure, TaskRow.kind, TaskRow.sla_state)
    return [
        tuple(row)
        for row in session.exec(
            _scoped_tasks(scope, *by_row, func.count()).where(*open_where).group_by(*by_row)
        ).all()
    ]


def _first_opened(
    session: Session,
    scope: TaskScope,
    open_where: list[ColumnElement[bool]],
    keys: Iterable[OpenKey],
) -> dict[OpenKey, datetime]:
    """When the oldest open task in scope of each key was opened: one probe of
    ix_task_open_scope per key, written once per pattern of missing regions."""
    out: dict[OpenKey, datetime] = {}
    patterns: dict[tuple[bool, bool], list[OpenKey]] = defaultdict(list)
    for k in keys:
        patterns[(k[0] is None, k[1] is None)].append(k)
    for (no_region, no_case_region), group in patterns.items():
        combo = _rows(
            session,
            "combo",
            {c: String() for c in ("region", "case_region", "procedure", "kind")},
            group,
        )
        opened = (
            _scoped_tasks(scope, func.min(TaskRow.opened_at))
            .where(
                *open_where,
                _same(col(TaskRow.region), combo.c.region, no_region),
                _same(TASK_CASE_REGION, combo.c.case_region, no_case_region),
                col(TaskRow.procedure) == combo.c.procedure,
                col(TaskRow.kind) == combo.c.kind,
            )
            .scalar_subquery()
        )
        for reg, case_reg, proc, kind, first in session.exec(
            sql_select(combo.c.region, combo.c.case_region, combo.c.procedure, combo.c.kind, opened)  # type: ignore[call-overload]
        ).all():
            at = utc(first)
            assert at is not None
            out[(reg, case_reg, proc, kind)] = at
    return out


TimeInStep = tuple[float | None, float | None, int]  # median, p90, count (hours)


def _time_in_step(
    session: Session,
    scope: TaskScope,
    region_expr: Any,
    board: str | None,
    since: datetime,
    now: datetime,
    task_where: list[ColumnElement[bool]],
) -> dict[tuple[str, str | None, str], TimeInStep]:
    """Median and p90 hours from opening to completion of the tasks done in the period.

    `board`: the one board region all the caller's tasks are in, if there is one.
    """

    def done_where(start: datetime) -> list[ColumnElement[bool]]:
        return [
            col(TaskRow.status) == TaskStatus.done.value,
            col(TaskRow.completed_at) >= db_time(start),
            col(TaskRow.completed_at) <= db_time(now),
            *task_where,
        ]

    out: dict[tuple[str, str | None, str], TimeInStep] = {}
    if _is_postgres(session):
        # The whole days before today from the days' hours, today's tasks as rows.
        days = _digested_days(session, scope, task_where, since, now)
        start = since if days is None else days.until
        for proc, reg_v, kind, median, p90, n in session.exec(
            _step_percentiles(scope, board, done_where(start), days)
        ).all():
            out[(proc, reg_v or None, kind)] = (_round(median), _round(p90), n)
        return out
    # Portable fallback (SQLite, the embedded default): percentiles in Python.
    durations: dict[tuple[str, str | None, str], list[float]] = defaultdict(list)
    for proc, reg_v, kind, opened_at, completed_at in session.exec(
        _scoped_tasks(
            scope,
            TaskRow.procedure,
            region_expr,
            TaskRow.kind,
            TaskRow.opened_at,
            TaskRow.completed_at,
        ).where(*done_where(since))
    ).all():
        spent = utc(completed_at) - utc(opened_at)  # type: ignore[operator]
        durations[(proc, reg_v, kind)].append(spent.total_seconds() / 3600)
    for key, hours in durations.items():
        out[key] = (percentile(hours, 0.5), percentile(hours, 0.9), len(hours))
    return out


_HOURS_DIGESTED = {
    ("task", "region"): _key(HOURS.c.region),
    ("task", "case_region"): _key(HOURS.c.case_region),
    ("task", "procedure"): HOURS.c.procedure,
    ("task", "kind"): HOURS.c.kind,
}


@dataclass
class _Days:
    """The whole Astana days of a period before today, read from board_done_hours."""

    first: date
    until: datetime  # today's midnight: the period's rows from here on are read as rows
    where: list[ColumnElement[bool]]  # the caller's scope and filters on the digests' keys
    removed: bool  # some hours were taken out of a day since it was merged


def _digested_days(
    session: Session,
    scope: TaskScope,
    task_where: list[ColumnElement[bool]],
    since: datetime,
    now: datetime,
) -> _Days | None:
    until = period_start(now, 1)
    where = _translated([*scope, *task_where], _HOURS_DIGESTED)
    if where is None or since >= until:
        return None
    first = since.astimezone(KZ_TZ).date()
    removed = session.exec(
        sql_select(  # type: ignore[call-overload]
            exists().where(
                func.cardinality(HOURS.c.removed) > 0,
                HOURS.c.day >= first,
                HOURS.c.day < until.astimezone(KZ_TZ).date(),
            )
        )
    ).one()[0]
    return _Days(first, until, where, bool(removed))


def _step_board(t: Any) -> Any:
    """The board region as ix_task_done_step and ix_board_done_hours_step index it ('' for a
    task of no region at all; the days' hours hold '' for a missing region)."""
    blank: Any = literal_column("''")
    if t is HOURS:
        return func.coalesce(
            func.nullif(t.c.region, blank), func.nullif(t.c.case_region, blank), blank
        )
    return func.coalesce(t.c.region, t.c.case_region, blank)


def _done_steps() -> Any:
    """PostgreSQL: every (procedure, step, board region) of done tasks, from
    ix_task_done_step by a recursive skip scan (one index probe per group)."""
    first = TASK.alias("first_step")
    step = (
        sql_select(first.c.procedure, first.c.kind, _step_board(first).label("board"))
        .where(first.c.status == TaskStatus.done.value)
        .order_by(first.c.procedure, first.c.kind, _step_board(first))
        .limit(1)
        .cte("step", recursive=True)
    )
    after = TASK.alias("next_step")
    following = (
        sql_select(after.c.procedure, after.c.kind, _step_board(after).label("board"))
        .where(
            after.c.status == TaskStatus.done.value,
            tuple_(after.c.procedure, after.c.kind, _step_board(after))
            > tuple_(step.c.procedure, step.c.kind, step.c.board),
        )
        .order_by(after.c.procedure, after.c.kind, _step_board(after))
        .limit(1)
        .lateral("following")
    )
    return step.union_all(
        sql_select(following.c.procedure, following.c.kind, following.c.board).select_from(
            step.join(following, true())
        )
    )


def _in_step(step: Any) -> list[ColumnElement[bool]]:
    """The done tasks of a group of `_done_steps`: one range of ix_task_done_step."""
    return [
        col(TaskRow.procedure) == step.c.procedure,
        col(TaskRow.kind) == step.c.kind,
        _step_board(TASK) == step.c.board,
    ]


def _step_percentiles(
    scope: TaskScope, board: str | None, done_where: list[Any], days: _Days | None
) -> Any:
    """PostgreSQL: time in step per procedure, step and board region, one index range each.

    Sorting the period's done tasks by group costs more than the percentiles themselves,
    so each group's tasks done in the period are read in index order, with their hours
    precomputed (`hours_in_step`). percentile_cont interpolates linearly between closest
    ranks, as `percentile` does, over the same float values.
    """
    step = _done_steps()
    hours = literal_column("task.hours_in_step", Float).label("h")
    values = _scoped_tasks(scope, hours).where(*done_where, *_in_step(step)).correlate(step)
    if days is not None:
        h = HOURS.c
        in_days = [
            h.procedure == step.c.procedure,
            h.kind == step.c.kind,
            _step_board(HOURS) == step.c.board,
            h.day >= days.first,
            h.day < days.until.astimezone(KZ_TZ).date(),
            *days.where,
        ]
        digested: Any = sql_select(func.unnest(h.added).label("h")).where(*in_days)
        digested = digested.correlate(step)
        if days.removed:  # a multiset difference: each removed value takes out one added
            taken = sql_select(func.unnest(h.removed)).where(*in_days).correlate(step)
            digested = except_all(digested, taken)
        values = union_all(digested, values)
    v = values.subquery("v")
    stats = (
        sql_select(
            func.percentile_cont(0.5).within_group(v.c.h).label("median"),
            func.percentile_cont(0.9).within_group(v.c.h).label("p90"),
            func.count().label("n"),
        )
        .select_from(v)
        .lateral("stats")
    )
    return (
        sql_select(
            step.c.procedure, step.c.board, step.c.kind, stats.c.median, stats.c.p90, stats.c.n
        )
        .select_from(step.join(stats, true()))
        .where(stats.c.n > 0, *([step.c.board == board] if board else []))
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)


def _sort_key(key: tuple[str, str | None, str]) -> tuple[str, str, str]:
    return key[0], key[1] or "", key[2]


def _case_counts(
    session: Session, actor: Actor, procedure: str | None, region: str | None
) -> dict[str, Any]:
    """Open cases by procedure, region and SLA state in scope: from the database's counts
    (casework.db), or for a scope the counts cannot tell, from the rows."""
    case_where = [
        policy.case_filter(actor),
        *_filters(procedure, region, col(CaseRow.procedure), col(CaseRow.region)),
    ]
    where = _translated(case_where, _CASE_COUNTED)
    if where is not None:
        c = CASE_COUNTS.c
        by = (c.procedure, c.region, c.sla_state)
        rows = session.exec(
            sql_select(*by, func.sum(c.n)).where(*where).group_by(*by).having(func.sum(c.n) != 0)  # type: ignore[call-overload]
        ).all()
    else:
        rows = session.exec(
            select(CaseRow.procedure, CaseRow.region, CaseRow.sla_state, func.count())
            .where(col(CaseRow.status).not_in(CLOSED_CASE), *case_where)
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
    where: list[Any] = [
        CaseEventRow.kind == "clock_breached",
        col(CaseEventRow.at) >= db_time(since),
        col(CaseEventRow.at) <= db_time(now),
    ]
    case_where = [
        w
        for w in (
            policy.case_filter(actor),
            *_filters(procedure, region, col(CaseRow.procedure), col(CaseRow.region)),
        )
        if not isinstance(w, True_)
    ]
    # A cut by the case's region reads the event's copy of it; any other cut (procedure)
    # joins the case. Every event has its case row: uncut, no join is needed.
    on_copy = _translated(case_where, {("case_file", "region"): EVENT_CASE_REGION})
    if on_copy is not None:
        where += on_copy
    else:
        where += [col(CaseRow.case_id) == col(CaseEventRow.case_id), *case_where]
    per_day: Counter[date] = Counter()
    if _is_postgres(session):
        # Days are Astana days (a fixed UTC offset): a legal deadline ends at 23:59:59 there.
        offset = KZ_TZ.utcoffset(None)
        assert offset is not None
        local_day = cast(func.timezone("UTC", col(CaseEventRow.at)) + offset, Date)
        for day, n in session.exec(
            select(local_day, func.count()).where(*where).group_by(local_day)
        ).all():
            per_day[day] = n
    else:
        for at in session.exec(select(CaseEventRow.at).where(*where)).all():
            per_day[utc(at).astimezone(KZ_TZ).date()] += 1  # type: ignore[union-attr]
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
    _board_session(session)
    where = [
        policy.case_filter(actor),
        col(CaseRow.status).not_in(CLOSED_CASE),
        col(CaseRow.sla_state).in_(_states(state)),
        *_filters(procedure, region, col(CaseRow.procedure), col(CaseRow.region)),
    ]
    total = session.exec(select(func.count()).select_from(CaseRow).where(*where)).one()
    # Earliest deadline first is the most overdue first; cases without one go last.
    rows = session.exec(
        select(CaseRow)
        .where(*where)
        .order_by(col(CaseRow.deadline).nulls_last(), col(CaseRow.case_id))
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
    _board_session(session)
    _fold_shards(session, now)
    scope = _task_scope(actor)
    region_expr = _task_region()
    where = [
        col(TaskRow.status).in_(OPEN_TASK),
        col(TaskRow.sla_state).in_(_states(state)),
        *_filters(procedure, region, col(TaskRow.procedure), region_expr),
    ]
    total = session.exec(_scoped_tasks(scope, func.count()).where(*where)).one()
    rows = session.exec(
        _scoped_tasks(scope, TaskRow, region_expr)
        .where(*where)
        .order_by(col(TaskRow.due_at).nulls_last(), col(TaskRow.opened_at), col(TaskRow.task_id))
        .offset(offset)
        .limit(limit)
    ).all()
    clocks = _live_clocks(session, (t.case_id for t, _ in rows))
    forecasts = _page_forecast(session, scope, [t for t, _ in rows], now, window_days)
    items = []
    for t, case_region in rows:
        live = clocks.get(t.case_id, [])
        fc = forecasts.get(t.task_id)
        items.append(
            {
                "task_id": t.task_id,
                "case_id": t.case_id,
                "procedure": t.procedure,
                "region": case_region,
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
                "forecast": fc,
            }
        )
    return {"total": total, "limit": limit, "offset": offset, "items": items}


# --------------------------------------------------------------------------- forecast

QueueKey = tuple[str, str, str | None, str | None]  # procedure, kind, region, consulate


def _rows(
    session: Session, name: str, columns: dict[str, Any], rows: Iterable[Sequence[Any]]
) -> Any:
    """Rows from Python as a table the database can join (a CTE): one JSON parameter,
    read by json_to_recordset (PostgreSQL) or json_each (SQLite). The statement's text is
    the same for any rows, so it is compiled once, and a request makes few objects."""
    dialect = session.get_bind().dialect
    # Each value as the database stores it (SQLite compares datetimes as text).
    encode = {
        c: t.dialect_impl(dialect).bind_processor(dialect) or (lambda v: v)
        for c, t in columns.items()
    }
    data = [
        {c: None if v is None else encode[c](v) for c, v in zip(columns, row, strict=True)}
        for row in rows
    ]
    param: Any = bindparam(f"{name}_rows", json.dumps(data, default=str))
    if dialect.name == "postgresql":
        records = func.json_to_recordset(cast(param, JSON)).table_valued(
            *(column(c, t) for c, t in columns.items())
        )
        return sql_select(*records.render_derived(name=name, with_types=True).c).cte(name)
    each = func.json_each(param).table_valued("value")
    return sql_select(
        *(
            type_coerce(func.json_extract(each.c.value, f"$.{c}"), t).label(c)
            for c, t in columns.items()
        )
    ).cte(name)


_PAGE_COLUMNS = {
    "task_id": String(),
    "procedure": String(),
    "kind": String(),
    "region": String(),
    "consulate": String(),
    "due_at": DateTime(timezone=True),
    "opened_at": DateTime(timezone=True),
}


def _page_cte(session: Session, tasks: Sequence[TaskRow], name: str) -> Any:
    """The page's tasks (their queue and place in it) as rows the database can join."""
    return _rows(
        session,
        name,
        _PAGE_COLUMNS,
        (
            (
                t.task_id,
                t.procedure,
                t.kind,
                t.region,
                t.consulate,
                None if t.due_at is None else db_time(t.due_at),
                db_time(t.opened_at),
            )
            for t in tasks
        ),
    )


def _same(column: Any, value: Any, none: bool) -> ColumnElement[bool]:
    # One statement per pattern of missing values: equality with a column stays indexable.
    return column.is_(None) if none else column == value  # type: ignore[no-any-return]


def _patterns(tasks: Iterable[TaskRow], *missing: str) -> dict[tuple[bool, ...], list[TaskRow]]:
    out: dict[tuple[bool, ...], list[TaskRow]] = defaultdict(list)
    for t in tasks:
        out[tuple(getattr(t, m) is None for m in missing)].append(t)
    return out


def _ahead(session: Session, scope: TaskScope, tasks: Sequence[TaskRow]) -> dict[str, int]:
    """How many open tasks in scope are ahead of each task of the page in its queue.

    A queue is the open tasks with one procedure, step, region and consulate, worked in
    due order, equal or missing due times in arrival order. The page is the most overdue
    first, so its tasks sit near the front of their queues: each count is a short range of
    the queue index. The count is written once per pattern of missing region, consulate
    and due time (so planned once), and run for each task of the page.
    """
    out: dict[str, int] = {}
    for (no_region, no_consulate, no_due), group in _patterns(
        tasks, "region", "consulate", "due_at"
    ).items():
        page = _page_cte(session, group, "page")
        mine = tuple_(page.c.opened_at, page.c.task_id)
        # Work order: due time (missing last), then opening time, then id.
        ahead_of = (
            or_(
                col(TaskRow.due_at).is_not(None),
                tuple_(col(TaskRow.opened_at), col(TaskRow.task_id)) < mine,
            )
            if no_due
            else tuple_(col(TaskRow.due_at), col(TaskRow.opened_at), col(TaskRow.task_id))
            < tuple_(page.c.due_at, *mine.clauses)
        )
        count = (
            _scoped_tasks(scope, func.count())
            .where(
                col(TaskRow.status).in_(OPEN_TASK),
                col(TaskRow.procedure) == page.c.procedure,
                col(TaskRow.kind) == page.c.kind,
                _same(col(TaskRow.region), page.c.region, no_region),
                _same(col(TaskRow.consulate), page.c.consulate, no_consulate),
                ahead_of,
            )
            .scalar_subquery()
        )
        out.update(session.exec(sql_select(page.c.task_id, count)).all())  # type: ignore[call-overload]
    return out


def _page_throughput(
    session: Session, tasks: Sequence[TaskRow], now: datetime, window_days: int
) -> tuple[dict[QueueKey, int], dict[tuple[str, str], int]]:
    """`_throughput` for the queues of a page: each queue's completions in the window, and
    for a queue with none, those of its procedure and step across all regions (the
    fallback rate). Each count reads the queue's completions from an index range."""
    in_window: list[ColumnElement[bool]] = [
        col(TaskRow.status) == TaskStatus.done.value,
        col(TaskRow.completed_at) >= db_time(now - timedelta(days=window_days)),
        col(TaskRow.completed_at) <= db_time(now),
    ]
    queues = {(t.procedure, t.kind, t.region, t.consulate): t for t in tasks}
    done: dict[QueueKey, int] = {}
    for (no_region, no_consulate), group in _patterns(
        queues.values(), "region", "consulate"
    ).items():
        page = _page_cte(session, group, "queue")
        count = (
            select(func.count())
            .select_from(TaskRow)
            .where(
                *in_window,
                col(TaskRow.procedure) == page.c.procedure,
                col(TaskRow.kind) == page.c.kind,
                _same(col(TaskRow.region), page.c.region, no_region),
                _same(col(TaskRow.consulate), page.c.consulate, no_consulate),
                # Implied by the region; lets PostgreSQL read ix_task_done_step's range.
                *([] if no_region else [_step_board(TASK) == page.c.region]),
            )
            .scalar_subquery()
        )
        key = (page.c.procedure, page.c.kind, page.c.region, page.c.consulate)
        for proc, kind, reg, consulate, n in session.exec(sql_select(*key, count)).all():  # type: ignore[call-overload]
            done[(proc, kind, reg, consulate)] = n
    steps = sorted({(k[0], k[1]) for k, n in done.items() if not n})
    if not steps:
        return done, {}
    by_step: tuple[Any, ...] = (TaskRow.procedure, TaskRow.kind)
    counted = sql_select(*by_step, func.count()).where(*in_window, tuple_(*by_step).in_(steps))
    if _is_postgres(session):
        # Summed over the step's board regions, each an index range (not the whole window).
        step = _done_steps()
        done_in_step = select(func.count()).select_from(TaskRow).where(*in_window, *_in_step(step))
        by_step = (step.c.procedure, step.c.kind)
        counted = sql_select(*by_step, func.sum(done_in_step.scalar_subquery())).where(
            tuple_(*by_step).in_(steps)
        )
    rows = session.exec(counted.group_by(*by_step)).all()  # type: ignore[call-overload]
    return done, {(proc, kind): int(n) for proc, kind, n in rows}


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


def _queue_rate(
    key: QueueKey,
    regional: dict[QueueKey, int],
    national: dict[tuple[str, str], int],
    window_days: int,
) -> tuple[float | None, str | None]:
    window_h = window_days * 24.0
    done_here = regional.get(key, 0)
    done_nationally = national.get((key[0], key[1]), 0)
    if done_here:
        return done_here / window_h, "region"
    if done_nationally:
        return done_nationally / window_h, "national"
    return None, None


def _outlook(
    now: datetime,
    position: int,
    queue_length: int,
    due_at: datetime | None,
    rate: float | None,
    rate_scope: str | None,
) -> dict[str, Any]:
    """A task's place in its queue and whether the queue's pace gets it done before due."""
    item: dict[str, Any] = {
        "position": position,
        "ahead": position - 1,
        "queue_length": queue_length,
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
    return item


def _queue_lengths(
    session: Session, scope: TaskScope, tasks: Sequence[TaskRow]
) -> dict[QueueKey, int]:
    """The open tasks in scope of the page's queues (and of others with their procedures
    and steps), from the database's counts, or from the rows for a scope they cannot tell."""
    steps = [
        col(TaskRow.procedure).in_(sorted({t.procedure for t in tasks})),
        col(TaskRow.kind).in_(sorted({t.kind for t in tasks})),
    ]
    where = _translated([*scope, *steps], _TASK_COUNTED)
    if where is not None:
        c = TASK_COUNTS.c
        by = (c.procedure, c.kind, c.region, c.consulate)
        return {
            (proc, kind, reg or None, consulate or None): n
            for proc, kind, reg, consulate, n in session.exec(
                sql_select(*by, func.sum(c.n))
                .where(*where)
                .group_by(*by)
                .having(func.sum(c.n) != 0)  # type: ignore[call-overload]
            ).all()
        }
    queue = (TaskRow.procedure, TaskRow.kind, TaskRow.region, TaskRow.consulate)
    return {
        (proc, kind, reg, consulate): n
        for proc, kind, reg, consulate, n in session.exec(
            _scoped_tasks(scope, *queue, func.count())
            .where(col(TaskRow.status).in_(OPEN_TASK), *steps)
            .group_by(*queue)
        ).all()
    }


def _page_forecast(
    session: Session, scope: TaskScope, tasks: Sequence[TaskRow], now: datetime, window_days: int
) -> dict[str, dict[str, Any]]:
    """`forecast`'s verdict for a page of tasks, without reading every open task: a task's
    position in its queue (`_ahead`), the queue's length and its recent throughput."""
    if not tasks:
        return {}
    ahead = _ahead(session, scope, tasks)
    lengths = _queue_lengths(session, scope, tasks)
    regional, national = _page_throughput(session, tasks, now, window_days)
    out = {}
    for t in tasks:
        if t.task_id not in ahead:
            continue
        key = (t.procedure, t.kind, t.region, t.consulate)
        rate, rate_scope = _queue_rate(key, regional, national, window_days)
        position = ahead[t.task_id] + 1
        out[t.task_id] = _outlook(
            now, position, lengths.get(key, 0), utc(t.due_at), rate, rate_scope
        )
    return out


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
    _board_session(session)
    region_expr = _task_region()
    rows = session.exec(
        _scoped_tasks(
            _task_scope(actor),
            TaskRow.task_id,
            TaskRow.case_id,
            TaskRow.procedure,
            TaskRow.kind,
            TaskRow.region,
            TASK_CASE_REGION,
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

    ranked: list[tuple[Any, dict[str, Any]]] = []
    for key, queue in queues.items():
        # A queue is worked in due order; equal or missing due times in arrival order.
        queue.sort(key=lambda r: (utc(r[9]) or far, utc(r[10]), r[0]))
        rate, rate_scope = _queue_rate(key, regional, national, window_days)
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
                **_outlook(now, position, len(queue), due_at, rate, rate_scope),
            }
            # Likely breaches first, then by due time: what a supervisor should move first.
            rank = (item["likely_breach"] is not True, due_at or far, utc(opened), task_id)
            ranked.append((rank, item))
    ranked.sort(key=lambda pair: pair[0])
    return [item for _, item in ranked]


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
