"""Cases: start (idempotent), list and search, one case with its tasks, clocks and decisions."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, TypeAdapter
from sqlmodel import col, func, select
from starlette.concurrency import run_in_threadpool
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError
from typing_extensions import TypedDict

from api import access, policy
from api.admission import ADMITTED
from api.auth import CurrentActor
from api.deps import ClientDep, SessionDep, SettingsDep
from api.errors import Problem, from_temporal
from api.routes.tasks import task_view
from api.timing import ServerTiming
from casework.contracts import (
    KZ_TZ,
    CaseProjection,
    CaseStart,
    CaseStatus,
    CaseSummary,
    SubmitObjection,
    SupplyDocuments,
    WorkPermitApplication,
)
from casework.db import CaseEventRow, CaseRow, ClockRow, DecisionRow, NotificationRow, TaskRow
from casework.kandas import CitizenshipGranted, ExtensionRequest, KandasApplication, KandasStart
from casework.projection import case_row_values
from casework.regions import Region
from casework.rules import list_rulesets, load_rules
from workflows.case_base import CaseWorkflowBase
from workflows.kandas_status import KandasStatusWorkflow
from workflows.kandas_status import registration_projection as kandas_registration
from workflows.search_attributes import CASE_PROCEDURE, CASE_REGION, CASE_STATUS, SLA_STATE
from workflows.work_permit import WorkPermitWorkflow
from workflows.work_permit import registration_projection as work_permit_registration

WORKFLOWS: dict[str, Any] = {
    "work_permit": WorkPermitWorkflow,
    "kandas_status": KandasStatusWorkflow,
}

router = APIRouter(tags=["cases"])


class CaseList(BaseModel):
    total: int
    items: list[dict[str, Any]]


def case_number(prefix: str, caller: str, key: str) -> str:
    """A business ID derived from the caller and the Idempotency-Key: a retry maps to the same case."""
    digest = hashlib.sha256(f"{caller}\x00{key}".encode()).digest()
    return f"{prefix}-" + base64.b32encode(digest).decode()[:10]


_CASE_HIDDEN = {"rev"}  # bookkeeping of the projection, in no view of a case


def case_view(row: CaseRow) -> dict[str, Any]:
    return row.model_dump(mode="json", exclude=_CASE_HIDDEN)


class _CasePage(TypedDict):
    total: int
    items: list[CaseRow]


# A page of cases is written to JSON in one call into pydantic-core, like the inbox
# (`api/routes/tasks.py`): the same bytes as a `CaseList` of `case_view`s.
_CASE_PAGE = TypeAdapter(_CasePage)
_CASE_PAGE_EXCLUDE = {"items": {"__all__": _CASE_HIDDEN}}


def _summary(p: CaseProjection) -> CaseSummary:
    return CaseSummary(
        case_id=p.case_id,
        procedure=p.procedure,
        status=p.status,
        region=p.region,
        ruleset_version=p.ruleset_version,
        request_hash=p.request_hash,
    )


async def _start(
    *,
    workflow_cls: Any,
    start: Any,
    registration: Any,
    rules_model: Any,
    actor: Any,
    client: Any,
    settings: Any,
    session: Any,
    request: Request,
    response: Response,
    timing: ServerTiming,
) -> CaseSummary:
    """Start the case workflow, or find the case this Idempotency-Key already started.

    A new case answers as soon as Temporal has durably accepted the workflow: the API
    writes the registration row itself (the same pure function the workflow uses), so the
    case is visible at once and no request waits for a workflow task. A retry answers
    what the first request answered, from the stored case; while the first request is
    still in flight it waits for the workflow's registration.
    """
    session.close()  # no connection is held while Temporal is called
    filed = registration(start, rules_model, datetime.now(UTC))
    timing.mark("prepare")
    try:
        await client.start_workflow(
            workflow_cls.run,
            start,
            id=start.case_id,
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(CASE_PROCEDURE, start.procedure),
                    SearchAttributePair(CASE_REGION, filed.region.value),
                    SearchAttributePair(CASE_STATUS, CaseStatus.registered.value),
                    SearchAttributePair(SLA_STATE, "on_track"),
                ]
            ),
        )
    except WorkflowAlreadyStartedError:
        summary = await _started_before(workflow_cls, start, filed, actor, client, session)
    except RPCError as exc:
        raise from_temporal(exc) from exc
    else:
        timing.mark("temporal")
        await request.app.state.registrar.register(case_row_values(filed))
        timing.mark("register")
        timing.write(response)
        summary = _summary(filed)
    if summary.request_hash != start.request_hash:
        raise Problem(
            422,
            "Idempotency key reused",
            "this Idempotency-Key was used for a different application",
            kind="idempotency-key-reused",
            errors=[{"name": "Idempotency-Key", "reason": "reused with a different body"}],
        )
    response.headers["Location"] = f"/api/v1/cases/{start.case_id}"
    return summary


async def _started_before(
    workflow_cls: Any, start: Any, filed: CaseProjection, actor: Any, client: Any, session: Any
) -> CaseSummary:
    row = await run_in_threadpool(session.get, CaseRow, start.case_id)
    if row is not None:
        if row.request_hash != start.request_hash:  # another application: 422 below
            return CaseSummary(
                case_id=row.case_id,
                procedure=row.procedure,
                status=CaseStatus(row.status),
                region=Region(row.region),
                ruleset_version=row.ruleset_version,
                request_hash=row.request_hash,
            )
        # The same application again: answer what the first request answered.
        return _summary(filed.model_copy(update={"ruleset_version": row.ruleset_version}))
    try:  # the first request is still registering the case: wait for it
        summary: CaseSummary = await client.get_workflow_handle(start.case_id).execute_update(
            workflow_cls.registration, actor
        )
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise Problem(
            409, "Conflict", "case exists but is not yet visible; retry", kind="conflict"
        ) from exc
    return summary


def _hash(model: BaseModel) -> str:
    return hashlib.sha256(
        json.dumps(model.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()


def _drill_version(settings: Any, procedure: str, version: str | None) -> str | None:
    """Callers never choose the rules of a real case; only an override rule set that the
    operator installed (CASEWORK_RULESET_OVERRIDE_DIR) can be named, for an SLA drill."""
    if version is None:
        return None
    overrides = {
        r.version for r in list_rulesets(procedure, settings.ruleset_override_dir) if r.override
    }
    if version not in overrides:
        raise Problem(
            422,
            "Invalid request",
            "only an installed override rule set can be named",
            kind="invalid-request",
            errors=[
                {
                    "name": "X-Ruleset-Version",
                    "reason": f"not an override rule set; installed: {sorted(overrides)}",
                }
            ],
        )
    return version


def _rules(settings: Any, procedure: str, version: str | None) -> Any:
    """The rule set the new case runs under: named (drills) or in force today. The
    workflow is started with its version, so the API's registration row and the
    workflow agree even across midnight of a rule change."""
    return load_rules(procedure, datetime.now(KZ_TZ).date(), version, settings.ruleset_override_dir)


IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=8, max_length=128)]


@router.post(
    "/cases/work_permit", status_code=201, response_model=CaseSummary, dependencies=[ADMITTED]
)
async def start_work_permit(
    application: WorkPermitApplication,
    actor: CurrentActor,
    client: ClientDep,
    settings: SettingsDep,
    session: SessionDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey,
    ruleset_version: Annotated[
        str | None,
        Header(
            alias="X-Ruleset-Version",
            description="SLA drills only: an operator's override rule set",
        ),
    ] = None,
) -> CaseSummary:
    """Start a work-permit case; a retry with the same Idempotency-Key returns the same case."""
    timing = ServerTiming()  # the request's own work; parsing and authentication came before
    problems = application.problems(datetime.now(KZ_TZ).date())
    if problems:
        raise Problem(
            422,
            "Invalid request",
            "the application has invalid fields",
            kind="invalid-request",
            errors=problems,
        )
    policy.require_can_start(actor, "work_permit", application)
    rules = _rules(
        settings, "work_permit", _drill_version(settings, "work_permit", ruleset_version)
    )
    start = CaseStart(
        case_id=case_number("WP", actor.party or actor.user_id, idempotency_key),
        procedure="work_permit",
        application=application,
        filed_by=actor,
        request_hash=_hash(application),
        ruleset_version=rules.version,
        rules=rules.model_dump(mode="json"),
    )
    return await _start(
        workflow_cls=WorkPermitWorkflow,
        start=start,
        registration=work_permit_registration,
        rules_model=rules,
        actor=actor,
        client=client,
        settings=settings,
        session=session,
        request=request,
        response=response,
        timing=timing,
    )


@router.post(
    "/cases/kandas_status", status_code=201, response_model=CaseSummary, dependencies=[ADMITTED]
)
async def start_kandas(
    application: KandasApplication,
    actor: CurrentActor,
    client: ClientDep,
    settings: SettingsDep,
    session: SessionDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey,
) -> CaseSummary:
    """A consulate starts a kandas case (one window); idempotent like every case start."""
    timing = ServerTiming()  # the request's own work; parsing and authentication came before
    problems = application.problems(datetime.now(KZ_TZ).date())
    if problems:
        raise Problem(
            422,
            "Invalid request",
            "the application has invalid fields",
            kind="invalid-request",
            errors=problems,
        )
    consulate = policy.require_can_start_kandas(actor)
    rules = _rules(settings, "kandas_status", None)
    start = KandasStart(
        case_id=case_number("KS", consulate, idempotency_key),
        application=application,
        consulate=consulate,
        filed_by=actor,
        request_hash=_hash(application),
        ruleset_version=rules.version,
        rules=rules.model_dump(mode="json"),
    )
    return await _start(
        workflow_cls=KandasStatusWorkflow,
        start=start,
        registration=kandas_registration,
        rules_model=rules,
        actor=actor,
        client=client,
        settings=settings,
        session=session,
        request=request,
        response=response,
        timing=timing,
    )


@router.get("/cases", response_model=CaseList)
def list_cases(
    actor: CurrentActor,
    session: SessionDep,
    procedure: str | None = None,
    region: Region | None = None,
    status: CaseStatus | None = None,
    sla_state: str | None = None,
    q: Annotated[
        str | None, Query(max_length=100, description="case number or applicant BIN prefix")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """List and search the cases the caller may see, newest first."""
    stmt = select(CaseRow).where(policy.case_filter(actor))
    if procedure:
        stmt = stmt.where(CaseRow.procedure == procedure)
    if region:
        stmt = stmt.where(CaseRow.region == region.value)
    if status:
        stmt = stmt.where(CaseRow.status == status.value)
    if sla_state:
        stmt = stmt.where(CaseRow.sla_state == sla_state)
    if q:
        stmt = stmt.where(
            col(CaseRow.case_id).startswith(q) | col(CaseRow.applicant_party).startswith(q)
        )
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(
        stmt.order_by(col(CaseRow.filed_at).desc()).offset(offset).limit(limit)
    ).all()
    page = _CASE_PAGE.dump_json({"total": total, "items": list(rows)}, exclude=_CASE_PAGE_EXCLUDE)
    return Response(page, media_type="application/json")


@router.get("/cases/{case_id}")
def get_case(
    case_id: str, actor: CurrentActor, session: SessionDep, request: Request
) -> dict[str, Any]:
    """One case with its tasks, clocks, decisions and timeline."""
    row = policy.require_case(actor, session.get(CaseRow, case_id), case_id)
    access.record(session, actor, case_id, "case", request)
    tasks = session.exec(
        select(TaskRow).where(TaskRow.case_id == case_id).order_by(col(TaskRow.opened_at))
    ).all()
    clocks = session.exec(select(ClockRow).where(ClockRow.case_id == case_id)).all()
    decisions = session.exec(select(DecisionRow).where(DecisionRow.case_id == case_id)).all()
    events = session.exec(
        select(CaseEventRow).where(CaseEventRow.case_id == case_id).order_by(col(CaseEventRow.seq))
    ).all()
    visible_tasks = (
        [t for t in tasks if policy.can_see_task(actor, t)] if actor.role != "employer" else []
    )
    return {
        **case_view(row),
        "tasks": [task_view(t) for t in visible_tasks],
        "clocks": [c.model_dump(mode="json", exclude={"rev"}) for c in clocks],
        "decisions": [
            d.model_dump(mode="json", exclude={"document_path", "idempotency_key"})
            for d in decisions
        ],
        "timeline": [e.model_dump(mode="json", exclude={"id"}) for e in events],
    }


class DocumentsIn(BaseModel):
    documents: list[str]
    note: str = ""


class ObjectionIn(BaseModel):
    text: str


@router.post("/cases/{case_id}/documents", response_model=CaseSummary, dependencies=[ADMITTED])
async def supply_documents(
    case_id: str, body: DocumentsIn, actor: CurrentActor, session: SessionDep, client: ClientDep
) -> CaseSummary:
    """The employer supplies the documents the caseworker asked for; the clock resumes."""
    row = policy.require_case(actor, session.get(CaseRow, case_id), case_id)
    policy.require_applicant(actor, row)
    session.close()  # give the connection back before waiting on the workflow
    try:
        req = SupplyDocuments(actor=actor, documents=body.documents, note=body.note)
    except ValueError as exc:
        raise _invalid(exc) from None
    handle = client.get_workflow_handle(case_id)
    try:
        return await handle.execute_update(WORKFLOWS[row.procedure].supply_documents, req)  # type: ignore[no-any-return]
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise from_temporal(exc) from exc


@router.post("/cases/{case_id}/objection", response_model=CaseSummary, dependencies=[ADMITTED])
async def submit_objection(
    case_id: str, body: ObjectionIn, actor: CurrentActor, session: SessionDep, client: ClientDep
) -> CaseSummary:
    """The employer objects to an intended refusal within the hearing term."""
    row = policy.require_case(actor, session.get(CaseRow, case_id), case_id)
    policy.require_applicant(actor, row)
    session.close()  # give the connection back before waiting on the workflow
    try:
        req = SubmitObjection(actor=actor, text=body.text)
    except ValueError as exc:
        raise _invalid(exc) from None
    handle = client.get_workflow_handle(case_id)
    try:
        return await handle.execute_update(CaseWorkflowBase.submit_objection, req)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise from_temporal(exc) from exc


class ExtensionIn(BaseModel):
    months: int
    reason: str


class CitizenshipIn(BaseModel):
    granted_on: date
    reference: str


@router.post("/cases/{case_id}/extension", response_model=CaseSummary, dependencies=[ADMITTED])
async def request_extension(
    case_id: str, body: ExtensionIn, actor: CurrentActor, session: SessionDep, client: ClientDep
) -> CaseSummary:
    """Request the one extension of a kandas status (up to 6 months, decided in 2 working days)."""
    row = policy.require_case(actor, session.get(CaseRow, case_id), case_id)
    if row.procedure != "kandas_status":
        raise Problem(
            409, "Conflict", "only a kandas status can be extended here", kind="case-state"
        )
    try:
        req = ExtensionRequest(actor=actor, months=body.months, reason=body.reason)
    except ValueError as exc:
        raise _invalid(exc) from None
    try:
        return await client.get_workflow_handle(case_id).execute_update(
            KandasStatusWorkflow.request_extension, req
        )
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise from_temporal(exc) from exc


@router.post("/cases/{case_id}/citizenship", response_model=CaseSummary, dependencies=[ADMITTED])
async def record_citizenship(
    case_id: str, body: CitizenshipIn, actor: CurrentActor, session: SessionDep, client: ClientDep
) -> CaseSummary:
    """Record that the holder acquired citizenship: the kandas status ends."""
    row = policy.require_case(actor, session.get(CaseRow, case_id), case_id)
    try:
        req = CitizenshipGranted(actor=actor, granted_on=body.granted_on, reference=body.reference)
    except ValueError as exc:
        raise _invalid(exc) from None
    if row.procedure != "kandas_status":
        raise Problem(409, "Conflict", "not a kandas case", kind="case-state")
    try:
        return await client.get_workflow_handle(case_id).execute_update(
            KandasStatusWorkflow.citizenship_granted, req
        )
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise from_temporal(exc) from exc


@router.get("/notifications")
def list_notifications(
    actor: CurrentActor,
    session: SessionDep,
    case_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """Notices addressed to the caller (intended refusal, fee notice, document requests, escalations)."""
    stmt = select(NotificationRow).where(policy.notification_filter(actor))
    if case_id:
        stmt = stmt.where(NotificationRow.case_id == case_id)
    rows = session.exec(stmt.order_by(col(NotificationRow.created_at).desc()).limit(limit)).all()
    return [r.model_dump(mode="json", exclude={"id"}) for r in rows]


def _invalid(exc: ValueError) -> Problem:
    from pydantic import ValidationError

    errors = []
    if isinstance(exc, ValidationError):
        errors = [
            {"name": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]}
            for e in exc.errors()
            if e["loc"] != ("actor",)
        ]
    return Problem(
        422, "Invalid request", str(exc).splitlines()[0], kind="invalid-request", errors=errors
    )
