"""Pydantic models shared by the API, the workflows and the activities.

Every workflow, update, signal and activity takes exactly one of these models, so fields
can be added compatibly. Dates travel through `pydantic_data_converter`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from casework.regions import Region

# Kazakhstan has one time zone, UTC+5, since 1 March 2024; legal days are local days.
KZ_TZ = timezone(timedelta(hours=5), "Asia/Almaty")

# --------------------------------------------------------------------------- callers


class Role(StrEnum):
    caseworker = "caseworker"
    supervisor = "supervisor"
    auditor = "auditor"
    consulate_officer = "consulate_officer"
    employer = "employer"
    system = "system"  # the engine itself, the payment gateway callback


class Actor(BaseModel):
    """Who acts: taken from the verified bearer token, never from the request body."""

    user_id: str
    role: Role
    region: Region | None = None  # caseworker / supervisor scope; None = national
    consulate: str | None = None
    party: str | None = None  # employer / agency: its BIN
    name: str | None = None


SYSTEM_ACTOR = Actor(user_id="system", role=Role.system, name="engine")

# --------------------------------------------------------------------------- durations


class DurationUnit(StrEnum):
    working_days = "working_days"
    calendar_days = "calendar_days"
    hours = "hours"
    minutes = "minutes"
    seconds = "seconds"  # drills and benchmarks only


class Term(BaseModel):
    model_config = ConfigDict(frozen=True)

    amount: int = Field(ge=0, le=3660)
    unit: DurationUnit

    def label(self) -> str:
        return f"{self.amount} {self.unit.value.replace('_', ' ')}"


class SkippedDay(BaseModel):
    day: date
    reason: str


class DeadlineRequest(BaseModel):
    start: datetime
    term: Term
    warn_fraction: float | None = Field(default=None, gt=0, lt=1)


class Deadline(BaseModel):
    """A computed legal deadline with the explanation of how it was reached."""

    start: datetime
    term: Term
    deadline: datetime
    warn_at: datetime | None = None
    counted_days: list[date] = []
    skipped_days: list[SkippedDay] = []
    calendar_version: str
    explanation: str


# --------------------------------------------------------------------------- case state


class CaseStatus(StrEnum):
    registered = "registered"
    document_check = "document_check"
    waiting_applicant = "waiting_applicant"
    registry_checks = "registry_checks"
    decision = "decision"
    hearing = "hearing"
    awaiting_payment = "awaiting_payment"
    issued = "issued"
    refused = "refused"
    lapsed = "lapsed"
    # kandas status
    consular_check = "consular_check"
    commission_review = "commission_review"
    settlement = "settlement"
    status_active = "status_active"
    extension_review = "extension_review"
    status_expired = "status_expired"
    status_ended = "status_ended"  # citizenship acquired


CLOSED_STATUSES = {
    CaseStatus.issued,
    CaseStatus.refused,
    CaseStatus.lapsed,
    CaseStatus.status_expired,
    CaseStatus.status_ended,
}


class SlaState(StrEnum):
    on_track = "on_track"
    at_risk = "at_risk"
    breached = "breached"
    suspended = "suspended"
    stopped = "stopped"


class TaskStatus(StrEnum):
    open = "open"
    claimed = "claimed"
    done = "done"
    cancelled = "cancelled"


class ClockEventKind(StrEnum):
    started = "started"
    at_risk = "at_risk"
    breached = "breached"
    suspended = "suspended"
    resumed = "resumed"
    extended = "extended"
    stopped = "stopped"


class BreachAction(StrEnum):
    escalate = "escalate"  # move to the supervisor's attention, raise priority
    raise_priority = "raise_priority"
    deemed_granted = "deemed_granted"
    supervisor_queue = "supervisor_queue"  # the task moves to the supervisors' queue
    lapse = "lapse"  # application lapses (e.g. fee not paid)


# --------------------------------------------------------------------------- work permit


class PermitCategory(StrEnum):
    heads = "1"
    unit_heads = "2"
    specialists = "3"
    skilled_workers = "4"
    seasonal = "seasonal"
    ict = "ict"  # intra-corporate transfer: outside the quota, no fee


class Employer(BaseModel):
    bin: str = Field(pattern=r"^\d{12}$", description="Business identification number (12 digits)")
    name: str = Field(min_length=2, max_length=300)


class ForeignWorker(BaseModel):
    full_name: str = Field(min_length=2, max_length=200)
    passport_number: str = Field(pattern=r"^[A-Z0-9]{5,15}$")
    citizenship: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 3166-1 alpha-3")
    birth_date: date
    education: Literal["secondary", "vocational", "higher", "postgraduate"]
    experience_years: int = Field(ge=0, le=60)


class Staffing(BaseModel):
    """Head-counts for the local-content rule, in the permit's category."""

    total_staff: int = Field(ge=0, le=1_000_000)
    citizens_in_category: int = Field(ge=0, le=1_000_000)
    foreigners_in_category: int = Field(ge=0, le=1_000_000, description="before this permit")
    is_branch: bool = False


class WorkPermitApplication(BaseModel):
    """What the employer files (form of the application)."""

    model_config = ConfigDict(extra="forbid")

    region: Region
    category: PermitCategory
    employer: Employer
    worker: ForeignWorker
    position: str = Field(min_length=2, max_length=200)
    vacancy_code: str = Field(pattern=r"^VAC-\d{4}-\d{6}$", description="Labour-exchange code")
    staffing: Staffing
    seasonal_days: Literal[90, 180, 270, 365] | None = None
    validity_years: int | None = Field(default=None, ge=1, le=3, description="category 1 only")

    def problems(self, today: date) -> list[dict[str, str]]:
        """Rules across fields, reported per field like schema errors."""
        out: list[dict[str, str]] = []
        if self.category == PermitCategory.seasonal and self.seasonal_days is None:
            out.append(
                {
                    "name": "seasonal_days",
                    "reason": "required for seasonal work (90, 180, 270 or 365)",
                }
            )
        if self.category != PermitCategory.seasonal and self.seasonal_days is not None:
            out.append({"name": "seasonal_days", "reason": "only for seasonal work"})
        if self.validity_years is not None and self.category != PermitCategory.heads:
            out.append(
                {"name": "validity_years", "reason": "only category 1 permits choose 1-3 years"}
            )
        st = self.staffing
        if st.citizens_in_category + st.foreigners_in_category > st.total_staff:
            out.append(
                {
                    "name": "staffing.total_staff",
                    "reason": "smaller than citizens_in_category + foreigners_in_category",
                }
            )
        age_days = (today - self.worker.birth_date).days
        if age_days < 18 * 365:
            out.append({"name": "worker.birth_date", "reason": "the worker must be at least 18"})
        return out


class CaseStart(BaseModel):
    """Workflow input: the application plus who filed it and how."""

    case_id: str
    procedure: str
    application: WorkPermitApplication
    filed_by: Actor
    channel: str = "api"
    request_hash: str
    ruleset_version: str | None = None  # None: the version in force on the filing date
    # The rule set itself (version `ruleset_version`), as the API loaded it to validate
    # the application: recorded in the start event, so the case needs no step to load it.
    # None (older starts, tests): the workflow loads it.
    rules: dict[str, Any] | None = None
    # The time-skipping test server cannot register custom search attributes; only its
    # tests switch indexing off. Every real server indexes.
    index_search_attributes: bool = True


# --------------------------------------------------------------------------- tasks


class TaskKind(StrEnum):
    document_check = "document_check"
    decision = "decision"
    objection_review = "objection_review"
    consular_check = "consular_check"
    commission = "commission"
    settlement = "settlement"
    extension_decision = "extension_decision"


class DocumentCheckForm(BaseModel):
    """Registration and document check by the LEB."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["complete", "incomplete"]
    missing_documents: list[str] = Field(default=[], max_length=20)
    note: str = Field(default="", max_length=2000)


class DecisionForm(BaseModel):
    """The caseworker's decision: approve, or refuse with grounds from the rule set."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "refuse"]
    grounds: list[str] = Field(default=[], max_length=10)
    reasoning: str = Field(default="", max_length=4000)


class ObjectionReviewForm(DecisionForm):
    """The final decision after the hearing, reviewing the employer's objection."""


# Procedures register their own task forms here (casework.kandas adds its forms).
FORMS: dict[TaskKind, type[BaseModel]] = {
    TaskKind.document_check: DocumentCheckForm,
    TaskKind.decision: DecisionForm,
    TaskKind.objection_review: ObjectionReviewForm,
}


class TaskSpec(BaseModel):
    """A human task as the workflow opens it (and as the inbox row shows it)."""

    task_id: str
    case_id: str
    procedure: str
    kind: TaskKind
    title: str
    role: Role
    region: Region | None = None
    consulate: str | None = None
    status: TaskStatus = TaskStatus.open
    assignee: str | None = None
    priority: int = 0
    due_at: datetime | None = None
    opened_at: datetime
    context: dict[str, Any] = {}
    form_data: dict[str, Any] | None = None
    completed_by: str | None = None
    completed_at: datetime | None = None


class ClaimTask(BaseModel):
    task_id: str
    actor: Actor


class ReleaseTask(BaseModel):
    task_id: str
    actor: Actor


class ReassignTask(BaseModel):
    """A supervisor moves a task to another caseworker, or back to the queue (to_user None)."""

    task_id: str
    actor: Actor
    to_user: str | None = Field(default=None, min_length=1, max_length=100)
    reason: str = Field(default="", max_length=500)


class CompleteTask(BaseModel):
    task_id: str
    actor: Actor
    form: dict[str, Any]


class SupplyDocuments(BaseModel):
    """The employer answers a request for missing documents."""

    actor: Actor
    documents: list[str] = Field(min_length=1, max_length=20)
    note: str = Field(default="", max_length=2000)


class SubmitObjection(BaseModel):
    """The employer objects to an intended refusal during the hearing."""

    actor: Actor
    text: str = Field(min_length=1, max_length=8000)


class PaymentReceived(BaseModel):
    """The payment gateway confirms the fee (via its signed callback)."""

    payment_id: str = Field(min_length=1, max_length=100)
    amount_kzt: int = Field(ge=0)
    paid_at: datetime


# --------------------------------------------------------------------------- decisions


class DecisionOutcome(StrEnum):
    granted = "granted"
    refused = "refused"
    lapsed = "lapsed"


class GroundRef(BaseModel):
    code: str
    rule_ref: str
    text_kk: str
    text_ru: str


class HearingRecord(BaseModel):
    notified_at: datetime
    objection_deadline: datetime
    intended_grounds: list[GroundRef]
    objection_text: str | None = None
    objection_received_at: datetime | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None


class DecisionRequest(BaseModel):
    """Everything the decision step needs: it renders, hashes, stores and registers."""

    idempotency_key: str
    case_id: str
    procedure: str
    ruleset_version: str
    outcome: DecisionOutcome
    decided_at: datetime
    decided_by: str
    region: Region
    applicant_name: str
    applicant_id: str  # BIN / IIN, shown on the document
    subject: dict[str, str] = {}  # procedure-specific lines (worker, category, position...)
    grounds: list[GroundRef] = []
    reasoning: str = ""
    hearing: HearingRecord | None = None
    valid_from: date | None = None
    valid_to: date | None = None
    permit_number: str | None = None
    fee_kzt: int | None = None
    appeal_term: Term | None = None
    template: str = "decision"  # document_templates/<template>.html
    package: dict[str, Any] = {}  # procedure-specific sections (kandas one-window result)


class DecisionRecord(BaseModel):
    number: str
    case_id: str
    outcome: DecisionOutcome
    issued_at: datetime
    valid_from: date | None = None
    valid_to: date | None = None
    permit_number: str | None = None
    sha256: str
    verification_code: str
    ruleset_version: str
    appeal_deadline: date | None = None


# --------------------------------------------------------------------------- projection


class CaseEventIn(BaseModel):
    """One entry of the human-readable case timeline, written by the projection."""

    case_id: str
    seq: int  # position in the workflow's own event counter: makes retries idempotent
    kind: str
    at: datetime
    actor: str
    data: dict[str, Any] = {}


class CaseProjection(BaseModel):
    """The case row of the read model, upserted by the workflow through an activity."""

    case_id: str
    procedure: str
    ruleset_version: str
    region: Region
    status: CaseStatus
    sla_state: SlaState = SlaState.on_track
    deadline: datetime | None = None
    applicant_party: str
    applicant_name: str
    summary: dict[str, Any] = {}
    filed_at: datetime
    filed_by: str
    request_hash: str
    outcome: DecisionOutcome | None = None
    decision_number: str | None = None
    fee_kzt: int | None = None
    consulate: str | None = None
    events: list[CaseEventIn] = []
    rev: int = 0


class ClockProjection(BaseModel):
    case_id: str
    name: str
    step: str
    state: SlaState
    term: Term
    started_at: datetime
    deadline: datetime | None
    warn_at: datetime | None
    explanation: str = ""
    skipped_days: list[SkippedDay] = []
    on_breach: BreachAction = BreachAction.escalate
    event: CaseEventIn | None = None
    rev: int = 0
    # The case row (and its timeline entries) written in the same transaction: one
    # bookkeeping step instead of two (histories from `merged-bookkeeping` on).
    case: CaseProjection | None = None


class TaskChange(BaseModel):
    task: TaskSpec
    event: CaseEventIn | None = None
    rev: int = 0


class QuotaRequest(BaseModel):
    case_id: str
    quota_key: str  # "<procedure-quota>:<region>:<category>:<year>"
    actor: str = "system"


class QuotaResult(BaseModel):
    quota_key: str
    case_id: str
    ok: bool
    state: Literal["reserved", "committed", "released", "exhausted", "unknown_quota"]
    remaining: int | None = None


class CaseSummary(BaseModel):
    """What the start call returns."""

    case_id: str
    procedure: str
    status: CaseStatus
    region: Region
    ruleset_version: str
    request_hash: str


# --------------------------------------------------------------------------- activity inputs


class LoadRules(BaseModel):
    procedure: str
    on: date
    version: str | None = None


class ResumeDeadline(BaseModel):
    """Recompute a suspended deadline: the remaining working days run again from `resumed_at`."""

    term: Term
    deadline: datetime
    suspended_at: datetime
    resumed_at: datetime
    warn_fraction: float | None = None


class Notification(BaseModel):
    """A message to a party (applicant, supervisor); delivered by the notification adapter."""

    case_id: str
    seq: int
    to_role: Role
    to_party: str | None = None
    region: Region | None = None
    kind: str
    text_ru: str
    text_kk: str = ""
    data: dict[str, Any] = {}
    # The case row and the notice's timeline entry, written in the same transaction.
    case: CaseProjection | None = None


class BookkeepingEntry(BaseModel):
    """One read-model write of a batch: exactly one of the fields is set."""

    case: CaseProjection | None = None
    task: TaskChange | None = None
    clock: ClockProjection | None = None
    notice: Notification | None = None


class BookkeepingBatch(BaseModel):
    """Read-model writes a workflow made in one step, written in order in one transaction
    (histories from `batched-bookkeeping` on)."""

    entries: list[BookkeepingEntry]


class BatchWritten(BaseModel):
    """What the worker tells the workflow after a batch: how many webhook endpoints
    subscribe to clock notices (none: the workflow schedules no delivery)."""

    webhook_endpoints: int


class VacancyCheck(BaseModel):
    vacancy_code: str
    employer_bin: str
    filed_on: date
    min_posting_days: int


class VacancyCheckResult(BaseModel):
    ok: bool
    code: str
    detail: str
    posted_on: date | None = None


class RegistryCheckRequest(BaseModel):
    employer_bin: str
    passport_number: str
    citizenship: str


class RegistryCheckResult(BaseModel):
    findings: list[dict[str, Any]]

    @property
    def problems(self) -> list[dict[str, Any]]:
        return [f for f in self.findings if not f.get("ok")]


class InvoiceRequest(BaseModel):
    case_id: str
    amount_kzt: int
    due: datetime


class InvoiceInfo(BaseModel):
    invoice_id: str
    case_id: str
    amount_kzt: int
    due: datetime
    pay_url: str


class ClockNotice(BaseModel):
    """A clock event for webhook subscribers (signed, delivered once per endpoint)."""

    event_id: str  # "<case_id>:<seq>": stable across retries, receivers dedupe on it
    case_id: str
    procedure: str
    region: Region | None
    kind: str
    at: datetime
    clock: str
    step: str
    deadline: datetime | None
    explanation: str = ""


# The workflows' results. They live here, not in the workflow modules: the sandbox
# imports a workflow's module afresh for every new case (and every replay), and a
# pydantic model defined there would have its schema built again each time (8 % of a
# worker's CPU while cases were being started, py-spy). The JSON they record is the same.
class CaseResult(BaseModel):
    case_id: str
    outcome: DecisionOutcome
    decision: DecisionRecord


class KandasResult(BaseModel):
    case_id: str
    outcome: DecisionOutcome
    decision: DecisionRecord
    final_status: CaseStatus
    valid_to: date | None = None
