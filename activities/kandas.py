"""Kandas "one window" activities: settlement proposal within the regional quota, support
measures, and the consulate's checks and visa (domain.md section 3).

The pure part (ranking, place, support package) is deterministic and explainable: every
point of a region's score comes with a reason the caseworker can read. The settlement
proposal reserves one unit of the region's kandas pool in the quota ledger; the ledger's
atomic reserve decides who gets the last unit, so a region read as available may still be
lost to another case, and the proposal then moves on to the next region.

The external systems (AIS "Kandas", UIS "Berkut", the national security committee, the MFA
visa system) are simulators with the same latency, outage and deterministic-answer pattern
as `activities.registries`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.quota import ledger_entries, quota_key, quota_view, reserve
from activities.registries import RegistryUnavailable, _Simulator
from casework.contracts import KZ_TZ, QuotaRequest
from casework.kandas import (
    CheckFinding,
    IdentityCheckRequest,
    RankedRegion,
    SecurityCheckRequest,
    SettlementProposal,
    SettlementRegion,
    SettlementRequest,
    SupportLine,
    SupportPackage,
    SupportRequest,
    Survey,
    VisaIssued,
    VisaRequest,
)
from casework.regions import REGION_NAMES, Region
from workflows import activity_names as act

__all__ = [
    "CHECK_IDENTITY",
    "CHECK_RECORDS",
    "PROPOSE_SETTLEMENT",
    "QUOTA_CATEGORY",
    "QUOTA_KIND",
    "REQUEST_VISA",
    "SECURITY_CHECK",
    "SUPPORT_PACKAGE",
    "AisKandas",
    "KandasActivities",
    "KandasRegistries",
    "MfaVisas",
    "PersonRecords",
    "RegistryUnavailable",
    "SecurityService",
    "SimulatedAisKandas",
    "SimulatedMfaVisa",
    "SimulatedRecords",
    "SimulatedSecurityCheck",
    "choose_place",
    "rank_regions",
    "simulated_kandas_registries",
    "support_package",
]

# Activity names. They belong in workflows/activity_names.py (workflows must not import
# activity code); kept here until that file gains them.
PROPOSE_SETTLEMENT = act.KANDAS_PROPOSE_SETTLEMENT
SUPPORT_PACKAGE = act.KANDAS_SUPPORT_PACKAGE
CHECK_IDENTITY = act.KANDAS_CHECK_IDENTITY
CHECK_RECORDS = act.KANDAS_CHECK_RECORDS
SECURITY_CHECK = act.KANDAS_SECURITY_CHECK
REQUEST_VISA = act.KANDAS_REQUEST_VISA

QUOTA_KIND = "kandas"
QUOTA_CATEGORY = "kandas"

# --------------------------------------------------------------------------- ranking

# Earlier preferences weigh more; five is the survey's maximum.
_PREFERENCE_POINTS = (50, 40, 30, 20, 10)
_DEMAND_POINTS = 30
_RENT_POINTS = 10
_QUOTA_POINTS = 10
# The rule set's range for rent support (SettlementRegion.rent_mci_per_month): fixed bounds
# keep a region's rent points independent of which other regions happen to be ranked.
_RENT_MIN_MCI = 15
_RENT_MAX_MCI = 30


def _pts(points: float) -> str:
    return f"+{points:g}"


def _demand_match(profession: str, demand: list[str]) -> str | None:
    wanted = profession.strip().lower()
    for keyword in demand:
        kw = keyword.strip().lower()
        # An empty keyword is a substring of everything: it must not match.
        if kw and wanted and (kw in wanted or wanted in kw):
            return kw
    return None


def rank_regions(
    survey: Survey,
    family_size: int,
    regions: list[SettlementRegion],
    remaining: dict[Region, int],
) -> list[RankedRegion]:
    """Settlement regions with kandas quota left, best first, each score with its reasons.

    Only regions in `regions` with `remaining` > 0 appear: an exhausted (or missing) pool is
    never proposed. Scores are rounded to one decimal so that ties are real ties and the
    order (score desc, remaining desc, region name) is reproducible.

    `family_size` does not change the score: the ledger counts one unit per case (one
    family), so every region with a unit left can take the whole family.
    """
    del family_size
    seen: set[Region] = set()
    eligible: list[SettlementRegion] = []
    for region in regions:
        if region.region not in seen and remaining.get(region.region, 0) > 0:
            seen.add(region.region)
            eligible.append(region)
    if not eligible:
        return []
    most_remaining = max(remaining[r.region] for r in eligible)
    preferences = list(survey.preferred_regions)
    wants_housing = survey.housing_need in ("rent", "purchase")

    ranked: list[RankedRegion] = []
    for region in eligible:
        left = remaining[region.region]
        score = 0.0
        reasons: list[str] = []

        if region.region in preferences:
            rank = preferences.index(region.region)
            preference = _PREFERENCE_POINTS[min(rank, len(_PREFERENCE_POINTS) - 1)]
            score += preference
            reasons.append(f"preferred region #{rank + 1} ({_pts(preference)})")

        keyword = _demand_match(survey.profession, region.demand)
        if keyword is not None:
            score += _DEMAND_POINTS
            profession = survey.profession.strip()
            if keyword == profession.lower():
                reasons.append(
                    f"profession '{profession}' in labour demand ({_pts(_DEMAND_POINTS)})"
                )
            else:
                reasons.append(
                    f"profession '{profession}' matches labour demand '{keyword}' "
                    f"({_pts(_DEMAND_POINTS)})"
                )

        if wants_housing:
            span = _RENT_MAX_MCI - _RENT_MIN_MCI
            cheapness = (_RENT_MAX_MCI - region.rent_mci_per_month) / span
            housing = round(_RENT_POINTS * min(1.0, max(0.0, cheapness)), 1)
            if housing > 0:
                score += housing
                reasons.append(
                    f"housing: rent {region.rent_mci_per_month} MCI/month, cheaper than the "
                    f"{_RENT_MAX_MCI} MCI maximum ({_pts(housing)})"
                )

        quota = round(_QUOTA_POINTS * left / most_remaining, 1)
        if quota > 0:
            score += quota
            reasons.append(f"{left} kandas quota places left ({_pts(quota)})")

        ranked.append(
            RankedRegion(
                region=region.region, score=round(score, 1), remaining=left, reasons=reasons
            )
        )

    ranked.sort(key=lambda r: (-r.score, -r.remaining, r.region.value))
    return ranked


def choose_place(region: SettlementRegion, survey: Survey) -> str:
    """The region's first listed place (the rule set lists the regional centre first)."""
    del survey  # the survey does not name places; the caseworker may change the choice
    if region.places:
        return region.places[0]
    return REGION_NAMES[region.region][1]


# --------------------------------------------------------------------------- support measures


def support_package(req: SupportRequest) -> SupportPackage:
    """State support in the settlement region, in MCI and in KZT at `req.mci_kzt`.

    The total is relocation + rent: the mobility certificate is listed but left out,
    because using it replaces the rent support. Outside a settlement region none of the
    measures applies, so the package is empty.
    """
    if req.family_size < 1:
        raise ValueError(f"family_size must be >= 1, got {req.family_size}")
    rules = req.rules
    region = rules.settlement(req.region)
    if region is None:
        return SupportPackage(
            lines=[],
            total_mci=0,
            total_kzt=0,
            mobility_certificate_eligible=False,
            mci_kzt=req.mci_kzt,
        )

    def line(code: str, ru: str, kk: str, mci: int, note_ru: str, note_kk: str) -> SupportLine:
        return SupportLine(
            code=code,
            title_ru=ru,
            title_kk=kk,
            mci=mci,
            kzt=mci * req.mci_kzt,
            note_ru=note_ru,
            note_kk=note_kk,
        )

    per_member = rules.relocation_mci_per_member
    counted = [
        line(
            "relocation_subsidy",
            "Субсидия на переезд",
            "Көшуге арналған субсидия",
            per_member * req.family_size,
            f"{per_member} МРП на каждого члена семьи; членов семьи: {req.family_size}. "
            "При выезде из региона в течение 5 лет меры поддержки возвращаются.",
            f"Отбасының әр мүшесіне {per_member} АЕК; отбасы мүшелері: {req.family_size}. "
            "Өңірден 5 жыл ішінде кеткен жағдайда қолдау шаралары қайтарылады.",
        )
    ]
    if req.housing_need != "none":
        rent = region.rent_mci_per_month
        counted.append(
            line(
                "rent_utilities",
                "Возмещение аренды жилья и коммунальных услуг",
                "Тұрғын үйді жалдау және коммуналдық қызметтер үшін өтемақы",
                rent * rules.rent_months,
                f"{rent} МРП в месяц, до {rules.rent_months} месяцев.",
                f"Айына {rent} АЕК, {rules.rent_months} айға дейін.",
            )
        )
    certificate = line(
        "mobility_certificate",
        "Сертификат экономической мобильности",
        "Экономикалық ұтқырлық сертификаты",
        rules.mobility_certificate_max_mci,
        f"До {rules.mobility_certificate_max_mci} МРП (по фактической стоимости жилья, если она "
        "ниже) на покупку или строительство жилья либо первоначальный взнос по жилищному займу, "
        "при трудоустройстве, подтверждённом работодателем. Заменяет возмещение аренды, "
        "поэтому в итог не включается.",
        f"{rules.mobility_certificate_max_mci} АЕК-ке дейін (тұрғын үй арзан болса, нақты құны "
        "бойынша) тұрғын үй сатып алуға, салуға немесе тұрғын үй қарызының бастапқы жарнасына, "
        "жұмыс беруші растаған жұмысқа орналасу шартымен. Жалдау өтемақысының орнына беріледі, "
        "сондықтан жиынтыққа кірмейді.",
    )
    total_mci = sum(item.mci for item in counted)
    return SupportPackage(
        lines=[*counted, certificate],
        total_mci=total_mci,
        total_kzt=total_mci * req.mci_kzt,
        # Every kandas settling in a settlement region qualifies (the employer's confirmation
        # of employment is a condition of paying it, not of eligibility).
        mobility_certificate_eligible=True,
        mci_kzt=req.mci_kzt,
    )


# --------------------------------------------------------------------------- external systems


@runtime_checkable
class AisKandas(Protocol):
    """AIS "Kandas": identity of the applicant as the state system knows it."""

    async def check_identity(self, req: IdentityCheckRequest) -> CheckFinding: ...


@runtime_checkable
class PersonRecords(Protocol):
    """UIS "Berkut": entry bans and criminal records."""

    async def check_person(self, passport_number: str) -> CheckFinding: ...


@runtime_checkable
class SecurityService(Protocol):
    """The national security committee's check of the applicant and family."""

    async def check(self, req: SecurityCheckRequest) -> CheckFinding: ...


@runtime_checkable
class MfaVisas(Protocol):
    """The MFA consular system: the entry visa issued with the one-window decision."""

    async def issue(self, req: VisaRequest, today: date) -> VisaIssued: ...


class _KandasSimulator(_Simulator):
    def _check(self, ok: bool, code: str, detail: str) -> CheckFinding:
        return CheckFinding(registry=self.registry, ok=ok, code=code, detail=detail)


class SimulatedAisKandas(_KandasSimulator):
    registry = "ais_kandas"
    title = 'AIS "Kandas"'

    async def check_identity(self, req: IdentityCheckRequest) -> CheckFinding:
        await self._simulate_call()
        if req.passport_number.upper().startswith("F"):
            return self._check(
                False,
                "identity_mismatch",
                f"Passport {req.passport_number} ({req.citizenship}) does not match "
                f"{req.full_name}, born {req.birth_date.isoformat()}",
            )
        return self._check(
            True,
            "confirmed",
            f"Identity of {req.full_name} confirmed (passport {req.passport_number}, {req.citizenship})",
        )


class SimulatedRecords(_KandasSimulator):
    registry = "berkut"
    title = 'UIS "Berkut"'

    async def check_person(self, passport_number: str) -> CheckFinding:
        await self._simulate_call()
        prefix = passport_number.upper()[:1]
        if prefix == "X":
            return self._check(
                False, "entry_ban", f"Entry ban recorded for passport {passport_number}"
            )
        if prefix == "C":
            return self._check(
                False,
                "criminal_record",
                f"Unexpunged criminal record for the holder of passport {passport_number}",
            )
        return self._check(
            True, "clear", f"No entry ban or criminal record for passport {passport_number}"
        )


class SimulatedSecurityCheck(_KandasSimulator):
    """Slow and often unavailable, like the real check: the workflow must wait it out."""

    registry = "knb"
    title = "National security committee (KNB)"

    def __init__(
        self, latency: float = 1.0, failure_rate: float = 0.3, seed: int | None = None
    ) -> None:
        super().__init__(latency, failure_rate, seed)

    async def check(self, req: SecurityCheckRequest) -> CheckFinding:
        if not req.passport_numbers:
            # "No objection" about nobody would read as a clean check.
            raise ValueError(f"security check for {req.case_id} names no passports")
        await self._simulate_call()
        objected = [p for p in req.passport_numbers if p.upper().startswith("S")]
        if objected:
            return self._check(
                False,
                "security_objection",
                f"Objection concerning passport(s) {', '.join(objected)} (case {req.case_id})",
            )
        return self._check(
            True,
            "no_objection",
            f"No objection for {len(req.passport_numbers)} person(s) (case {req.case_id})",
        )


def visa_number_for(case_id: str) -> str:
    # Derived from the case, not drawn: an activity retry (or a restarted worker) issues
    # the same number for the same case.
    return "KZV-" + hashlib.sha256(case_id.encode()).hexdigest()[:8].upper()


class SimulatedMfaVisa(_KandasSimulator):
    registry = "mfa"
    title = "MFA consular visa system"

    def __init__(
        self, latency: float = 0.05, failure_rate: float = 0.1, seed: int | None = None
    ) -> None:
        super().__init__(latency, failure_rate, seed)
        self._issued: dict[str, VisaIssued] = {}

    async def issue(self, req: VisaRequest, today: date) -> VisaIssued:
        if req.valid_days < 1:
            raise ValueError(f"valid_days must be >= 1, got {req.valid_days}")
        await self._simulate_call()
        existing = self._issued.get(req.case_id)
        if existing is not None:
            # A retry on another day must not move the validity window of a visa already out.
            return existing
        visa = VisaIssued(
            visa_number=visa_number_for(req.case_id),
            category="C3 (кандас)",
            valid_from=today,
            valid_to=today + timedelta(days=req.valid_days - 1),
            entries="single",
        )
        self._issued[req.case_id] = visa
        return visa


@dataclass(frozen=True, slots=True)
class KandasRegistries:
    """One adapter per external system; KandasActivities receives this bundle."""

    ais_kandas: AisKandas
    records: PersonRecords
    security: SecurityService
    mfa: MfaVisas


def simulated_kandas_registries(
    latency: float = 0.05,
    failure_rate: float = 0.1,
    seed: int | None = None,
    security_latency: float | None = None,
    security_failure_rate: float | None = None,
) -> KandasRegistries:
    """All four systems as simulators; the security check is slower and less available.

    Unless given, the security check gets 20x the latency and max(3x failure_rate, 0.3)
    capped at 0.5. Zero stays zero for both: a caller asking for no latency or no outages
    (tests, demos) gets none from the security check either.
    """
    if security_latency is None:
        security_latency = 20 * latency
    if security_failure_rate is None:
        security_failure_rate = 0.0 if failure_rate == 0 else min(max(3 * failure_rate, 0.3), 0.5)
    return KandasRegistries(
        ais_kandas=SimulatedAisKandas(latency, failure_rate, seed),
        records=SimulatedRecords(latency, failure_rate, seed),
        security=SimulatedSecurityCheck(security_latency, security_failure_rate, seed),
        mfa=SimulatedMfaVisa(latency, failure_rate, seed),
    )


# --------------------------------------------------------------------------- activities


def _bad_request(detail: str) -> ApplicationError:
    # Retrying cannot fix a malformed request: fail the activity for good.
    return ApplicationError(detail, type="InvalidRequest", non_retryable=True)


class KandasActivities:
    def __init__(self, engine: Engine, registries: KandasRegistries) -> None:
        self.engine = engine
        self.registries = registries

    # ------------------------------------------------------------------ settlement

    def _remaining(self, year: int) -> dict[Region, int]:
        out: dict[Region, int] = {}
        for pool in quota_view(self.engine, kind=QUOTA_KIND, year=year):
            if pool["category"] != QUOTA_CATEGORY:
                continue
            try:
                out[Region(pool["region"])] = int(pool["remaining"])
            except ValueError:
                continue  # a pool for a region this engine does not know: never proposed
        return out

    def _case_holds(self, case_id: str, keys: dict[Region, str]) -> tuple[set[Region], set[Region]]:
        """Regions where the case holds a unit, and regions where its hold was released."""
        region_of = {key: region for region, key in keys.items()}
        actions: dict[Region, set[str]] = {}
        for entry in ledger_entries(self.engine, case_id=case_id):
            region = region_of.get(entry.quota_key)
            if region is not None:
                actions.setdefault(region, set()).add(entry.action)
        held = {r for r, acts in actions.items() if "reserve" in acts and "release" not in acts}
        released = {r for r, acts in actions.items() if "release" in acts}
        return held, released

    def propose_sync(self, req: SettlementRequest) -> SettlementProposal:
        """Rank the settlement regions and reserve a kandas unit in the best one available.

        Blocking (database); the activity runs it on a thread. Safe to repeat: a case that
        already holds a unit in an acceptable region gets that region back, and the ledger
        never gives one case two units of the same pool.
        """
        by_region: dict[Region, SettlementRegion] = {}
        for region in req.regions:
            by_region.setdefault(region.region, region)
        keys = {
            r: quota_key(QUOTA_KIND, r.value, QUOTA_CATEGORY, req.quota_year) for r in by_region
        }
        remaining = self._remaining(req.quota_year)
        held, released = self._case_holds(req.case_id, keys)
        # What this case can get: a unit it already holds counts as available to it (so a
        # retry after taking the last unit sees the same ranking); a pool it was released
        # from is closed to it for good (see activities.quota).
        available = {
            r: remaining.get(r, 0) + (1 if r in held else 0) for r in by_region if r not in released
        }
        excluded = set(req.exclude)
        ranking = rank_regions(
            req.survey,
            req.family_size,
            [s for r, s in by_region.items() if r not in excluded],
            available,
        )
        year = req.quota_year

        if req.only is not None:
            # The caseworker's explicit choice wins over `exclude`, but only within the
            # settlement regions: quota exists nowhere else.
            target = by_region.get(req.only)
            if target is None:
                return SettlementProposal(
                    ok=False,
                    ranking=ranking,
                    detail=f"{req.only.value} is not a settlement region for kandas",
                )
            order = [target]
        else:
            ranked = [by_region[r.region] for r in ranking]
            # Held regions first: a retry must return the unit it already has, not take a
            # second one in a region that has since moved up.
            order = [s for s in ranked if s.region in held] + [
                s for s in ranked if s.region not in held
            ]

        missed: list[str] = []
        for settlement in order:
            result = reserve(
                self.engine, QuotaRequest(case_id=req.case_id, quota_key=keys[settlement.region])
            )
            if result.ok:
                how = (
                    "kept the case's existing hold"
                    if settlement.region in held
                    else "reserved a kandas quota place"
                )
                position = next(
                    (i for i, r in enumerate(ranking, 1) if r.region == settlement.region), None
                )
                where = f" (rank {position} of {len(ranking)})" if position else ""
                return SettlementProposal(
                    ok=True,
                    region=settlement.region,
                    place=choose_place(settlement, req.survey),
                    quota_key=result.quota_key,
                    ranking=ranking,
                    detail=f"{how} in {settlement.region.value} for {year}{where}",
                )
            # Another case took the last unit since we read the pools (or the pool is gone,
            # or this case was released from it): the ledger decided, try the next region.
            missed.append(f"{settlement.region.value}: {result.state}")

        if req.only is not None:
            detail = f"no kandas quota place for this case in {req.only.value} for {year}"
        else:
            detail = f"no kandas quota left in any settlement region for {year}"
        if missed:
            detail += " (" + ", ".join(missed) + ")"
        return SettlementProposal(ok=False, ranking=ranking, detail=detail)

    @activity.defn(name=PROPOSE_SETTLEMENT)
    async def propose_settlement(self, req: SettlementRequest) -> SettlementProposal:
        # The database driver is blocking: keep it off the event loop shared with workflows.
        return await asyncio.to_thread(self.propose_sync, req)

    @activity.defn(name=SUPPORT_PACKAGE)
    async def compute_support(self, req: SupportRequest) -> SupportPackage:
        try:
            return support_package(req)
        except ValueError as exc:
            raise _bad_request(str(exc)) from exc

    # ------------------------------------------------------------------ checks and visa

    @activity.defn(name=CHECK_IDENTITY)
    async def check_identity(self, req: IdentityCheckRequest) -> CheckFinding:
        return await self.registries.ais_kandas.check_identity(req)

    @activity.defn(name=CHECK_RECORDS)
    async def check_records(self, req: IdentityCheckRequest) -> CheckFinding:
        return await self.registries.records.check_person(req.passport_number)

    @activity.defn(name=SECURITY_CHECK)
    async def security_check(self, req: SecurityCheckRequest) -> CheckFinding:
        if not req.passport_numbers:
            raise _bad_request(f"security check for {req.case_id} names no passports")
        return await self.registries.security.check(req)

    @activity.defn(name=REQUEST_VISA)
    async def request_visa(self, req: VisaRequest) -> VisaIssued:
        if req.valid_days < 1:
            raise _bad_request(f"valid_days must be >= 1, got {req.valid_days}")
        # The consulate's "today" is Kazakhstan's calendar day, not the worker host's.
        today = datetime.now(KZ_TZ).date()
        return await self.registries.mfa.issue(req, today)

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.propose_settlement,
            self.compute_support,
            self.check_identity,
            self.check_records,
            self.security_check,
            self.request_visa,
        ]
