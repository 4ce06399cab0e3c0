"""Kandas status through the consulate "one window" (domain.md section 3): contracts and rules.

An ethnic Kazakh abroad applies at a foreign mission and receives, from that one
application, the status decision, the entry visa, the settlement region and place, the
support measures there and information on priority sectors. Settlement is steered only to
regions with a demographic or labour deficit, within the regional kandas quota.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from casework.contracts import Actor, GroundRef, Term
from casework.regions import Region
from casework.rules import Authority, ClockRule


class Person(BaseModel):
    full_name: str = Field(min_length=2, max_length=200)
    birth_date: date
    passport_number: str = Field(pattern=r"^[A-Z0-9]{5,15}$")
    citizenship: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 3166-1 alpha-3")


class FamilyMember(Person):
    relation: Literal["spouse", "child", "parent", "sibling", "other"]


class EthnicityProof(BaseModel):
    kind: Literal["document", "commission_recommendation"]
    reference: str = Field(
        min_length=2, max_length=200, description="document number / recommendation ref"
    )


class Survey(BaseModel):
    """The pre-arrival survey: professional and personal preferences."""

    model_config = ConfigDict(extra="forbid")

    profession: str = Field(min_length=2, max_length=100)
    education: Literal["secondary", "vocational", "higher", "postgraduate"]
    experience_years: int = Field(ge=0, le=60)
    languages: list[str] = Field(
        default=[], max_length=10, description="ISO 639-1 codes, e.g. kk, ru, zh"
    )
    preferred_regions: list[Region] = Field(default=[], max_length=5)
    housing_need: Literal["none", "rent", "purchase"] = "rent"


class KandasApplication(BaseModel):
    model_config = ConfigDict(extra="forbid")

    applicant: Person
    family: list[FamilyMember] = Field(default=[], max_length=15)
    ethnicity_proof: EthnicityProof
    survey: Survey
    country_of_residence: str = Field(pattern=r"^[A-Z]{3}$")

    def problems(self, today: date) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        if (today - self.applicant.birth_date).days < 18 * 365:
            out.append(
                {"name": "applicant.birth_date", "reason": "the applicant must be at least 18"}
            )
        seen = {self.applicant.passport_number}
        for i, member in enumerate(self.family):
            if member.passport_number in seen:
                out.append(
                    {"name": f"family.{i}.passport_number", "reason": "duplicate passport number"}
                )
            seen.add(member.passport_number)
        if len(set(self.survey.preferred_regions)) != len(self.survey.preferred_regions):
            out.append({"name": "survey.preferred_regions", "reason": "a region is listed twice"})
        return out


class KandasStart(BaseModel):
    case_id: str
    procedure: str = "kandas_status"
    application: KandasApplication
    consulate: str
    filed_by: Actor
    channel: str = "consulate_one_window"
    request_hash: str
    ruleset_version: str | None = None
    rules: dict[str, Any] | None = None  # as in CaseStart: the rule set the API loaded
    index_search_attributes: bool = True


# --------------------------------------------------------------------------- forms


class ConsularCheckForm(BaseModel):
    """Consular document check: completeness and notarised translations."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["complete", "incomplete"]
    missing_documents: list[str] = Field(default=[], max_length=20)
    translations_verified: bool
    note: str = Field(default="", max_length=2000)


class CommissionForm(BaseModel):
    """The LEB commission's protocol (video-recorded meeting)."""

    model_config = ConfigDict(extra="forbid")

    protocol_number: str = Field(min_length=1, max_length=50)
    members: list[str] = Field(min_length=3, max_length=15)
    recommendation: Literal["grant", "doubts"]
    doubts: list[str] = Field(
        default=[], max_length=10, description="refusal ground codes when in doubt"
    )
    reasoning: str = Field(default="", max_length=4000)


class SettlementForm(BaseModel):
    """The settlement region's caseworker accepts or changes the proposal (within quota)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["accept", "change"]
    region: Region | None = None
    place: str | None = Field(default=None, max_length=200)
    note: str = Field(default="", max_length=2000)


class KandasDecisionForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "refuse"]
    grounds: list[str] = Field(default=[], max_length=10)
    reasoning: str = Field(default="", max_length=4000)


class ExtensionDecisionForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "refuse"]
    months: int = Field(default=6, ge=1, le=6)
    reasoning: str = Field(default="", max_length=4000)


class ExtensionRequest(BaseModel):
    actor: Actor
    months: int = Field(ge=1, le=12)
    reason: str = Field(min_length=3, max_length=2000)


class CitizenshipGranted(BaseModel):
    """The status ends on citizenship: an event from the registry adapter or a caseworker."""

    actor: Actor
    granted_on: date
    reference: str = Field(min_length=1, max_length=100)


# --------------------------------------------------------------------------- rules


class SettlementRegion(BaseModel):
    region: Region
    places: list[str]
    demand: list[str] = []  # professions in labour demand (lower case keywords)
    priority_sectors_ru: list[str] = []
    priority_sectors_kk: list[str] = []
    rent_mci_per_month: int = Field(ge=15, le=30)
    adaptation_centre_ru: str
    adaptation_centre_kk: str
    adaptation_centre_phone: str


class KandasRefusalGround(BaseModel):
    code: str
    rule_ref: str
    text_kk: str
    text_ru: str
    text_en: str

    def ref(self) -> GroundRef:
        return GroundRef(
            code=self.code, rule_ref=self.rule_ref, text_kk=self.text_kk, text_ru=self.text_ru
        )


class KandasRules(BaseModel):
    procedure: str = "kandas_status"
    version: str
    effective_from: date
    source: str
    mci_kzt: int
    quota_year: int
    clocks: dict[
        str, ClockRule
    ]  # consular_check, commission, settlement, decision, hearing, extension
    status_validity_months: int = 12
    max_extensions: int = 1
    max_extension_months: int = 6
    relocation_mci_per_member: int = 70
    rent_months: int = 12
    mobility_certificate_max_mci: int = 1625
    visa_validity_days: int = 90
    settlement_regions: list[SettlementRegion]
    refusal_grounds: list[KandasRefusalGround]
    appeal_term: Term
    appeal_route_kk: str
    appeal_route_ru: str
    authority: Authority

    def ground(self, code: str) -> KandasRefusalGround:
        return next(g for g in self.refusal_grounds if g.code == code)

    def ground_codes(self) -> set[str]:
        return {g.code for g in self.refusal_grounds}

    def settlement(self, region: Region) -> SettlementRegion | None:
        return next((s for s in self.settlement_regions if s.region == region), None)


# --------------------------------------------------------------------------- activity contracts


class RankedRegion(BaseModel):
    region: Region
    score: float
    remaining: int
    reasons: list[str]


class SettlementRequest(BaseModel):
    case_id: str
    survey: Survey
    family_size: int
    quota_year: int
    regions: list[SettlementRegion]
    exclude: list[Region] = []
    only: Region | None = None  # a caseworker's choice: reserve exactly there


class SettlementProposal(BaseModel):
    ok: bool
    region: Region | None = None
    place: str | None = None
    quota_key: str | None = None
    ranking: list[RankedRegion] = []
    detail: str = ""


class SupportRequest(BaseModel):
    region: Region
    family_size: int
    housing_need: str
    mci_kzt: int
    rules: KandasRules


class SupportLine(BaseModel):
    code: str
    title_ru: str
    title_kk: str
    mci: int
    kzt: int
    note_ru: str = ""
    note_kk: str = ""


class SupportPackage(BaseModel):
    lines: list[SupportLine]
    total_mci: int
    total_kzt: int
    mobility_certificate_eligible: bool
    mci_kzt: int


class IdentityCheckRequest(BaseModel):
    passport_number: str
    citizenship: str
    full_name: str
    birth_date: date


class SecurityCheckRequest(BaseModel):
    case_id: str
    passport_numbers: list[str]


class CheckFinding(BaseModel):
    registry: str
    ok: bool
    code: str
    detail: str


class VisaRequest(BaseModel):
    case_id: str
    consulate: str
    full_name: str
    passport_number: str
    family_passports: list[str] = []
    valid_days: int


class VisaIssued(BaseModel):
    visa_number: str
    category: str
    valid_from: date
    valid_to: date
    entries: str = "single"


def family_size(app: KandasApplication) -> int:
    return 1 + len(app.family)


def _register_forms() -> None:
    from casework.contracts import FORMS, TaskKind

    FORMS[TaskKind.consular_check] = ConsularCheckForm
    FORMS[TaskKind.commission] = CommissionForm
    FORMS[TaskKind.settlement] = SettlementForm
    FORMS[TaskKind.extension_decision] = ExtensionDecisionForm


_register_forms()
