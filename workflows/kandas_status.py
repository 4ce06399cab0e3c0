"""Kandas status through the consulate "one window" (domain.md section 3).

Steps: consular document check (consulate task) → registry checks (identity, records, a
slow and sometimes unavailable security check, retried with backoff) → the LEB
commission's review with its protocol (region task, 3 WD) → settlement proposal ranked by
fit with the pre-arrival survey, one unit of the region's kandas quota reserved → the
settlement region accepts or changes it → decision (3 WD), a preliminary refusal going
through a hearing (2 WD) first → on approval: visa (MFA), support package, and the
one-window result as one bilingual PDF package; on refusal the quota unit returns.

The status then lives on: it ends on citizenship, expires after its validity, and may be
extended once (up to 6 months, decided in 2 WD) through a request on the same case.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from casework.contracts import (
        KZ_TZ,
        Actor,
        CaseProjection,
        CaseStatus,
        CaseSummary,
        DecisionForm,
        DecisionOutcome,
        DecisionRecord,
        DecisionRequest,
        GroundRef,
        HearingRecord,
        KandasResult,
        QuotaRequest,
        QuotaResult,
        Role,
        SupplyDocuments,
        TaskKind,
        TaskSpec,
    )
    from casework.kandas import (
        CheckFinding,
        CitizenshipGranted,
        CommissionForm,
        ConsularCheckForm,
        ExtensionDecisionForm,
        ExtensionRequest,
        IdentityCheckRequest,
        KandasRules,
        KandasStart,
        SecurityCheckRequest,
        SettlementForm,
        SettlementProposal,
        SettlementRequest,
        SupportPackage,
        SupportRequest,
        VisaIssued,
        VisaRequest,
        family_size,
    )
    from casework.regions import REGION_NAMES, Region

    from workflows import activity_names as act
    from workflows.case_base import (
        REGISTRY,
        CaseWorkflowBase,
        case_rules,
        decision_form_errors,
        local_step,
        problem,
        registry_query,
    )
    from workflows.legal_clock import LegalClock
    from workflows.search_attributes import CASE_REGION
    from workflows.work_permit import add_months

PROCEDURE = "kandas_status"
# The settlement proposal (ranking and a quota hold in the read-model database), the support
# package (a computation) and the quota ledger steps are idempotent per case and local:
# local steps in new cases, activities in older histories.
KANDAS_LOCAL_STEPS = "kandas-local-steps"

# The security service is slow and sometimes down: keep retrying for days, gently. The
# activity runs on its own, so a stuck check never blocks other cases.
SECURITY: workflow.ActivityConfig = {
    "start_to_close_timeout": timedelta(minutes=2),
    "schedule_to_close_timeout": timedelta(days=7),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=10),
    ),
}


def registration_projection(
    start: KandasStart, rules: KandasRules, filed_at: datetime
) -> CaseProjection:
    """The case row at registration. Pure: the API writes the same row at start (so the
    case is visible at once) and the workflow's first projection overwrites it."""
    app = start.application
    settlement_regions = [s.region for s in rules.settlement_regions]
    preferred = [r for r in app.survey.preferred_regions if r in settlement_regions]
    return CaseProjection(
        case_id=start.case_id,
        procedure=PROCEDURE,
        ruleset_version=rules.version,
        region=preferred[0] if preferred else settlement_regions[0],
        status=CaseStatus.registered,
        applicant_party=app.applicant.passport_number,
        applicant_name=app.applicant.full_name,
        consulate=start.consulate,
        summary={
            "family_size": family_size(app),
            "country_of_residence": app.country_of_residence,
            "profession": app.survey.profession,
            "preferred_regions": [r.value for r in app.survey.preferred_regions],
        },
        filed_at=filed_at,
        filed_by=start.filed_by.user_id,
        request_hash=start.request_hash,
    )


@workflow.defn
class KandasStatusWorkflow(CaseWorkflowBase):
    @workflow.init
    def __init__(self, start: KandasStart) -> None:
        super().__init__()
        self.start = start
        self.case_id = start.case_id
        self.procedure = PROCEDURE
        self.index_search_attributes = start.index_search_attributes
        self.rules: KandasRules | None = None
        self.region: Region = Region.pavlodar
        self.place: str | None = None
        self.quota: QuotaResult | None = None
        self.supplied: SupplyDocuments | None = None
        self.valid_to: date | None = None
        self.extension_request: ExtensionRequest | None = None
        self.extensions = 0
        self.citizenship: CitizenshipGranted | None = None

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, start: KandasStart) -> KandasResult:
        self.begin()
        result = await self._process(start)
        await self.settle_deliveries()
        return result

    async def _process(self, start: KandasStart) -> KandasResult:
        app = start.application
        filed_at = workflow.now()
        self.rules = rules = await case_rules(PROCEDURE, start, KandasRules, filed_at)
        self.projection = registration_projection(start, rules, filed_at)
        # Until settlement is decided the case belongs to the LEB of the first preferred
        # settlement region (its commission reviews the application).
        self.region = self.projection.region
        await self.project(
            self.event(
                "case_started",
                actor=start.filed_by.user_id,
                role=start.filed_by.role.value,
                channel=start.channel,
                consulate=start.consulate,
                ruleset_version=rules.version,
                application=app.model_dump(mode="json"),
            )
        )
        self.registered = True

        await self._consular_check()
        findings = await self._registry_checks()
        commission = await self._commission(findings)
        await self._settle()

        decision_clock = LegalClock(
            self, "decision", "decision", rules.clocks["decision"], self._on_breach
        )
        await decision_clock.start()
        doubts = sorted({*commission.doubts, *findings["proposed_grounds"]})
        task = await self.open_step(
            CaseStatus.decision,
            TaskKind.decision,
            "Decision on kandas status",
            Role.caseworker,
            self.region,
            decision_clock.due,
            {
                "commission": commission.model_dump(mode="json"),
                "findings": findings,
                "proposed_grounds": doubts,
                "settlement": {"region": self.region.value, "place": self.place},
            },
        )
        decision = DecisionForm.model_validate(await self.wait_task(task))
        if decision.decision == "refuse":
            hearing, final = await self.hold_hearing(
                consideration=decision_clock,
                clock_rule=rules.clocks["hearing"],
                grounds=[rules.ground(c).ref() for c in decision.grounds],
                intended=decision,
                notify_role=Role.consulate_officer,
                review_role=Role.caseworker,
                review_region=self.region,
            )
            if final.decision == "refuse":
                await decision_clock.stop("decision taken")
                return await self._refuse(final, hearing)
        await decision_clock.stop("decision taken")
        return await self._grant_and_live()

    # ------------------------------------------------------------------ steps

    async def _consular_check(self) -> None:
        assert self.rules is not None
        clock = LegalClock(
            self,
            "consular_check",
            "consular_check",
            self.rules.clocks["consular_check"],
            self._on_breach,
        )
        await clock.start()
        while True:
            task = await self.open_step(
                CaseStatus.consular_check,
                TaskKind.consular_check,
                "Consular document check (one window)",
                Role.consulate_officer,
                None,
                clock.due,
                consulate=self.start.consulate,
            )
            form = ConsularCheckForm.model_validate(await self.wait_task(task))
            if form.outcome == "complete":
                await clock.stop("documents complete")
                return
            self.supplied = None
            await self.set_status(CaseStatus.waiting_applicant)
            await clock.suspend("waiting for the applicant's documents")
            await self.notify(
                Role.consulate_officer,
                "documents_requested",
                "Запрос недостающих документов: " + ", ".join(form.missing_documents),
                "Жетіспейтін құжаттарды ұсыну туралы сұрау: " + ", ".join(form.missing_documents),
                missing=form.missing_documents,
            )
            await workflow.wait_condition(lambda: self.supplied is not None)
            assert self.supplied is not None
            await self.project(
                self.event(
                    "documents_supplied",
                    actor=self.supplied.actor.user_id,
                    documents=self.supplied.documents,
                )
            )
            await clock.resume()

    async def _registry_checks(self) -> dict[str, Any]:
        app = self.start.application
        await self.set_status(CaseStatus.registry_checks)
        identity_req = IdentityCheckRequest(
            passport_number=app.applicant.passport_number,
            citizenship=app.applicant.citizenship,
            full_name=app.applicant.full_name,
            birth_date=app.applicant.birth_date,
        )
        passports = [app.applicant.passport_number, *(m.passport_number for m in app.family)]
        identity, records, security = await asyncio.gather(
            registry_query(act.KANDAS_CHECK_IDENTITY, identity_req, CheckFinding),
            registry_query(act.KANDAS_CHECK_RECORDS, identity_req, CheckFinding),
            workflow.execute_activity(
                act.KANDAS_SECURITY_CHECK,
                SecurityCheckRequest(case_id=self.case_id, passport_numbers=passports),
                result_type=CheckFinding,
                **SECURITY,
            ),
        )
        found = [identity, records, security]
        proposed = []
        for f in found:
            if not f.ok:
                proposed.append({"identity_mismatch": "false_documents"}.get(f.code, f.code))
        findings = {
            "registries": [f.model_dump(mode="json") for f in found],
            "proposed_grounds": sorted(
                g for g in set(proposed) if self.rules and g in self.rules.ground_codes()
            ),
        }
        await self.project(self.event("checks_completed", findings=findings))
        return findings

    async def _commission(self, findings: dict[str, Any]) -> CommissionForm:
        assert self.rules is not None
        clock = LegalClock(
            self, "commission", "commission", self.rules.clocks["commission"], self._on_breach
        )
        await clock.start()
        task = await self.open_step(
            CaseStatus.commission_review,
            TaskKind.commission,
            "LEB commission review (protocol, video-recorded)",
            Role.caseworker,
            self.region,
            clock.due,
            {"findings": findings},
        )
        form = CommissionForm.model_validate(await self.wait_task(task))
        await clock.stop("protocol recorded")
        await self.project(
            self.event("commission_protocol", protocol=form.model_dump(mode="json")),
            summary={
                **(self.projection.summary if self.projection else {}),
                "commission": form.recommendation,
            },
        )
        return form

    async def _settle(self) -> None:
        """Propose a settlement region and reserve quota there; the region accepts or changes it."""
        assert self.rules is not None
        rules = self.rules
        app = self.start.application
        await self.set_status(CaseStatus.settlement)
        proposal = await self._propose(None)
        clock = LegalClock(
            self, "settlement", "settlement", rules.clocks["settlement"], self._on_breach
        )
        await clock.start()
        error = "" if proposal.ok else proposal.detail
        while True:
            task = await self.open_task(
                TaskKind.settlement,
                "Settlement proposal: accept or change",
                Role.caseworker,
                self.region,
                clock.due,
                {
                    "proposal": proposal.model_dump(mode="json"),
                    "survey": app.survey.model_dump(mode="json"),
                    "error": error,
                },
            )
            form = SettlementForm.model_validate(await self.wait_task(task))
            if form.action == "accept" and proposal.ok:
                break
            if form.action == "accept":
                error = "no region is reserved yet: choose one with remaining quota"
                continue
            assert form.region is not None
            previous = self.quota
            changed = await self._propose(form.region)
            if not changed.ok:
                error = changed.detail
                continue
            if previous is not None and previous.ok and previous.quota_key != changed.quota_key:
                await self._release(previous)
            proposal = changed
            if form.place:
                self.place = form.place
            break
        await clock.stop("settlement agreed")
        await self.project(
            self.event("settlement_agreed", region=self.region.value, place=self.place),
        )

    async def _propose(self, only: Region | None) -> SettlementProposal:
        assert self.rules is not None
        app = self.start.application
        proposal: SettlementProposal = await local_step(
            KANDAS_LOCAL_STEPS,
            act.KANDAS_PROPOSE_SETTLEMENT,
            SettlementRequest(
                case_id=self.case_id,
                survey=app.survey,
                family_size=family_size(app),
                quota_year=self.rules.quota_year,
                regions=self.rules.settlement_regions,
                only=only,
            ),
            SettlementProposal,
        )
        if proposal.ok and proposal.region is not None and proposal.quota_key:
            self.quota = QuotaResult(
                quota_key=proposal.quota_key, case_id=self.case_id, ok=True, state="reserved"
            )
            self.place = proposal.place
            if proposal.region != self.region:
                self.region = proposal.region
                self._upsert([CASE_REGION.value_set(self.region.value)])
        await self.project(
            self.event(
                "settlement_proposed" if proposal.ok else "settlement_unavailable",
                region=proposal.region.value if proposal.region else None,
                place=proposal.place,
                ranking=[r.model_dump(mode="json") for r in proposal.ranking],
                detail=proposal.detail,
            ),
            region=self.region,
        )
        return proposal

    async def _release(self, quota: QuotaResult) -> None:
        released: QuotaResult = await local_step(
            KANDAS_LOCAL_STEPS,
            act.QUOTA_RELEASE,
            QuotaRequest(case_id=self.case_id, quota_key=quota.quota_key),
            QuotaResult,
        )
        await self.project(self.event(f"quota_{released.state}", quota_key=released.quota_key))

    async def _refuse(self, final: DecisionForm, hearing: HearingRecord) -> KandasResult:
        assert self.rules is not None
        if self.quota is not None and self.quota.ok:
            await self._release(self.quota)
            self.quota = None
        grounds = [self.rules.ground(c).ref() for c in final.grounds]
        record = await self._issue(
            DecisionOutcome.refused,
            "decision",
            grounds=grounds,
            reasoning=final.reasoning,
            hearing=hearing,
            decided_by=self.tasks_done_by(TaskKind.objection_review),
        )
        await self.set_status(
            CaseStatus.refused, outcome=DecisionOutcome.refused, decision_number=record.number
        )
        return KandasResult(
            case_id=self.case_id,
            outcome=DecisionOutcome.refused,
            decision=record,
            final_status=self.status,
        )

    async def _grant_and_live(self) -> KandasResult:
        assert self.rules is not None
        rules = self.rules
        app = self.start.application
        today = workflow.now().astimezone(KZ_TZ).date()
        visa = await workflow.execute_activity(
            act.KANDAS_REQUEST_VISA,
            VisaRequest(
                case_id=self.case_id,
                consulate=self.start.consulate,
                full_name=app.applicant.full_name,
                passport_number=app.applicant.passport_number,
                family_passports=[m.passport_number for m in app.family],
                valid_days=rules.visa_validity_days,
            ),
            result_type=VisaIssued,
            **REGISTRY,
        )
        await self.project(
            self.event(
                "visa_issued", visa_number=visa.visa_number, valid_to=visa.valid_to.isoformat()
            )
        )
        support: SupportPackage = await local_step(
            KANDAS_LOCAL_STEPS,
            act.KANDAS_SUPPORT_PACKAGE,
            SupportRequest(
                region=self.region,
                family_size=family_size(app),
                housing_need=app.survey.housing_need,
                mci_kzt=rules.mci_kzt,
                rules=rules,
            ),
            SupportPackage,
        )
        if self.quota is not None:
            committed: QuotaResult = await local_step(
                KANDAS_LOCAL_STEPS,
                act.QUOTA_COMMIT,
                QuotaRequest(case_id=self.case_id, quota_key=self.quota.quota_key),
                QuotaResult,
            )
            await self.project(
                self.event(f"quota_{committed.state}", quota_key=committed.quota_key)
            )
        self.valid_to = add_months(today, rules.status_validity_months) - timedelta(days=1)
        region = rules.settlement(self.region)
        package = {
            "visa": visa.model_dump(mode="json"),
            "settlement": {
                "region": self.region.value,
                "region_kk": REGION_NAMES[self.region][0],
                "region_ru": REGION_NAMES[self.region][1],
                "place": self.place,
            },
            "support": support.model_dump(mode="json"),
            "priority_sectors_ru": region.priority_sectors_ru if region else [],
            "priority_sectors_kk": region.priority_sectors_kk if region else [],
            "adaptation_centre": {
                "ru": region.adaptation_centre_ru if region else "",
                "kk": region.adaptation_centre_kk if region else "",
                "phone": region.adaptation_centre_phone if region else "",
            },
            "family": [{"full_name": m.full_name, "relation": m.relation} for m in app.family],
        }
        record = await self._issue(
            DecisionOutcome.granted,
            "decision",
            valid_from=today,
            valid_to=self.valid_to,
            package=package,
            decided_by=self.tasks_done_by(TaskKind.objection_review)
            or self.tasks_done_by(TaskKind.decision),
        )
        await self.set_status(
            CaseStatus.status_active,
            outcome=DecisionOutcome.granted,
            decision_number=record.number,
            summary={
                **(self.projection.summary if self.projection else {}),
                "valid_to": self.valid_to.isoformat(),
                "visa_number": visa.visa_number,
                "place": self.place,
            },
        )
        await self.notify(
            Role.consulate_officer,
            "one_window_result",
            f"Результат «одного окна» по делу {self.case_id}: решение {record.number}, виза {visa.visa_number}.",
            f"{self.case_id} ісі бойынша «бір терезе» нәтижесі: шешім {record.number}, виза {visa.visa_number}.",
            decision_number=record.number,
        )
        return await self._live(record)

    async def _live(self, granted: DecisionRecord) -> KandasResult:
        """The status after the decision: citizenship ends it, time expires it, one extension."""
        assert self.rules is not None
        while True:
            assert self.valid_to is not None
            expires_at = (
                workflow.now()
                .astimezone(KZ_TZ)
                .replace(
                    year=self.valid_to.year,
                    month=self.valid_to.month,
                    day=self.valid_to.day,
                    hour=23,
                    minute=59,
                    second=59,
                )
            )
            delay = (expires_at - workflow.now()).total_seconds()
            try:
                await workflow.wait_condition(
                    lambda: self.citizenship is not None or self.extension_request is not None,
                    timeout=max(delay, 0.001),
                )
            except TimeoutError:
                await self.set_status(CaseStatus.status_expired)
                await self.project(self.event("status_expired", valid_to=self.valid_to.isoformat()))
                return KandasResult(
                    case_id=self.case_id,
                    outcome=DecisionOutcome.granted,
                    decision=granted,
                    final_status=self.status,
                    valid_to=self.valid_to,
                )
            if self.citizenship is not None:
                await self.set_status(CaseStatus.status_ended)
                await self.project(
                    self.event(
                        "status_ended_citizenship",
                        actor=self.citizenship.actor.user_id,
                        granted_on=self.citizenship.granted_on.isoformat(),
                        reference=self.citizenship.reference,
                    )
                )
                return KandasResult(
                    case_id=self.case_id,
                    outcome=DecisionOutcome.granted,
                    decision=granted,
                    final_status=self.status,
                    valid_to=self.valid_to,
                )
            await self._extension()

    async def _extension(self) -> None:
        assert (
            self.rules is not None
            and self.extension_request is not None
            and self.valid_to is not None
        )
        rules = self.rules
        request = self.extension_request
        clock = LegalClock(
            self,
            f"extension_{self.extensions + 1}",
            "extension",
            rules.clocks["extension"],
            self._on_breach,
        )
        await clock.start()
        task = await self.open_step(
            CaseStatus.extension_review,
            TaskKind.extension_decision,
            "Extension of kandas status",
            Role.caseworker,
            self.region,
            clock.due,
            {
                "request": request.model_dump(mode="json", exclude={"actor"}),
                "valid_to": self.valid_to.isoformat(),
            },
        )
        form = ExtensionDecisionForm.model_validate(await self.wait_task(task))
        await clock.stop("extension decided")
        self.extensions += 1
        if form.decision == "approve":
            months = min(form.months, request.months, rules.max_extension_months)
            old = self.valid_to
            self.valid_to = add_months(old + timedelta(days=1), months) - timedelta(days=1)
            await self._issue(
                DecisionOutcome.granted,
                "decision",
                valid_from=old + timedelta(days=1),
                valid_to=self.valid_to,
                reasoning=form.reasoning,
                package={"extension": {"months": months, "previous_valid_to": old.isoformat()}},
                decided_by=self.tasks[task.task_id].completed_by or "",
                key_suffix=f"extension-{self.extensions}",
            )
        await self.project(
            self.event(
                "extension_decided",
                decision=form.decision,
                months=form.months,
                valid_to=self.valid_to.isoformat(),
            ),
            summary={
                **(self.projection.summary if self.projection else {}),
                "valid_to": self.valid_to.isoformat(),
            },
        )
        self.extension_request = None
        await self.set_status(CaseStatus.status_active)

    # ------------------------------------------------------------------ helpers

    async def _issue(
        self,
        outcome: DecisionOutcome,
        template: str,
        *,
        decided_by: str,
        grounds: list[GroundRef] | None = None,
        reasoning: str = "",
        hearing: HearingRecord | None = None,
        valid_from: date | None = None,
        valid_to: date | None = None,
        package: dict[str, Any] | None = None,
        key_suffix: str = "",
    ) -> DecisionRecord:
        assert self.rules is not None
        app = self.start.application
        req = DecisionRequest(
            idempotency_key=f"{self.case_id}:{outcome.value}{':' + key_suffix if key_suffix else ''}",
            case_id=self.case_id,
            procedure=PROCEDURE,
            ruleset_version=self.rules.version,
            outcome=outcome,
            decided_at=workflow.now(),
            decided_by=decided_by,
            region=self.region,
            applicant_name=app.applicant.full_name,
            applicant_id=app.applicant.passport_number,
            subject={
                "citizenship": app.applicant.citizenship,
                "birth_date": app.applicant.birth_date.isoformat(),
                "family_size": str(family_size(app)),
                "consulate": self.start.consulate,
            },
            grounds=grounds or [],
            reasoning=reasoning,
            hearing=hearing,
            valid_from=valid_from,
            valid_to=valid_to,
            appeal_term=self.rules.appeal_term if outcome != DecisionOutcome.granted else None,
            template=template,
            package=package or {},
        )
        return await self.issue(req)

    async def _on_breach(self, clock: LegalClock) -> None:
        await self.escalate(clock)

    def summary(self) -> CaseSummary:
        assert self.rules is not None
        return CaseSummary(
            case_id=self.case_id,
            procedure=PROCEDURE,
            status=self.status,
            region=self.region,
            ruleset_version=self.rules.version,
            request_hash=self.start.request_hash,
        )

    def is_applicant(self, actor: Actor) -> bool:
        # The applicant is abroad: the consulate speaks for them in the one window.
        return actor.role == Role.consulate_officer and actor.consulate == self.start.consulate

    # ------------------------------------------------------------------ form rules

    def validate_form(self, spec: TaskSpec, form: dict[str, Any]) -> BaseModel:
        model = super().validate_form(spec, form)
        errors: list[dict[str, str]] = []
        assert self.rules is not None
        codes = self.rules.ground_codes()
        if isinstance(model, ConsularCheckForm):
            if model.outcome == "incomplete" and not model.missing_documents:
                errors.append(
                    {"name": "form.missing_documents", "reason": "list the missing documents"}
                )
            if model.outcome == "complete" and not model.translations_verified:
                errors.append(
                    {
                        "name": "form.translations_verified",
                        "reason": "translations must be verified",
                    }
                )
        elif isinstance(model, CommissionForm):
            if model.recommendation == "doubts" and not model.doubts:
                errors.append(
                    {"name": "form.doubts", "reason": "substantiate the doubts with grounds"}
                )
            for i, code in enumerate(model.doubts):
                if code not in codes:
                    errors.append(
                        {"name": f"form.doubts.{i}", "reason": f"unknown ground '{code}'"}
                    )
        elif isinstance(model, SettlementForm):
            settlement = {s.region for s in self.rules.settlement_regions}
            if model.action == "change":
                if model.region is None:
                    errors.append(
                        {"name": "form.region", "reason": "choose the new settlement region"}
                    )
                elif model.region not in settlement:
                    errors.append(
                        {
                            "name": "form.region",
                            "reason": "not a settlement region (labour or demographic deficit)",
                        }
                    )
        elif isinstance(model, DecisionForm):
            errors += decision_form_errors(model, codes)
            if model.decision == "approve" and not model.grounds and self.quota is None:
                errors.append(
                    {
                        "name": "form.decision",
                        "reason": "cannot approve: no settlement quota reserved",
                    }
                )
        elif isinstance(model, ExtensionDecisionForm):
            if model.months > self.rules.max_extension_months:
                errors.append(
                    {
                        "name": "form.months",
                        "reason": f"at most {self.rules.max_extension_months} months",
                    }
                )
        if errors:
            raise problem("InvalidForm", "the form has invalid fields", errors)
        return model

    # ------------------------------------------------------------------ updates from parties

    @workflow.update
    async def registration(self, actor: Actor) -> CaseSummary:
        """Returns once the case is in the read model (for a start retried meanwhile)."""
        await workflow.wait_condition(lambda: self.registered)
        return self.summary()

    @workflow.update
    async def supply_documents(self, req: SupplyDocuments) -> CaseSummary:
        self.supplied = req
        await workflow.wait_condition(lambda: self.registered)
        return self.summary()

    @supply_documents.validator
    def _validate_supply(self, req: SupplyDocuments) -> None:
        if not self.is_applicant(req.actor):
            raise problem(
                "Forbidden", "only the consulate of the case supplies the applicant's documents"
            )
        if self.status != CaseStatus.waiting_applicant:
            raise problem(
                "CaseState",
                "no documents were requested",
                [{"name": "documents", "reason": "not requested"}],
            )

    @workflow.update
    async def request_extension(self, req: ExtensionRequest) -> CaseSummary:
        self.extension_request = req
        await self.project(
            self.event(
                "extension_requested", actor=req.actor.user_id, months=req.months, reason=req.reason
            )
        )
        return self.summary()

    @request_extension.validator
    def _validate_extension(self, req: ExtensionRequest) -> None:
        assert self.rules is not None
        if not (
            self.is_applicant(req.actor)
            or (req.actor.role == Role.caseworker and req.actor.region == self.region)
        ):
            raise problem(
                "Forbidden",
                "only the consulate of the case or a caseworker of the settlement region",
            )
        if self.status != CaseStatus.status_active or self.extension_request is not None:
            raise problem(
                "CaseState",
                f"case is {self.status.value}: no active status to extend",
                [{"name": "case_id", "reason": "status not active"}],
            )
        if self.extensions >= self.rules.max_extensions:
            raise problem(
                "CaseState",
                "the status may be extended only once",
                [{"name": "months", "reason": "extension already used"}],
            )
        if req.months > self.rules.max_extension_months:
            raise problem(
                "InvalidForm",
                "extension too long",
                [{"name": "months", "reason": f"at most {self.rules.max_extension_months} months"}],
            )

    @workflow.update
    async def citizenship_granted(self, req: CitizenshipGranted) -> CaseSummary:
        self.citizenship = req
        return self.summary()

    @citizenship_granted.validator
    def _validate_citizenship(self, req: CitizenshipGranted) -> None:
        if req.actor.role not in (Role.caseworker, Role.system) or (
            req.actor.role == Role.caseworker and req.actor.region != self.region
        ):
            raise problem(
                "Forbidden",
                "a caseworker of the settlement region (or the registry) records citizenship",
            )
        if self.status not in (CaseStatus.status_active, CaseStatus.extension_review):
            raise problem(
                "CaseState",
                "no active status",
                [{"name": "case_id", "reason": "status not active"}],
            )
