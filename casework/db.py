"""Read-model tables (SQLModel) and the engine factory.

Written only by activities; read by the API. SQLite file by default, PostgreSQL in
production. The quota ledger and the decision register are the two places where
transactions span cases.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    Column,
    Float,
    Index,
    String,
    Table,
    UniqueConstraint,
    event,
    func,
    inspect,
    literal,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, Session, SQLModel, create_engine

from casework.contracts import CLOSED_STATUSES, KZ_TZ
from casework.writer import BUSY_TIMEOUT_MS, write_transaction

# Partial-index predicates of the SLA board's indexes (api/sla.py): open tasks, done tasks,
# open cases, cases at risk or breached. PostgreSQL uses an index when the query's WHERE
# implies its predicate; SQLite (small, embedded) simply keeps them small.
_OPEN_TASK = text("status IN ('open', 'claimed')")
_DONE_TASK = text("status = 'done'")
_OPEN_CASE = text(
    "status NOT IN (" + ", ".join(f"'{s.value}'" for s in sorted(CLOSED_STATUSES)) + ")"
)
_SLA_CASE = text("sla_state IN ('at_risk', 'breached')")
_SLA_TASK = text("status IN ('open', 'claimed') AND sla_state IN ('at_risk', 'breached')")
_BREACH = text("kind = 'clock_breached'")


def _partial(name: str, where: Any, *columns: str) -> Index:
    return Index(name, *columns, postgresql_where=where, sqlite_where=where)


class CaseRow(SQLModel, table=True):
    __tablename__ = "case_file"
    __table_args__ = (
        # SLA board: open cases by procedure, region and state (counts, index-only).
        _partial("ix_case_file_open_sla", _OPEN_CASE, "procedure", "region", "sla_state"),
        # SLA board: cases at risk or breached, most overdue first (list and count).
        _partial(
            "ix_case_file_sla_due",
            _SLA_CASE,
            "deadline", "case_id", "sla_state", "status", "region", "procedure",
        ),
        # Joins from tasks and events to their case's scope without reading the case row.
        Index("ix_case_file_scope", "case_id", "region", "procedure"),
    )  # fmt: skip
    case_id: str = Field(primary_key=True)
    procedure: str = Field(index=True)
    ruleset_version: str
    region: str = Field(index=True)
    status: str = Field(index=True)
    sla_state: str = Field(index=True)
    deadline: datetime | None = Field(default=None, index=True)
    applicant_party: str = Field(index=True)
    applicant_name: str
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    filed_at: datetime = Field(index=True)
    filed_by: str
    request_hash: str
    outcome: str | None = None
    decision_number: str | None = None
    fee_kzt: int | None = None
    consulate: str | None = Field(default=None, index=True)
    updated_at: datetime
    rev: int = 0  # workflow event counter at projection time: a stale write never wins


class TaskRow(SQLModel, table=True):
    __tablename__ = "task"
    __table_args__ = (
        Index("ix_task_inbox", "status", "region", "due_at"),
        # SLA board: the oldest open task of a group.
        _partial("ix_task_open_opened", _OPEN_TASK, "opened_at", "task_id"),
        # SLA board: tasks done in a period (time in step, throughput), index-only.
        _partial(
            "ix_task_done",
            _DONE_TASK,
            "completed_at", "procedure", "kind", "region", "consulate", "opened_at", "case_id",
        ),
    )  # fmt: skip
    task_id: str = Field(primary_key=True)
    case_id: str = Field(index=True)
    procedure: str
    kind: str
    title: str
    role: str
    region: str | None = None
    consulate: str | None = None
    status: str
    assignee: str | None = Field(default=None, index=True)
    priority: int = 0
    due_at: datetime | None = None
    sla_state: str = "on_track"
    opened_at: datetime
    context: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    form_data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    completed_by: str | None = None
    completed_at: datetime | None = None
    rev: int = 0


class ClockRow(SQLModel, table=True):
    __tablename__ = "sla_clock"
    case_id: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    step: str
    state: str = Field(index=True)
    term: dict[str, Any] = Field(sa_column=Column(JSON))
    started_at: datetime
    deadline: datetime | None = None
    warn_at: datetime | None = None
    explanation: str = ""
    skipped_days: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    on_breach: str = "escalate"
    updated_at: datetime
    rev: int = 0


class CaseEventRow(SQLModel, table=True):
    __tablename__ = "case_event"
    __table_args__ = (
        UniqueConstraint("case_id", "seq"),
        # SLA board: clock breaches per day in a period, index-only.
        Index("ix_case_event_kind_at", "kind", "at", "case_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True)
    seq: int
    kind: str
    at: datetime
    actor: str
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    prev_hash: str | None = None  # the hash chain (casework.timeline)
    hash: str | None = None


class AccessLogRow(SQLModel, table=True):
    """Who viewed a case's personal data, and when (read by auditors only)."""

    __tablename__ = "access_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    user_id: str = Field(index=True)
    role: str
    case_id: str = Field(index=True)
    what: str  # case, timeline, history, document, replay
    path: str


class NotificationRow(SQLModel, table=True):
    """Outbox of notices to parties (intended refusal, fee notice, document requests...)."""

    __tablename__ = "notification"
    __table_args__ = (UniqueConstraint("case_id", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True)
    seq: int
    to_role: str
    to_party: str | None = Field(default=None, index=True)
    region: str | None = None
    kind: str
    text_ru: str
    text_kk: str = ""
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime


class WebhookDeliveryRow(SQLModel, table=True):
    """One clock event delivered to one endpoint: the record that makes delivery once-only."""

    __tablename__ = "webhook_delivery"
    event_id: str = Field(primary_key=True)
    url: str = Field(primary_key=True)
    delivered_at: datetime
    status_code: int


class QuotaRow(SQLModel, table=True):
    """One quota pool: procedure-quota × region × category × year."""

    __tablename__ = "quota"
    quota_key: str = Field(primary_key=True)
    kind: str  # work_permit, kandas, resettler
    region: str = Field(index=True)
    category: str
    year: int
    limit: int = Field(ge=0)
    reserved: int = 0
    used: int = 0


class QuotaHoldRow(SQLModel, table=True):
    """The unit one case holds in one pool; its state moves reserved → committed | released."""

    __tablename__ = "quota_hold"
    quota_key: str = Field(primary_key=True)
    case_id: str = Field(primary_key=True)
    state: str
    updated_at: datetime


class QuotaEntryRow(SQLModel, table=True):
    """Append-only ledger: every movement of a quota unit."""

    __tablename__ = "quota_ledger"
    __table_args__ = (UniqueConstraint("quota_key", "case_id", "action"),)
    id: int | None = Field(default=None, primary_key=True)
    quota_key: str = Field(index=True)
    case_id: str = Field(index=True)
    action: str  # reserve, commit, release
    at: datetime
    actor: str


class DecisionRow(SQLModel, table=True):
    """The decision register."""

    __tablename__ = "decision_register"
    number: str = Field(primary_key=True)
    idempotency_key: str = Field(unique=True)
    case_id: str = Field(index=True)
    procedure: str
    region: str
    outcome: str
    status: str  # pending (number allocated) → issued (document stored)
    issued_at: datetime
    valid_from: date | None = None
    valid_to: date | None = None
    permit_number: str | None = None
    grounds: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    ruleset_version: str
    sha256: str = ""
    verification_code: str = ""
    document_path: str = ""
    appeal_deadline: date | None = None


class CounterRow(SQLModel, table=True):
    __tablename__ = "counter"
    name: str = Field(primary_key=True)
    value: int = 0


class CalendarDayRow(SQLModel, table=True):
    """Operator-editable calendar changes (Government decrees) on top of the `holidays` package."""

    __tablename__ = "calendar_day"
    day: date = Field(primary_key=True)
    kind: str  # day_off | working_day
    reason: str
    updated_at: datetime


# --------------------------------------------------------------------------- SLA board copies
#
# The SLA board cuts tasks and clock breaches by their case's region (a regional
# supervisor sees the tasks of the region's cases; a consular task, which has no region of
# its own, counts in its case's region). Instead of joining every task to its case, the
# database keeps a copy of the case's region on the task row and on each clock_breached
# event (`case_region`), and on PostgreSQL each done task's hours in step
# (`hours_in_step`, a generated column). Triggers keep the copies equal to the case row in
# the writer's own transaction, whoever writes (projection upserts, the API's registration
# row, bulk loads, tests): a task or event takes its case's region when written, and a case
# whose region changes (a kandas settlement moved) hands the new one to its rows. The
# columns are not model fields: no writer sets them and no view shows them.

TASK: Table = TaskRow.__table__  # type: ignore[attr-defined]
CASE_EVENT: Table = CaseEventRow.__table__  # type: ignore[attr-defined]
TASK.append_column(Column("case_region", String, nullable=True))
CASE_EVENT.append_column(Column("case_region", String, nullable=True))

_t = TASK.c
Index(
    # SLA board: open tasks at risk or breached, most overdue first (list and count).
    "ix_task_sla_due",
    _t.due_at, _t.opened_at, _t.task_id, _t.sla_state, _t.region, _t.case_region,
    _t.procedure, _t.kind, _t.case_id,
    postgresql_where=_SLA_TASK, sqlite_where=_SLA_TASK,
)  # fmt: skip
Index(
    # SLA board: open tasks by queue (procedure, step, region, consulate) in work order.
    "ix_task_open_queue",
    _t.procedure, _t.kind, _t.region, _t.consulate, _t.due_at, _t.opened_at, _t.task_id,
    _t.sla_state, _t.case_id, _t.case_region,
    postgresql_where=_OPEN_TASK, sqlite_where=_OPEN_TASK,
)  # fmt: skip
Index(
    # SLA board: the oldest open task by scope, procedure and step (one probe each).
    "ix_task_open_scope",
    _t.region, _t.case_region, _t.procedure, _t.kind, _t.opened_at,
    postgresql_where=_OPEN_TASK, sqlite_where=_OPEN_TASK,
)  # fmt: skip
Index(
    # SLA board: a region's clock breaches per day.
    "ix_case_event_breach_scope",
    CASE_EVENT.c.case_region, CASE_EVENT.c.at,
    postgresql_where=_BREACH, sqlite_where=_BREACH,
)  # fmt: skip

# PostgreSQL: done tasks by procedure, step and board region in completion order, with
# the hours in step precomputed, so each group's percentiles and each queue's recent
# throughput read one index range (api/sla.py).
_PG_BOARD_DDL = (
    "ALTER TABLE task ADD COLUMN IF NOT EXISTS hours_in_step double precision GENERATED ALWAYS"
    " AS (CAST(EXTRACT(epoch FROM completed_at - opened_at) AS double precision) / 3600.0)"
    " STORED",
    "CREATE INDEX IF NOT EXISTS ix_task_done_step ON task"
    " (procedure, kind, (coalesce(region, case_region, '')), completed_at)"
    " INCLUDE (hours_in_step, region, case_region, consulate) WHERE status = 'done'",
    # The days' hours of a group (board_done_hours, below), and the days with hours taken out.
    "CREATE INDEX IF NOT EXISTS ix_board_done_hours_step ON board_done_hours (procedure, kind,"
    " (coalesce(nullif(region, ''), nullif(case_region, ''), '')), day)",
    "CREATE INDEX IF NOT EXISTS ix_board_done_hours_removed ON board_done_hours (day)"
    " WHERE cardinality(removed) > 0",
    "CREATE INDEX IF NOT EXISTS ix_board_done_hours_shards ON board_done_hours (day)"
    " WHERE shard <> 0",
)

# A row's copy is set before the row is written: on insert, and on an update that changes
# what it depends on (or the copy itself).
_PG_FILL = """
    CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.case_region := {value};
        RETURN NEW;
    END $$;
    CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW {when}
        EXECUTE FUNCTION {name}();
    CREATE TRIGGER {name}_upd BEFORE UPDATE OF {columns} ON {table} FOR EACH ROW
        WHEN ({changed}) EXECUTE FUNCTION {name}();
"""


def _pg_fill(name: str, table: str, value: str, columns: tuple[str, ...], when: str = "") -> str:
    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in columns)
    return _PG_FILL.format(
        name=name, table=table, value=value, columns=", ".join(columns), changed=changed, when=when
    )


# Read with a share lock: a case moving region at the same moment waits for this row, or
# this row for the move, so no row is written with the region the case is leaving.
_CASE_REGION_OF_NEW = "(SELECT region FROM case_file WHERE case_id = NEW.case_id FOR SHARE)"
_PG_TRIGGERS = {
    "casework_task_case_region": _pg_fill(
        "casework_task_case_region", "task", _CASE_REGION_OF_NEW, ("case_id", "case_region")
    ),
    # Only clock breaches carry the copy (the board's breaches per day).
    "casework_event_case_region": _pg_fill(
        "casework_event_case_region",
        "case_event",
        f"CASE WHEN NEW.kind = 'clock_breached' THEN {_CASE_REGION_OF_NEW} END",
        ("case_id", "kind", "case_region"),
        when="WHEN (NEW.kind = 'clock_breached' OR NEW.case_region IS NOT NULL)",
    ),
    # The rows' own triggers look the region up again, so touching them is enough.
    "casework_case_region": """
        CREATE OR REPLACE FUNCTION casework_case_region() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            cid varchar := CASE WHEN TG_OP = 'DELETE' THEN OLD.case_id ELSE NEW.case_id END;
            reg varchar := CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE NEW.region END;
        BEGIN
            UPDATE task SET case_region = reg
                WHERE case_id = cid AND case_region IS DISTINCT FROM reg;
            UPDATE case_event SET case_region = reg
                WHERE case_id = cid AND kind = 'clock_breached'
                  AND case_region IS DISTINCT FROM reg;
            RETURN NULL;
        END $$;
        CREATE TRIGGER casework_case_region AFTER INSERT OR DELETE ON case_file
            FOR EACH ROW EXECUTE FUNCTION casework_case_region();
        CREATE TRIGGER casework_case_region_upd AFTER UPDATE OF region ON case_file
            FOR EACH ROW WHEN (OLD.region IS DISTINCT FROM NEW.region)
            EXECUTE FUNCTION casework_case_region();
    """,
}

# SQLite triggers cannot change the row being written: they correct it right after. The
# same correction runs after an insert and after an update of the columns it depends on.
_SQLITE_TASK_FIX = """
    WHEN NEW.case_region IS NOT (SELECT region FROM case_file WHERE case_id = NEW.case_id)
    BEGIN
        UPDATE task SET case_region = (SELECT region FROM case_file WHERE case_id = NEW.case_id)
        WHERE task_id = NEW.task_id;
    END"""
_SQLITE_EVENT_FIX = """
    WHEN NEW.case_region IS NOT (CASE WHEN NEW.kind = 'clock_breached'
        THEN (SELECT region FROM case_file WHERE case_id = NEW.case_id) END)
    BEGIN
        UPDATE case_event SET case_region = (CASE WHEN NEW.kind = 'clock_breached'
            THEN (SELECT region FROM case_file WHERE case_id = NEW.case_id) END)
        WHERE id = NEW.id;
    END"""
# A case inserted, moved or deleted hands its region (or none) to its rows.
_SQLITE_CASE_HANDS_ON = """
    BEGIN
        UPDATE task SET case_region = {new}.region
        WHERE case_id = {new}.case_id AND case_region IS NOT {new}.region;
        UPDATE case_event SET case_region = {new}.region
        WHERE case_id = {new}.case_id AND kind = 'clock_breached'
          AND case_region IS NOT {new}.region;
    END"""
_SQLITE_TRIGGERS = {
    "casework_task_case_region": "CREATE TRIGGER casework_task_case_region"
    " AFTER INSERT ON task" + _SQLITE_TASK_FIX,
    "casework_task_case_region_upd": "CREATE TRIGGER casework_task_case_region_upd"
    " AFTER UPDATE OF case_id, case_region ON task" + _SQLITE_TASK_FIX,
    "casework_event_case_region": "CREATE TRIGGER casework_event_case_region"
    " AFTER INSERT ON case_event" + _SQLITE_EVENT_FIX,
    "casework_event_case_region_upd": "CREATE TRIGGER casework_event_case_region_upd"
    " AFTER UPDATE OF case_id, kind, case_region ON case_event" + _SQLITE_EVENT_FIX,
    "casework_case_region_ins": "CREATE TRIGGER casework_case_region_ins"
    " AFTER INSERT ON case_file" + _SQLITE_CASE_HANDS_ON.replace("{new}", "NEW"),
    "casework_case_region_upd": "CREATE TRIGGER casework_case_region_upd"
    " AFTER UPDATE OF region ON case_file WHEN OLD.region IS NOT NEW.region"
    + _SQLITE_CASE_HANDS_ON.replace("{new}", "NEW"),
    # The deleted case's rows are looked up by its id, and get no region.
    "casework_case_region_del": "CREATE TRIGGER casework_case_region_del"
    " AFTER DELETE ON case_file"
    + _SQLITE_CASE_HANDS_ON.replace("{new}.region", "NULL").replace("{new}", "OLD"),
}

# A read model created before the copies existed gets the columns, filled from the cases.
_BACKFILL = {
    "task": "UPDATE task SET case_region ="
    " (SELECT region FROM case_file WHERE case_file.case_id = task.case_id)",
    "case_event": "UPDATE case_event SET case_region ="
    " (SELECT region FROM case_file WHERE case_file.case_id = case_event.case_id)"
    " WHERE kind = 'clock_breached'",
}


# --------------------------------------------------------------------------- SLA board counts
#
# The board shows open tasks by scope, procedure, step and SLA state (and the length of
# each queue: procedure, step, region, consulate), and open cases by procedure, region and
# state. Counting them took most of its time at a million cases, so
# database triggers keep the counts, in the writer's own transaction, whoever writes.
# Concurrent writers never wait on each other for a count (nor deadlock): each database
# connection adds to rows of its own (`shard`: the PostgreSQL backend's process id; 0 on
# SQLite, which has one writer at a time), and the board sums the shards. At start-up, and
# when the board finds many, those rows are folded into shard 0 (fold_board_shards). A key holds '' for a missing
# region (a consular task), consulate or copy.

OPEN_TASK_SQL = "status IN ('open', 'claimed')"
OPEN_CASE_SQL = _OPEN_CASE.text


class _Count(SQLModel):
    """One connection's part (`n`, may be negative) of the count of one key."""

    shard: int = Field(primary_key=True)
    n: int = 0


class OpenTaskCountRow(_Count, table=True):
    __tablename__ = "board_open_tasks"
    region: str = Field(primary_key=True)
    case_region: str = Field(primary_key=True)
    consulate: str = Field(primary_key=True)
    procedure: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)
    sla_state: str = Field(primary_key=True)


class OpenCaseCountRow(_Count, table=True):
    __tablename__ = "board_open_cases"
    procedure: str = Field(primary_key=True)
    region: str = Field(primary_key=True)
    sla_state: str = Field(primary_key=True)


# A count's key columns, and the SQL of an open row, for each counted table.
_COUNTED = {
    "task": (
        "board_open_tasks",
        ("region", "case_region", "consulate", "procedure", "kind", "sla_state"),
    ),
    "case_file": ("board_open_cases", ("procedure", "region", "sla_state")),
}
_OPEN_SQL = {"task": OPEN_TASK_SQL, "case_file": OPEN_CASE_SQL}
_ADD = """
    INSERT INTO {counts} (shard, {key}, n) VALUES ({shard}, {values}, {n})
    ON CONFLICT (shard, {key}) DO UPDATE SET n = {counts}.n + excluded.n;"""


def _add(table: str, row: str, n: int, shard: str) -> str:
    """The statement that adds `n` to the count of `row` (OLD or NEW)."""
    counts, key = _COUNTED[table]
    # '' for a missing region: a key column is part of the primary key.
    values = ", ".join(f"coalesce({row}.{c}, '')" for c in key)
    return _ADD.format(counts=counts, key=", ".join(key), shard=shard, values=values, n=n)


def _open(table: str, row: str) -> str:
    # Both conditions are on the row's status column.
    return f"{row}.{_OPEN_SQL[table]}"


def _count_triggers(table: str, postgres: bool) -> dict[str, str]:
    """Triggers that move a row's contribution when it is written: after an insert, an
    update that moves it between counts (or into or out of them), a delete."""
    name = f"casework_count_{table}"
    columns = ("status", *_COUNTED[table][1])
    moved = (
        f"(({_open(table, 'OLD')}) OR ({_open(table, 'NEW')})) AND"
        f" ({', '.join(f'OLD.{c}' for c in columns)})"
        f" IS DISTINCT FROM ({', '.join(f'NEW.{c}' for c in columns)})"
    )
    update = f"UPDATE OF {', '.join(columns)}"
    if not postgres:  # no procedural code: one statement per trigger, with its condition
        return {
            f"{name}{suffix}": f"CREATE TRIGGER {name}{suffix} AFTER {what} ON {table}"
            f" WHEN {when} BEGIN {_add(table, row, n, '0')} END"
            for suffix, what, when, row, n in (
                ("", "INSERT", _open(table, "NEW"), "NEW", 1),
                ("_upd_old", update, f"{moved} AND {_open(table, 'OLD')}", "OLD", -1),
                ("_upd_new", update, f"{moved} AND {_open(table, 'NEW')}", "NEW", 1),
                ("_del", "DELETE", _open(table, "OLD"), "OLD", -1),
            )
        }
    shard = "pg_backend_pid()"
    ddl = f"""
        CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' AND {_open(table, "OLD")} THEN {_add(table, "OLD", -1, shard)}
            END IF;
            IF TG_OP <> 'DELETE' AND {_open(table, "NEW")} THEN {_add(table, "NEW", 1, shard)}
            END IF;
            RETURN NULL;
        END $$;
    """
    for suffix, what, when in (
        ("", "INSERT", _open(table, "NEW")),
        ("_upd", update, moved),
        ("_del", "DELETE", _open(table, "OLD")),
    ):
        ddl += (
            f"CREATE TRIGGER {name}{suffix} AFTER {what} ON {table} FOR EACH ROW"
            f" WHEN ({when}) EXECUTE FUNCTION {name}();\n"
        )
    return {name: ddl}


def _count_backfill(conn: Connection, table: str) -> None:
    """Shard 0 counts every open row (a read model that had no counts yet)."""
    counts, key = _COUNTED[table]
    rows = SQLModel.metadata.tables[table]
    values = [func.coalesce(rows.c[c], "") for c in key]
    conn.execute(
        SQLModel.metadata.tables[counts]
        .insert()
        .from_select(
            ["shard", *key, "n"],
            select(literal(0), *values, func.count())
            .where(text(_OPEN_SQL[table]))
            .group_by(*values),
        )
    )


def _fold_counts(conn: Connection, table: str) -> None:
    """The counts' rows of every connection but shard 0 move into shard 0. A row a writer
    holds is skipped, so this never waits for a writer (a writer that finds its row gone
    makes a new one)."""
    counts, key = _COUNTED[table]
    columns = ", ".join(key)
    conn.execute(
        text(
            f"WITH gone AS (DELETE FROM {counts} WHERE ctid IN ("  # noqa: S608
            f" SELECT ctid FROM {counts} WHERE shard <> 0 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {columns}, n)"
            f" INSERT INTO {counts} AS c (shard, {columns}, n)"
            f" SELECT 0, {columns}, sum(n) FROM gone GROUP BY {columns}"
            f" ON CONFLICT (shard, {columns}) DO UPDATE SET n = c.n + excluded.n"
        )
    )
    conn.execute(SQLModel.metadata.tables[counts].delete().where(text("shard = 0 AND n = 0")))


# --------------------------------------------------------------------------- SLA board hours
#
# PostgreSQL: the time in step of the tasks done on each Astana day, by procedure, step,
# task region and case region, kept by triggers as arrays of the very `hours_in_step`
# values, so the board's median and p90 over a period read a few arrays per group instead
# of every done task (exact: percentile_cont over the same values). Like the counts, each
# connection appends to rows of its own (folded into shard 0 at start-up, and by the board
# for the days before today); a task that leaves a day's set (its case moved region) is
# appended to `removed`, and the board takes `added` EXCEPT ALL `removed`.
# SQLite computes the percentiles from the rows (casework's small embedded default).


# Arrays on PostgreSQL; the table exists on SQLite too (for the same schema) but stays empty.
_HOURS = JSON().with_variant(ARRAY(Float), "postgresql")


class DoneHoursRow(SQLModel, table=True):
    __tablename__ = "board_done_hours"
    shard: int = Field(primary_key=True)
    procedure: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)
    region: str = Field(primary_key=True)  # '' for none (a consular task)
    case_region: str = Field(primary_key=True)
    day: date = Field(primary_key=True)  # of completion, Astana time
    added: list[float] = Field(sa_column=Column(_HOURS, nullable=False))
    removed: list[float] = Field(sa_column=Column(_HOURS, nullable=False))


_KZ_HOURS = int((KZ_TZ.utcoffset(None) or timedelta()).total_seconds() // 3600)
DONE_DAY_SQL = f"CAST(timezone('UTC', completed_at) + interval '{_KZ_HOURS} hours' AS date)"
_DONE = "status = 'done' AND completed_at IS NOT NULL"
_HOURS_KEY = "procedure, kind, region, case_region, day"
_HOURS_OF = (
    "SELECT pg_backend_pid(), procedure, kind, coalesce(region, ''), coalesce(case_region, ''),"
    f" {DONE_DAY_SQL}, array_agg(hours_in_step)"
)
# SQL built from this module's constants, as all here.
_APPEND_ROWS = f"""
    INSERT INTO board_done_hours (shard, {_HOURS_KEY}, added, removed)
    SELECT shard, {_HOURS_KEY}, hours, '{{}}' FROM (
        {_HOURS_OF} AS hours FROM new_rows WHERE {_DONE}
        GROUP BY 2, 3, 4, 5, 6) AS t (shard, {_HOURS_KEY}, hours)
    ON CONFLICT (shard, {_HOURS_KEY}) DO UPDATE SET
        added = board_done_hours.added || excluded.added;"""  # noqa: S608
_APPEND_ROW = """
    INSERT INTO board_done_hours (shard, procedure, kind, region, case_region, day, added, removed)
    VALUES (pg_backend_pid(), {row}.procedure, {row}.kind, coalesce({row}.region, ''),
        coalesce({row}.case_region, ''), {day}, {added}, {removed})
    ON CONFLICT (shard, procedure, kind, region, case_region, day) DO UPDATE SET
        added = board_done_hours.added || excluded.added,
        removed = board_done_hours.removed || excluded.removed;"""


def _append_row(row: str, to: str) -> str:
    hours = f"ARRAY[{row}.hours_in_step]"
    added, removed = (hours, "'{}'") if to == "added" else ("'{}'", hours)
    day = DONE_DAY_SQL.replace("completed_at", f"{row}.completed_at")
    return _APPEND_ROW.format(row=row, day=day, added=added, removed=removed)


def _done(row: str) -> str:
    return f"{row}.status = 'done' AND {row}.completed_at IS NOT NULL"


# An updated row leaves or joins a day's set when any of these changes.
_HOURS_MOVE = ("status", "completed_at", "opened_at", "procedure", "kind", "region", "case_region")
_PG_HOURS_TRIGGERS = {
    # Inserted rows a statement at a time (COPY, group commits); an update or a delete of a
    # done task, which is rare, a row at a time.
    "casework_done_hours": f"""
        CREATE OR REPLACE FUNCTION casework_done_hours_added() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN {_APPEND_ROWS}
            RETURN NULL;
        END $$;
        CREATE OR REPLACE FUNCTION casework_done_hours_moved() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' AND {_done("OLD")} THEN {_append_row("OLD", "removed")}
            END IF;
            IF TG_OP = 'UPDATE' AND {_done("NEW")} THEN {_append_row("NEW", "added")}
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER casework_done_hours AFTER INSERT ON task
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION casework_done_hours_added();
        CREATE TRIGGER casework_done_hours_upd AFTER UPDATE OF {", ".join(_HOURS_MOVE)} ON task
            FOR EACH ROW WHEN ((({_done("OLD")}) OR ({_done("NEW")}))
                AND ({", ".join(f"OLD.{c}" for c in _HOURS_MOVE)})
                IS DISTINCT FROM ({", ".join(f"NEW.{c}" for c in _HOURS_MOVE)}))
            EXECUTE FUNCTION casework_done_hours_moved();
        CREATE TRIGGER casework_done_hours_del AFTER DELETE ON task
            FOR EACH ROW WHEN ({_done("OLD")}) EXECUTE FUNCTION casework_done_hours_moved();
    """,
}
_HOURS_BACKFILL = (
    f"INSERT INTO board_done_hours (shard, {_HOURS_KEY}, added, removed)"  # noqa: S608
    f" SELECT 0, {_HOURS_KEY}, hours, '{{}}' FROM ({_HOURS_OF} FROM task WHERE {_DONE}"
    f" GROUP BY 2, 3, 4, 5, 6) AS t (shard, {_HOURS_KEY}, hours)"
)


def _fold_hours(conn: Connection, before: date | None) -> None:
    """The days' hours (of the days before `before`, or all) of every connection but shard 0
    move into shard 0, where what was removed is taken out of what was added."""
    days = "" if before is None else " AND day < :before"
    conn.execute(
        text(
            "WITH gone AS (DELETE FROM board_done_hours WHERE ctid IN ("  # noqa: S608
            f" SELECT ctid FROM board_done_hours WHERE shard <> 0{days} FOR UPDATE SKIP LOCKED)"
            f" RETURNING {_HOURS_KEY}, added, removed)"
            f" INSERT INTO board_done_hours (shard, {_HOURS_KEY}, added, removed)"
            f" SELECT 0, {_HOURS_KEY},"
            " coalesce(array_agg(h) FILTER (WHERE sign > 0), '{}'),"
            " coalesce(array_agg(h) FILTER (WHERE sign < 0), '{}')"
            f" FROM (SELECT {_HOURS_KEY}, unnest(added) AS h, 1 AS sign FROM gone"
            f" UNION ALL SELECT {_HOURS_KEY}, unnest(removed), -1 FROM gone) AS v"
            f" GROUP BY {_HOURS_KEY}"
            f" ON CONFLICT (shard, {_HOURS_KEY}) DO UPDATE SET"
            " added = board_done_hours.added || excluded.added,"
            " removed = board_done_hours.removed || excluded.removed"
        ),
        {} if before is None else {"before": before},
    )
    conn.execute(
        text(
            "UPDATE board_done_hours SET added = ARRAY(SELECT unnest(added) EXCEPT ALL"
            " SELECT unnest(removed)), removed = '{}' WHERE shard = 0 AND cardinality(removed) > 0"
        )
    )
    conn.execute(text("DELETE FROM board_done_hours WHERE shard = 0 AND added = '{}'"))


def fold_board_shards(conn: Connection, before: date | None = None, wait: bool = True) -> bool:
    """PostgreSQL: the SLA board's counts and days' hours written by each connection are
    folded into shard 0 (the hours of the days before `before`, or all), so what the board
    reads stays a few rows per key. One folder at a time (an advisory lock); with
    `wait=False` this returns False at once when another is folding."""
    lock = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    if conn.execute(text(f"SELECT {lock}(hashtext('casework.board_fold'))")).scalar() is False:
        return False
    for counted in _COUNTED:
        _fold_counts(conn, counted)
    _fold_hours(conn, before)
    return True


def _board_upgrade(conn: Connection, created: bool) -> None:
    """Add the SLA board's copies, counts and (PostgreSQL) hours to a read model that
    predates them, with their triggers; `created`: their tables were just created. The
    counts and hours are taken afresh when anything they depend on was just added."""
    postgres = conn.dialect.name == "postgresql"
    backfill = []
    for table in (TASK, CASE_EVENT):
        if "case_region" not in {c["name"] for c in inspect(conn).get_columns(table.name)}:
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN case_region VARCHAR"))
            backfill.append(_BACKFILL[table.name])
    if postgres:
        for ddl in _PG_BOARD_DDL:
            conn.exec_driver_sql(ddl)
        query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    present = set(conn.execute(text(query)).scalars())
    summing = dict(_PG_HOURS_TRIGGERS) if postgres else {}
    for counted in _COUNTED:
        summing |= _count_triggers(counted, postgres)
    missing = [name for name in summing if name not in present]

    def create(triggers: dict[str, str]) -> None:
        for name, ddl in triggers.items():
            if name not in present:
                conn.exec_driver_sql(ddl)

    # The copies first, then what counts by the copy. Creating a trigger waits for the
    # writes under way and holds off new ones until this commits: from here on every write
    # keeps them.
    create(_PG_TRIGGERS if postgres else _SQLITE_TRIGGERS)
    for sql in backfill:
        conn.execute(text(sql))
    create(summing)
    if created or backfill or missing:
        for counted, (counts, _) in _COUNTED.items():
            if postgres:
                conn.execute(text(f"LOCK TABLE {counted} IN SHARE ROW EXCLUSIVE MODE"))
            conn.execute(SQLModel.metadata.tables[counts].delete())
            _count_backfill(conn, counted)
        conn.execute(SQLModel.metadata.tables["board_done_hours"].delete())
        if postgres:
            conn.execute(text(_HOURS_BACKFILL))
    if postgres:
        fold_board_shards(conn)


def _create_indexes(conn: Connection) -> None:
    """Create the missing indexes, and again those whose columns changed since."""
    for table in SQLModel.metadata.sorted_tables:
        found = {ix["name"]: ix["column_names"] for ix in inspect(conn).get_indexes(table.name)}
        for index in table.indexes:
            if index.name in found and found[index.name] != [c.name for c in index.columns]:
                index.drop(conn)
                found.pop(index.name)
            if index.name not in found:
                index.create(conn)


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # API requests and activity threads share the pool: size it for 50+ cases in flight.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=20,
            max_overflow=40,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def create_all(engine: Engine) -> None:
    """Create missing tables, and on tables that exist already the columns, triggers and
    indexes added since (a read model created by an earlier version is brought up to date).

    One transaction; on PostgreSQL processes starting together take turns (advisory lock).
    """
    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('casework.create_all'))"))
        existed = set(inspect(conn).get_table_names())
        SQLModel.metadata.create_all(conn)
        board = ("board_open_tasks", "board_open_cases", "board_done_hours")
        _board_upgrade(conn, not existed >= set(board))
        _create_indexes(conn)


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)
