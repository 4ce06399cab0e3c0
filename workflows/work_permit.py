"""Employer's permit to attract foreign labour under the annual quota (domain.md section 1).

Steps: vacancy posted 15 CD before filing → registration and document check (task) →
registry checks → local-content rule → quota unit reserved → caseworker's decision (task)
→ hearing before any refusal → fee notice, 10 WD to pay → permit issued within 1 WD of
payment; an unpaid fee lapses the application and returns the quota unit.
"""

from __future__ import annotations

import asyncio
import calendar as _cal
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from casework.contracts import (
        KZ_TZ,
        Actor,
        BreachAction,
        CaseEventIn,
        CaseProjection,
        CaseResult,
        CaseStart,
        CaseStatus,
        CaseSummary,
        DecisionForm,
        DecisionOutcome,
        DecisionRecord,
        DecisionRequest,
        DocumentCheckForm,
        GroundRef,
        HearingRecord,
        InvoiceInfo,
        InvoiceRequest,
        PaymentReceived,
        PermitCategory,
        QuotaRequest,
        QuotaResult,
        RegistryCheckRequest,
        RegistryCheckResult,
        Role,
        SlaState,
        SupplyDocuments,
        TaskKind,
        TaskSpec,
        VacancyCheck,
        VacancyCheckResult,
    )
    from casework.rules import WorkPermitRules

    from workflows import activity_names as act
    from workflows.case_base import (
        CaseWorkflowBase,
        ask_registry_durably,
        ask_registry_locally,
        batched,
        case_rules,
        decision_form_errors,
        local_step,
        patched,
        problem,
        registry_query,
    )
    from workflows.legal_clock import LegalClock

PROCEDURE = "work_permit"
# Quota ledger steps run as local steps (the ledger is in the read-model database), and
# the unit is reserved beside the registry checks; older histories have activities, and
# reserve after the checks.
LOCAL_QUOTA = "local-quota"
# A new case writes its row with its clock, and its vacancy check with its first task (two
# steps fewer); older histories write each on its own.
FIRST_STEPS_BATCHED = "first-steps-batched"
STATUS_BESIDE_CHECKS = "status-beside-checks"
FIRST_STEPS_TOGETHER = "first-steps-together"
# The `registry_checks` status is written with the checks' findings and the decision task
# when the registries answer in the local attempts (one local step fewer in the workflow
# task of a completed document check); when they do not, it is written at once and the case
# waits for them durably. Older histories write it beside the checks (`status-beside-checks`)
# or before them.
STATUS_IN_LAST_WRITE = "status-in-last-write"


def add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, _cal.monthrange(year, month)[1]))


def quota_key(rules: WorkPermitRules, region: str, category: PermitCategory) -> str:
    return f"work_permit:{region}:{category.value}:{rules.quota_year}"


def registration_projection(
    start: CaseStart, rules: WorkPermitRules, filed_at: datetime
) -> CaseProjection:
    """The case row as it is at registration. Pure: the API writes the same row at start
    (so the case is visible at once) and the workflow's first projection overwrites it."""
    app = start.application
    return CaseProjection(
        case_id=start.case_id,
        procedure=PROCEDURE,
        ruleset_version=rules.version,
        region=app.region,
        status=CaseStatus.registered,
        applicant_party=app.employer.bin,
        applicant_name=app.employer.name,
        summary={
            "category": app.category.value,
            "worker": app.worker.full_name,
            "citizenship": app.worker.citizenship,
            "position": app.position,
            "vacancy_code": app.vacancy_code,
            "fee_kzt": rules.fee_kzt(app.category, app.seasonal_days),
        },
        filed_at=filed_at,
        filed_by=start.filed_by.user_id,
        request_hash=start.request_hash,
    )


@workflow.defn
class WorkPermitWorkflow(CaseWorkflowBase):
    @workflow.init
    def __init__(self, start: CaseStart) -> None:
        super().__init__()
        self.start = start
        self.case_id = start.case_id
        self.procedure = PROCEDURE
        self.index_search_attributes = start.index_search_attributes
        self.rules: WorkPermitRules | None = None
        self.quota: QuotaResult | None = None
        self.supplied: SupplyDocuments | None = None
        self.payment: PaymentReceived | None = None
        self.fee_kzt = 0
        self.lapsed = False

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, start: CaseStart) -> CaseResult:
        self.begin()
        result = await self._process(start)
        await self.settle_deliveries()
        return result

    async def _process(self, start: CaseStart) -> CaseResult:
        app = start.application
        filed_at = workflow.now()
        self.rules = rules = await case_rules(PROCEDURE, start, WorkPermitRules, filed_at)
        self.fee_kzt = rules.fee_kzt(app.category, app.seasonal_days)
        self.projection = registration_projection(start, rules, filed_at)
        started = self.event(
            "case_started",
            actor=start.filed_by.user_id,
            role=start.filed_by.role.value,
            channel=start.channel,
            ruleset_version=rules.version,
            application=app.model_dump(mode="json"),
        )
        consideration = LegalClock(
            self, "consideration", "consideration", rules.clocks["consideration"], self._on_breach
        )
        findings: dict[str, Any] = {}
        proposed: list[str] = []
        vacancy_req = VacancyCheck(
            vacancy_code=app.vacancy_code,
            employer_bin=app.employer.bin,
            filed_on=filed_at.astimezone(KZ_TZ).date(),
            min_posting_days=rules.vacancy_min_posting_days,
        )
        if patched(FIRST_STEPS_TOGETHER):
            await self._first_steps(
                started, filed_at, consideration, vacancy_req, findings, proposed
            )
        elif patched(FIRST_STEPS_BATCHED):
            # The case row and its running clock in one write (the deadline is computed
            # first, at once), then the vacancy check's entry with the document-check task.
            async with batched():
                await self.project(started)
                await consideration.start(filed_at)
            self.registered = True
            vacancy = await registry_query(act.CHECK_VACANCY, vacancy_req, VacancyCheckResult)
            checked = self._vacancy_checked(vacancy, findings, proposed)
            await self._document_check(consideration, checked)
        else:  # the oldest histories write each on its own
            await self.project(started)
            self.registered = True
            await consideration.start(filed_at)
            vacancy = await registry_query(act.CHECK_VACANCY, vacancy_req, VacancyCheckResult)
            await self.project(self._vacancy_checked(vacancy, findings, proposed))
            await self._document_check(consideration)

        # The status is written beside the checks and the reservation (one round of local
        # steps fewer in the workflow task of a completed document check); older
        # histories write it first.
        status_beside_checks = patched(STATUS_BESIDE_CHECKS)
        if not status_beside_checks:
            await self.set_status(CaseStatus.registry_checks)
        checks_req = RegistryCheckRequest(
            employer_bin=app.employer.bin,
            passport_number=app.worker.passport_number,
            citizenship=app.worker.citizenship,
        )
        quota_req = (
            None
            if app.category in rules.quota_exempt
            else QuotaRequest(
                case_id=self.case_id, quota_key=quota_key(rules, app.region, app.category)
            )
        )
        if patched(LOCAL_QUOTA):
            # The quota unit is reserved (a local step in the read-model database) while the
            # registries answer: the decision needs both and neither depends on the other.
            status_later = patched(STATUS_IN_LAST_WRITE)
            status = (
                [self.set_status(CaseStatus.registry_checks)]
                if status_beside_checks and not status_later
                else []
            )
            outcome: list[Any] = await asyncio.gather(
                *status,
                self._registry_checks(
                    checks_req, self._show_checks_pending if status_later else None
                ),
                self._reserve_quota(quota_req),
                return_exceptions=True,
            )
            checks, reserved = outcome[-2:]
            if isinstance(reserved, BaseException):
                raise reserved
            self.quota = reserved
            if isinstance(checks, BaseException):
                # The registries never answered (a day of retries) or the case was
                # cancelled: the unit reserved meanwhile goes back to the quota.
                await self._release_quota()
                raise checks
            self._checks_findings(checks, findings, proposed)
            async with batched():
                if self.status != CaseStatus.registry_checks:  # not written yet: now
                    await self.set_status(CaseStatus.registry_checks)
                await self.project(self.event("checks_completed", findings=findings))
                task = await self._decision_task(consideration, findings, proposed)
        else:
            checks = await self._registry_checks(checks_req)
            self._checks_findings(checks, findings, proposed)
            await self.project(self.event("checks_completed", findings=findings))
            self.quota = await self._reserve_quota(quota_req)
            async with batched():
                task = await self._decision_task(consideration, findings, proposed)
        decision = DecisionForm.model_validate(await self.wait_task(task))
        if decision.decision == "refuse":
            hearing, final = await self._hearing(consideration, decision)
            if final.decision == "refuse":
                await consideration.stop("decision taken")
                return await self._refuse(final, hearing)
        return await self._grant(consideration)

    # ------------------------------------------------------------------ steps

    async def _registry_checks(
        self,
        req: RegistryCheckRequest,
        before_durable: Callable[[], Awaitable[None]] | None = None,
    ) -> RegistryCheckResult:
        result: RegistryCheckResult = await registry_query(
            act.RUN_REGISTRY_CHECKS, req, RegistryCheckResult, before_durable
        )
        return result

    async def _show_checks_pending(self) -> None:
        """The registries did not answer in the local attempts: the case shows
        `registry_checks` at once while it waits for them durably."""
        await self.set_status(CaseStatus.registry_checks)

    async def _reserve_quota(self, req: QuotaRequest | None) -> QuotaResult | None:
        return None if req is None else await self._ledger(act.QUOTA_RESERVE, req)

    async def _ledger(self, step: str, req: QuotaRequest) -> QuotaResult:
        """A quota ledger step (idempotent per case): local in new histories."""
        done: QuotaResult = await local_step(LOCAL_QUOTA, step, req, QuotaResult)
        return done

    def _checks_findings(
        self, checks: RegistryCheckResult, findings: dict[str, Any], proposed: list[str]
    ) -> None:
        assert self.rules is not None
        app = self.start.application
        findings["registries"] = checks.findings
        for f in checks.problems:
            if f.get("code") == "illegal_foreign_labour":
                proposed.append("illegal_foreign_labour")
            elif f.get("code") == "entry_ban":
                proposed.append("false_documents")
        local = self.rules.local_content.check(app.category, app.staffing)
        findings["local_content"] = local.model_dump(mode="json")
        if not local.ok:
            proposed.append("local_content_unmet")

    async def _decision_task(
        self, consideration: LegalClock, findings: dict[str, Any], proposed: list[str]
    ) -> TaskSpec:
        """The quota's outcome on the timeline, then the decision task with every finding."""
        if self.quota is not None:
            findings["quota"] = self.quota.model_dump(mode="json")
            if not self.quota.ok:
                proposed.append("quota_exhausted")
            await self.project(
                self.event(f"quota_{self.quota.state}", quota_key=self.quota.quota_key)
            )
        return await self.open_step(
            CaseStatus.decision,
            TaskKind.decision,
            "Decision on the work permit",
            Role.caseworker,
            self.start.application.region,
            consideration.due,
            {"findings": findings, "proposed_grounds": sorted(set(proposed))},
        )

    async def _first_steps(
        self,
        started: CaseEventIn,
        filed_at: datetime,
        consideration: LegalClock,
        vacancy_req: VacancyCheck,
        findings: dict[str, Any],
        proposed: list[str],
    ) -> None:
        """A new case's first steps in one write: the labour exchange is asked while the
        deadline is computed, then the case row, its running clock, the check's timeline
        entry and the document-check task are written together. If the exchange does not
        answer in the local attempts, the case row and clock are written first and it is
        asked durably (the case waits; its clock runs)."""
        asked = asyncio.ensure_future(
            ask_registry_locally(act.CHECK_VACANCY, vacancy_req, VacancyCheckResult)
        )
        first: TaskSpec | None = None
        async with batched():
            await self.project(started)
            await consideration.start(filed_at)
            vacancy: VacancyCheckResult | None = await asked
            if vacancy is not None:
                checked = self._vacancy_checked(vacancy, findings, proposed)
                first = await self._open_document_check(consideration, checked)
        self.registered = True
        if vacancy is None:
            vacancy = await ask_registry_durably(act.CHECK_VACANCY, vacancy_req, VacancyCheckResult)
            checked = self._vacancy_checked(vacancy, findings, proposed)
            await self._document_check(consideration, checked)
        else:
            await self._document_check(consideration, opened=first)

    def _vacancy_checked(
        self, vacancy: VacancyCheckResult, findings: dict[str, Any], proposed: list[str]
    ) -> CaseEventIn:
        """The labour exchange's answer among the findings, and its timeline entry."""
        findings["vacancy"] = vacancy.model_dump(mode="json")
        if not vacancy.ok:
            proposed.append("vacancy_not_posted")
        return self.event("vacancy_checked", **findings["vacancy"])

    async def _open_document_check(
        self, consideration: LegalClock, before: CaseEventIn | None = None
    ) -> TaskSpec:
        """The document-check task (status and task in one write); `before`: a timeline
        entry written in the same step."""
        async with batched():  # open_step's own block joins this one
            if before is not None:
                await self.project(before)
            return await self.open_step(
                CaseStatus.document_check,
                TaskKind.document_check,
                "Registration and document check",
                Role.caseworker,
                self.start.application.region,
                consideration.due,
            )

    async def _document_check(
        self,
        consideration: LegalClock,
        before: CaseEventIn | None = None,
        opened: TaskSpec | None = None,
    ) -> None:
        """The document-check task, again after each supply of missing documents; `before`:
        a timeline entry written in the same step as the first task; `opened`: the first
        task, if already open."""
        while True:
            task = opened or await self._open_document_check(consideration, before)
            opened = before = None
            form = DocumentCheckForm.model_validate(await self.wait_task(task))
            if form.outcome == "complete":
                return
            self.supplied = None
            async with batched():
                await self.set_status(CaseStatus.waiting_applicant)
                await consideration.suspend("waiting for the employer's missing documents")
                await self.notify(
                    Role.employer,
                    "documents_requested",
                    "Запрос недостающих документов: " + ", ".join(form.missing_documents),
                    "Жетіспейтін құжаттарды ұсыну туралы сұрау: "
                    + ", ".join(form.missing_documents),
                    missing=form.missing_documents,
                )
            await workflow.wait_condition(lambda: self.supplied is not None)
            assert self.supplied is not None
            async with batched():
                await self.project(
                    self.event(
                        "documents_supplied",
                        actor=self.supplied.actor.user_id,
                        documents=self.supplied.documents,
                    )
                )
                await consideration.resume()

    async def _hearing(
        self, consideration: LegalClock, intended: DecisionForm
    ) -> tuple[HearingRecord, DecisionForm]:
        assert self.rules is not None
        return await self.hold_hearing(
            consideration=consideration,
            clock_rule=self.rules.clocks["hearing"],
            grounds=[self.rules.ground(code).ref() for code in intended.grounds],
            intended=intended,
            notify_role=Role.employer,
            review_role=Role.caseworker,
            review_region=self.start.application.region,
        )

    async def _refuse(self, final: DecisionForm, hearing: HearingRecord) -> CaseResult:
        assert self.rules is not None
        grounds = [self.rules.ground(code).ref() for code in final.grounds]
        await self._release_quota()
        return await self._conclude(
            DecisionOutcome.refused,
            CaseStatus.refused,
            grounds=grounds,
            reasoning=final.reasoning,
            hearing=hearing,
            decided_by=self.tasks_done_by(TaskKind.objection_review),
        )

    async def _grant(self, consideration: LegalClock) -> CaseResult:
        assert self.rules is not None
        rules = self.rules
        fee_clock: LegalClock | None = None
        if self.fee_kzt <= 0:
            await consideration.stop("decision taken")
        else:
            # The decision taken, the fee asked and its clock started: one write.
            async with batched():
                await consideration.stop("decision taken")
                await self.set_status(CaseStatus.awaiting_payment, fee_kzt=self.fee_kzt)
                fee_clock = LegalClock(
                    self, "fee_payment", "fee_payment", rules.clocks["fee_payment"], self._on_breach
                )
                due = await fee_clock.start()
            # One invoice per case (its id is the case's), so a repeated call is safe.
            invoice: InvoiceInfo = await registry_query(
                act.CREATE_INVOICE,
                InvoiceRequest(case_id=self.case_id, amount_kzt=self.fee_kzt, due=due.deadline),
                InvoiceInfo,
            )
            await self.notify(
                Role.employer,
                "fee_notice",
                f"Уведомление об оплате сбора: {self.fee_kzt} тенге до {due.deadline.astimezone(KZ_TZ):%d.%m.%Y}.",
                f"Алымды төлеу туралы хабарлама: {self.fee_kzt} теңге, {due.deadline.astimezone(KZ_TZ):%d.%m.%Y} дейін.",
                invoice_id=invoice.invoice_id,
                amount_kzt=self.fee_kzt,
                due=due.deadline.isoformat(),
                pay_url=invoice.pay_url,
            )
            await workflow.wait_condition(lambda: self.payment is not None or self.lapsed)
            if self.payment is None:
                await fee_clock.stop("fee not paid in time: application lapsed")
                await self._release_quota()
                return await self._conclude(
                    DecisionOutcome.lapsed, CaseStatus.lapsed, decided_by="system"
                )
        issuance = LegalClock(
            self, "issuance", "issuance", rules.clocks["issuance"], self._on_breach
        )
        async with batched():
            if fee_clock is not None:
                await fee_clock.stop("fee paid")
            await issuance.start()
            if self.quota is not None:
                committed = await self._ledger(
                    act.QUOTA_COMMIT,
                    QuotaRequest(case_id=self.case_id, quota_key=self.quota.quota_key),
                )
                await self.project(
                    self.event(f"quota_{committed.state}", quota_key=committed.quota_key)
                )
        valid_from, valid_to = self._validity()
        return await self._conclude(
            DecisionOutcome.granted,
            CaseStatus.issued,
            (issuance, "permit issued"),
            valid_from=valid_from,
            valid_to=valid_to,
            decided_by=self.tasks_done_by(TaskKind.objection_review)
            or self.tasks_done_by(TaskKind.decision),
        )

    async def _conclude(
        self,
        outcome: DecisionOutcome,
        status: CaseStatus,
        stop: tuple[LegalClock, str] | None = None,
        **decision: Any,
    ) -> CaseResult:
        """The decision step, then its timeline entry, the last clock stopped and the final
        status, written in one step."""
        async with batched():
            record = await self._issue(outcome, **decision)
            if stop is not None:
                await stop[0].stop(stop[1])
            await self.set_status(status, outcome=outcome, decision_number=record.number)
        return CaseResult(case_id=self.case_id, outcome=outcome, decision=record)

    # ------------------------------------------------------------------ helpers

    def _validity(self) -> tuple[date, date]:
        assert self.rules is not None
        app = self.start.application
        start = workflow.now().astimezone(KZ_TZ).date()
        if app.category == PermitCategory.seasonal:
            return start, start + timedelta(days=(app.seasonal_days or 90) - 1)
        months = self.rules.validity[app.category].months
        if app.category == PermitCategory.heads and app.validity_years:
            months = 12 * app.validity_years
        return start, add_months(start, months) - timedelta(days=1)

    async def _release_quota(self) -> None:
        if self.quota is None or not self.quota.ok:
            return
        released = await self._ledger(
            act.QUOTA_RELEASE, QuotaRequest(case_id=self.case_id, quota_key=self.quota.quota_key)
        )
        await self.project(self.event(f"quota_{released.state}", quota_key=released.quota_key))

    async def _issue(
        self,
        outcome: DecisionOutcome,
        *,
        decided_by: str,
        grounds: list[GroundRef] | None = None,
        reasoning: str = "",
        hearing: HearingRecord | None = None,
        valid_from: date | None = None,
        valid_to: date | None = None,
    ) -> DecisionRecord:
        """The decision step: render, hash, store and register; idempotent per case and outcome."""
        assert self.rules is not None
        app = self.start.application
        req = DecisionRequest(
            idempotency_key=f"{self.case_id}:{outcome.value}",
            case_id=self.case_id,
            procedure=PROCEDURE,
            ruleset_version=self.rules.version,
            outcome=outcome,
            decided_at=workflow.now(),
            decided_by=decided_by,
            region=app.region,
            applicant_name=app.employer.name,
            applicant_id=app.employer.bin,
            subject={
                "worker": app.worker.full_name,
                "passport": app.worker.passport_number,
                "citizenship": app.worker.citizenship,
                "category": app.category.value,
                "position": app.position,
                "vacancy_code": app.vacancy_code,
            },
            grounds=grounds or [],
            reasoning=reasoning,
            hearing=hearing,
            valid_from=valid_from,
            valid_to=valid_to,
            fee_kzt=self.fee_kzt if outcome == DecisionOutcome.granted else None,
            appeal_term=self.rules.appeal_term if outcome != DecisionOutcome.granted else None,
        )
        return await self.issue(req)

    async def _on_breach(self, clock: LegalClock) -> None:
        if clock.rule.on_breach == BreachAction.lapse:
            self.lapsed = True
            return
        await self.escalate(clock)

    # ------------------------------------------------------------------ updates from parties

    @workflow.update
    async def registration(self, actor: Actor) -> CaseSummary:
        """Returns once the case is in the read model (for a start retried meanwhile)."""
        await workflow.wait_condition(lambda: self.registered)
        return self.summary()

    # The party updates below end with `wait_condition(registered)` (always true by then):
    # recorded histories contain that yield point, so removing it breaks replay.
    def summary(self) -> CaseSummary:
        assert self.rules is not None and self.projection is not None
        return CaseSummary(
            case_id=self.case_id,
            procedure=PROCEDURE,
            status=self.status,
            region=self.projection.region,
            ruleset_version=self.rules.version,
            request_hash=self.start.request_hash,
        )

    def is_applicant(self, actor: Actor) -> bool:
        app = self.start.application
        if actor.role == Role.employer:
            return actor.party == app.employer.bin
        return actor.role == Role.caseworker and actor.region == app.region

    @workflow.update
    async def supply_documents(self, req: SupplyDocuments) -> CaseSummary:
        self.supplied = req
        await workflow.wait_condition(lambda: self.registered)
        return self.summary()

    @supply_documents.validator
    def _validate_supply(self, req: SupplyDocuments) -> None:
        if not self.is_applicant(req.actor):
            raise problem(
                "Forbidden",
                "only the employer (or a caseworker of the region) may supply documents",
            )
        if self.status != CaseStatus.waiting_applicant:
            raise problem(
                "CaseState",
                "no documents were requested",
                [{"name": "documents", "reason": "not requested"}],
            )

    @workflow.update
    async def payment_received(self, p: PaymentReceived) -> CaseSummary:
        if self.payment is None:
            self.payment = p
            await self.project(
                self.event(
                    "fee_paid",
                    actor="payment_gateway",
                    payment_id=p.payment_id,
                    amount_kzt=p.amount_kzt,
                )
            )
        await workflow.wait_condition(lambda: self.registered)
        return self.summary()

    @payment_received.validator
    def _validate_payment(self, p: PaymentReceived) -> None:
        if self.payment is not None and self.payment.payment_id == p.payment_id:
            return  # the gateway retried its callback: acknowledge again
        if self.status != CaseStatus.awaiting_payment or self.lapsed:
            raise problem(
                "CaseState",
                f"case is {self.status.value}: no fee is due",
                [{"name": "case_id", "reason": "no fee due"}],
            )
        if p.amount_kzt != self.fee_kzt:
            raise problem(
                "InvalidPayment",
                "amount does not match the fee",
                [{"name": "amount_kzt", "reason": f"expected {self.fee_kzt}"}],
            )

    # ------------------------------------------------------------------ form rules

    def validate_form(self, spec: TaskSpec, form: dict[str, Any]) -> BaseModel:
        model = super().validate_form(spec, form)
        errors: list[dict[str, str]] = []
        if isinstance(model, DocumentCheckForm):
            if model.outcome == "incomplete" and not model.missing_documents:
                errors.append(
                    {"name": "form.missing_documents", "reason": "list the missing documents"}
                )
        elif isinstance(model, DecisionForm):
            assert self.rules is not None
            errors += decision_form_errors(model, self.rules.ground_codes())
            if model.decision == "approve" and self.quota is not None and not self.quota.ok:
                errors.append(
                    {
                        "name": "form.decision",
                        "reason": "cannot approve: no quota unit could be reserved",
                    }
                )
        if errors:
            raise problem("InvalidForm", "the form has invalid fields", errors)
        return model


_ = SlaState  # re-exported for tests reading the state
