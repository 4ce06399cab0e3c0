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

from sqlalchemy import JSON, Column, Index, UniqueConstraint, event, text
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine

from casework.contracts import CLOSED_STATUSES
from casework.writer import BUSY_TIMEOUT_MS

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
        # SLA board: open tasks at risk or breached, most overdue first (list and count).
        _partial(
            "ix_task_sla_due",
            _SLA_TASK,
            "due_at", "opened_at", "task_id", "sla_state", "region", "procedure", "kind",
            "case_id",
        ),
        # SLA board: open tasks by queue (procedure, step, region, consulate) in work order.
        _partial(
            "ix_task_open_queue",
            _OPEN_TASK,
            "procedure", "kind", "region", "consulate", "due_at", "opened_at", "task_id",
            "sla_state", "case_id",
        ),
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
    """Create missing tables, and missing indexes on tables that exist already (a read
    model created by an earlier version gets the indexes added since)."""
    SQLModel.metadata.create_all(engine)
    with engine.begin() as conn:
        for table in SQLModel.metadata.sorted_tables:
            for index in table.indexes:
                index.create(conn, checkfirst=True)


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)
