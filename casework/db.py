"""Read-model tables (SQLModel) and the engine factory.

Written only by activities; read by the API. SQLite file by default, PostgreSQL in
production. The quota ledger and the decision register are the two places where
transactions span cases.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, Index, String, Table, UniqueConstraint, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, Session, SQLModel, create_engine

from casework.contracts import CLOSED_STATUSES
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
    # SLA board: open tasks counted by scope, procedure, step and state (in index order).
    "ix_task_open_scope",
    _t.region, _t.case_region, _t.procedure, _t.kind, _t.sla_state, _t.opened_at,
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


def _board_copies(conn: Connection) -> None:
    """Add the SLA board's copies to a read model that predates them, and their triggers."""
    postgres = conn.dialect.name == "postgresql"
    backfill = []
    for table in (TASK, CASE_EVENT):
        if "case_region" not in {c["name"] for c in inspect(conn).get_columns(table.name)}:
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN case_region VARCHAR"))
            backfill.append(_BACKFILL[table.name])
    if postgres:
        present = set(
            conn.execute(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).scalars()
        )
        for name, ddl in _PG_TRIGGERS.items():
            if name not in present:
                conn.exec_driver_sql(ddl)
    else:
        present = set(
            conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars()
        )
        for name, ddl in _SQLITE_TRIGGERS.items():
            if name not in present:
                conn.exec_driver_sql(ddl)
    # Filled once the triggers are in place: from here on every write keeps the copies.
    for sql in backfill:
        conn.execute(text(sql))
    if postgres:
        for ddl in _PG_BOARD_DDL:
            conn.exec_driver_sql(ddl)


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
        SQLModel.metadata.create_all(conn)
        _board_copies(conn)
        _create_indexes(conn)


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)
