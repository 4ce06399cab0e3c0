"""Kandas settlement and support: ranking, support package, quota-backed proposals, simulators."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from activities.kandas import (
    KandasActivities,
    KandasRegistries,
    SimulatedAisKandas,
    SimulatedMfaVisa,
    SimulatedRecords,
    SimulatedSecurityCheck,
    choose_place,
    rank_regions,
    simulated_kandas_registries,
    support_package,
)
from activities.quota import ensure_quota, ledger_entries, quota_key, quota_view, reserve
from activities.registries import RegistryUnavailable
from casework.contracts import KZ_TZ, QuotaRequest
from casework.demo import KANDAS_QUOTA_2026
from casework.kandas import (
    IdentityCheckRequest,
    KandasRules,
    SecurityCheckRequest,
    SettlementProposal,
    SettlementRegion,
    SettlementRequest,
    SupportRequest,
    Survey,
    VisaRequest,
)
from casework.regions import Region
from casework.rules import load_rules

YEAR = 2026
MCI = 4325


@pytest.fixture(scope="module")
def rules() -> KandasRules:
    loaded = load_rules("kandas_status", date(2026, 3, 2), version="2025.10")
    assert isinstance(loaded, KandasRules)
    return loaded


@pytest.fixture(scope="module")
def regions(rules: KandasRules) -> list[SettlementRegion]:
    return rules.settlement_regions


def _survey(
    profession: str = "welder",
    preferred: list[Region] | None = None,
    housing: str = "rent",
) -> Survey:
    return Survey.model_validate(
        {
            "profession": profession,
            "education": "vocational",
            "experience_years": 8,
            "languages": ["kk", "ru"],
            "preferred_regions": [] if preferred is None else preferred,
            "housing_need": housing,
        }
    )


def _all_remaining(value: int = 100) -> dict[Region, int]:
    return {Region(r): value for r in KANDAS_QUOTA_2026}


# --------------------------------------------------------------------------- ranking


def test_preferred_region_ranks_first(regions: list[SettlementRegion]) -> None:
    survey = _survey(profession="pianist", preferred=[Region.kostanay, Region.abai])

    ranking = rank_regions(survey, 3, regions, _all_remaining())

    assert [r.region for r in ranking[:2]] == [Region.kostanay, Region.abai]
    assert "preferred region #1 (+50)" in ranking[0].reasons
    assert "preferred region #2 (+40)" in ranking[1].reasons


def test_profession_in_labour_demand_counts(regions: list[SettlementRegion]) -> None:
    # Welders are wanted in Pavlodar and Atyrau only.
    ranking = rank_regions(
        _survey(profession="Welder", housing="none"), 1, regions, _all_remaining()
    )

    assert {r.region for r in ranking[:2]} == {Region.pavlodar, Region.atyrau}
    top = ranking[0]
    assert "profession 'Welder' in labour demand (+30)" in top.reasons
    assert all(not any("labour demand" in reason for reason in r.reasons) for r in ranking[2:])

    # Substring either way: "welding engineer" contains the keyword "engineer".
    ranking = rank_regions(_survey(profession="welding engineer"), 1, regions, _all_remaining())
    east = next(r for r in ranking if r.region == Region.east_kazakhstan)
    assert "profession 'welding engineer' matches labour demand 'engineer' (+30)" in east.reasons


def test_exhausted_or_missing_pool_is_never_ranked(regions: list[SettlementRegion]) -> None:
    remaining = _all_remaining()
    remaining[Region.pavlodar] = 0
    del remaining[Region.akmola]
    survey = _survey(preferred=[Region.pavlodar, Region.akmola])

    ranking = rank_regions(survey, 4, regions, remaining)

    ranked = {r.region for r in ranking}
    assert Region.pavlodar not in ranked
    assert Region.akmola not in ranked
    assert len(ranking) == len(regions) - 2
    assert rank_regions(survey, 4, regions, {}) == []


def test_reasons_explain_the_score(regions: list[SettlementRegion]) -> None:
    remaining = {Region.pavlodar: 977, Region.north_kazakhstan: 200, Region.atyrau: 125}
    survey = _survey(profession="welder", preferred=[Region.pavlodar], housing="rent")

    ranking = rank_regions(survey, 4, regions, remaining)

    by_region = {r.region: r for r in ranking}
    pavlodar = by_region[Region.pavlodar]
    # 50 (preference) + 30 (welder) + 3.3 (rent 25 of 15..30) + 10 (most quota left).
    assert pavlodar.score == 93.3
    assert pavlodar.reasons == [
        "preferred region #1 (+50)",
        "profession 'welder' in labour demand (+30)",
        "housing: rent 25 MCI/month, cheaper than the 30 MCI maximum (+3.3)",
        "977 kandas quota places left (+10)",
    ]
    north = by_region[Region.north_kazakhstan]
    # Rent 15 is the cheapest possible: the full 10; 200 of 977 places: 2.0.
    assert north.score == 12.0
    assert north.reasons == [
        "housing: rent 15 MCI/month, cheaper than the 30 MCI maximum (+10)",
        "200 kandas quota places left (+2)",
    ]
    # Every point is accounted for by a reason.
    for ranked in ranking:
        points = sum(float(reason.rsplit("(+", 1)[1].rstrip(")")) for reason in ranked.reasons)
        assert ranked.score == pytest.approx(points, abs=0.05)


def test_ordering_is_deterministic(regions: list[SettlementRegion]) -> None:
    survey = _survey(profession="pianist", housing="none")
    # Equal scores everywhere (no preference, no demand, no housing, same quota): by name.
    ranking = rank_regions(survey, 2, regions, _all_remaining(50))
    names = [r.region.value for r in ranking]
    assert names == sorted(names)
    assert len({r.score for r in ranking}) == 1

    shuffled = list(reversed(regions))
    assert rank_regions(survey, 2, shuffled, _all_remaining(50)) == ranking
    # Same score, more remaining first.
    remaining = _all_remaining(50)
    remaining[Region.west_kazakhstan] = 49
    remaining[Region.abai] = 49
    again = rank_regions(survey, 2, regions, remaining)
    assert [r.region for r in again[-2:]] == [Region.abai, Region.west_kazakhstan]


def test_choose_place_is_the_first_place(regions: list[SettlementRegion]) -> None:
    pavlodar = next(r for r in regions if r.region == Region.pavlodar)
    assert choose_place(pavlodar, _survey()) == "Павлодар"


# --------------------------------------------------------------------------- support


def test_support_for_a_family_of_four_renting_in_pavlodar(rules: KandasRules) -> None:
    package = support_package(
        SupportRequest(
            region=Region.pavlodar, family_size=4, housing_need="rent", mci_kzt=MCI, rules=rules
        )
    )

    lines = {line.code: line for line in package.lines}
    assert list(lines) == ["relocation_subsidy", "rent_utilities", "mobility_certificate"]
    assert lines["relocation_subsidy"].mci == 70 * 4 == 280
    assert lines["relocation_subsidy"].kzt == 280 * MCI
    assert lines["relocation_subsidy"].title_ru == "Субсидия на переезд"
    assert lines["relocation_subsidy"].title_kk == "Көшуге арналған субсидия"
    assert lines["rent_utilities"].mci == 25 * 12 == 300
    assert lines["rent_utilities"].kzt == 300 * MCI
    assert lines["rent_utilities"].title_ru == "Возмещение аренды жилья и коммунальных услуг"
    assert "25 МРП в месяц" in lines["rent_utilities"].note_ru
    certificate = lines["mobility_certificate"]
    assert certificate.mci == 1625
    assert certificate.kzt == 1625 * MCI == 7_028_125
    assert certificate.title_kk == "Экономикалық ұтқырлық сертификаты"
    assert "Заменяет возмещение аренды" in certificate.note_ru
    assert package.total_mci == 580
    assert package.total_kzt == 580 * MCI
    assert package.mobility_certificate_eligible is True
    assert package.mci_kzt == MCI


def test_no_rent_line_without_housing_need(rules: KandasRules) -> None:
    package = support_package(
        SupportRequest(
            region=Region.north_kazakhstan,
            family_size=1,
            housing_need="none",
            mci_kzt=MCI,
            rules=rules,
        )
    )
    assert [line.code for line in package.lines] == ["relocation_subsidy", "mobility_certificate"]
    assert package.total_mci == 70


def test_no_support_outside_settlement_regions(rules: KandasRules) -> None:
    package = support_package(
        SupportRequest(
            region=Region.almaty_city, family_size=2, housing_need="rent", mci_kzt=MCI, rules=rules
        )
    )
    assert package.lines == []
    assert package.total_mci == 0
    assert package.mobility_certificate_eligible is False


# --------------------------------------------------------------------------- settlement proposals


def _acts(engine: Engine) -> KandasActivities:
    return KandasActivities(engine, simulated_kandas_registries(latency=0, failure_rate=0))


def _pools(engine: Engine, limits: dict[Region, int]) -> None:
    for region, limit in limits.items():
        ensure_quota(engine, "kandas", region.value, "kandas", YEAR, limit)


def _key(region: Region) -> str:
    return quota_key("kandas", region.value, "kandas", YEAR)


def _reserved(engine: Engine) -> dict[str, int]:
    return {p["region"]: p["reserved"] for p in quota_view(engine, kind="kandas", year=YEAR)}


def _settle(
    regions: list[SettlementRegion],
    case_id: str,
    survey: Survey | None = None,
    **extra: object,
) -> SettlementRequest:
    return SettlementRequest.model_validate(
        {
            "case_id": case_id,
            "survey": survey or _survey(preferred=[Region.pavlodar, Region.akmola]),
            "family_size": 4,
            "quota_year": YEAR,
            "regions": regions,
            **extra,
        }
    )


async def test_proposal_reserves_in_the_top_region(
    engine: Engine, regions: list[SettlementRegion]
) -> None:
    _pools(engine, {Region(r): limit for r, limit in KANDAS_QUOTA_2026.items()})
    acts = _acts(engine)

    proposal = await acts.propose_settlement(_settle(regions, "KS-1"))

    assert proposal.ok is True
    assert proposal.region == Region.pavlodar
    assert proposal.place == "Павлодар"
    assert proposal.quota_key == _key(Region.pavlodar)
    assert proposal.ranking[0].region == Region.pavlodar
    assert proposal.ranking[0].reasons[0] == "preferred region #1 (+50)"
    assert len(proposal.ranking) == len(regions)
    assert _reserved(engine)["pavlodar"] == 1
    assert sum(_reserved(engine).values()) == 1
    assert [(e.quota_key, e.action) for e in ledger_entries(engine, case_id="KS-1")] == [
        (_key(Region.pavlodar), "reserve")
    ]


async def test_exhausted_top_region_gives_the_next(
    engine: Engine, regions: list[SettlementRegion]
) -> None:
    _pools(engine, {Region.pavlodar: 1, Region.akmola: 5, Region.kostanay: 5})
    assert reserve(engine, QuotaRequest(case_id="KS-other", quota_key=_key(Region.pavlodar))).ok

    proposal = _acts(engine).propose_sync(_settle(regions, "KS-2"))

    assert proposal.ok is True
    assert proposal.region == Region.akmola
    assert proposal.place == "Кокшетау"
    assert Region.pavlodar not in {r.region for r in proposal.ranking}
    assert _reserved(engine) == {"akmola": 1, "kostanay": 0, "pavlodar": 1}


async def test_exclude_skips_a_region(engine: Engine, regions: list[SettlementRegion]) -> None:
    _pools(engine, {Region.pavlodar: 5, Region.akmola: 5})

    proposal = _acts(engine).propose_sync(_settle(regions, "KS-3", exclude=[Region.pavlodar]))

    assert proposal.region == Region.akmola
    assert [r.region for r in proposal.ranking] == [Region.akmola]


async def test_nothing_available_reserves_nothing(
    engine: Engine, regions: list[SettlementRegion]
) -> None:
    _pools(engine, {Region.pavlodar: 0, Region.akmola: 0})

    proposal = await _acts(engine).propose_settlement(_settle(regions, "KS-4"))

    assert proposal.ok is False
    assert proposal.region is None and proposal.quota_key is None
    assert proposal.ranking == []
    assert "no kandas quota left" in proposal.detail
    assert ledger_entries(engine, case_id="KS-4") == []
    assert _reserved(engine) == {"akmola": 0, "pavlodar": 0}


async def test_retry_returns_the_same_region_without_a_second_unit(
    engine: Engine, regions: list[SettlementRegion]
) -> None:
    # One unit in the top region: the first attempt takes the last one, so a naive retry
    # would find the region exhausted and take a unit somewhere else.
    _pools(engine, {Region.pavlodar: 1, Region.akmola: 5})
    acts = _acts(engine)

    first = acts.propose_sync(_settle(regions, "KS-5"))
    again = await acts.propose_settlement(_settle(regions, "KS-5"))

    assert first.ok and again.ok
    assert again.region == first.region == Region.pavlodar
    assert again.quota_key == first.quota_key
    assert [r.region for r in again.ranking] == [r.region for r in first.ranking]
    assert "existing hold" in again.detail
    assert _reserved(engine) == {"akmola": 0, "pavlodar": 1}
    assert len(ledger_entries(engine, case_id="KS-5")) == 1


async def test_only_reserves_exactly_there_or_fails(
    engine: Engine, regions: list[SettlementRegion]
) -> None:
    _pools(engine, {Region.pavlodar: 5, Region.kostanay: 2, Region.west_kazakhstan: 0})
    acts = _acts(engine)

    chosen = acts.propose_sync(_settle(regions, "KS-6", only=Region.kostanay))
    assert chosen.ok is True
    assert chosen.region == Region.kostanay
    assert chosen.place == "Костанай"
    assert chosen.quota_key == _key(Region.kostanay)
    # The ranking is still the full one: the caseworker sees what the system would propose.
    assert chosen.ranking[0].region == Region.pavlodar

    full = acts.propose_sync(_settle(regions, "KS-7", only=Region.west_kazakhstan))
    assert full.ok is False
    assert "west_kazakhstan" in full.detail
    assert ledger_entries(engine, case_id="KS-7") == []

    elsewhere = acts.propose_sync(_settle(regions, "KS-8", only=Region.almaty_city))
    assert elsewhere.ok is False
    assert "not a settlement region" in elsewhere.detail
    assert ledger_entries(engine, case_id="KS-8") == []

    assert _reserved(engine) == {"kostanay": 1, "pavlodar": 0, "west_kazakhstan": 0}


@pytest.mark.postgres
def test_concurrent_proposals_never_overallocate(
    pg_engine: Engine, regions: list[SettlementRegion]
) -> None:
    _pools(pg_engine, {Region.pavlodar: 5, Region.akmola: 3})
    acts = _acts(pg_engine)
    n = 30
    barrier = threading.Barrier(n, timeout=30)

    def run(i: int) -> SettlementProposal:
        barrier.wait()
        return acts.propose_sync(_settle(regions, f"KS-RACE-{i:02d}"))

    with ThreadPoolExecutor(max_workers=n) as pool:
        proposals = list(pool.map(run, range(n)))

    won = [p for p in proposals if p.ok]
    assert sorted(p.region.value for p in won if p.region) == ["akmola"] * 3 + ["pavlodar"] * 5
    assert sum(not p.ok for p in proposals) == 22
    for pool_row in quota_view(pg_engine, kind="kandas", year=YEAR):
        assert pool_row["reserved"] + pool_row["used"] == pool_row["limit"]
    entries = [e for e in ledger_entries(pg_engine) if e.action == "reserve"]
    assert len(entries) == 8
    assert len({e.case_id for e in entries}) == 8


# --------------------------------------------------------------------------- simulators


def _identity(passport: str) -> IdentityCheckRequest:
    return IdentityCheckRequest(
        passport_number=passport,
        citizenship="CHN",
        full_name="Serik Nurlan",
        birth_date=date(1990, 5, 1),
    )


async def test_registry_answers_are_deterministic() -> None:
    regs = simulated_kandas_registries(latency=0, failure_rate=0)
    assert isinstance(regs, KandasRegistries)
    assert isinstance(regs.security, SimulatedSecurityCheck)

    ok = await regs.ais_kandas.check_identity(_identity("N1234567"))
    assert (ok.registry, ok.ok, ok.code) == ("ais_kandas", True, "confirmed")
    bad = await regs.ais_kandas.check_identity(_identity("F1234567"))
    assert (bad.ok, bad.code) == (False, "identity_mismatch")

    assert (await regs.records.check_person("N1234567")).code == "clear"
    ban = await regs.records.check_person("X1234567")
    assert (ban.registry, ban.ok, ban.code) == ("berkut", False, "entry_ban")
    record = await regs.records.check_person("C1234567")
    assert (record.ok, record.code) == (False, "criminal_record")

    clean = await regs.security.check(
        SecurityCheckRequest(case_id="KS-1", passport_numbers=["N1234567", "N7654321"])
    )
    assert (clean.registry, clean.ok, clean.code) == ("knb", True, "no_objection")
    objection = await regs.security.check(
        SecurityCheckRequest(case_id="KS-1", passport_numbers=["N1234567", "S7654321"])
    )
    assert (objection.ok, objection.code) == (False, "security_objection")
    assert "S7654321" in objection.detail


def test_security_check_is_slow_and_flaky_by_default() -> None:
    assert SimulatedSecurityCheck().latency == 1.0
    assert SimulatedSecurityCheck().failure_rate == 0.3
    regs = simulated_kandas_registries()
    assert isinstance(regs.security, SimulatedSecurityCheck)
    assert isinstance(regs.records, SimulatedRecords)
    assert regs.security.latency == pytest.approx(1.0)
    assert regs.security.failure_rate == pytest.approx(0.3)
    assert regs.records.latency == pytest.approx(0.05)
    capped = simulated_kandas_registries(failure_rate=0.4).security
    assert isinstance(capped, SimulatedSecurityCheck)
    assert capped.failure_rate == 0.5


async def test_security_check_is_sometimes_unavailable() -> None:
    knb = SimulatedSecurityCheck(latency=0, failure_rate=0.5, seed=7)
    req = SecurityCheckRequest(case_id="KS-1", passport_numbers=["N1234567"])
    outcomes: list[str] = []
    for _ in range(40):
        try:
            outcomes.append((await knb.check(req)).code)
        except RegistryUnavailable:
            outcomes.append("unavailable")

    assert 0 < outcomes.count("unavailable") < 40
    assert set(outcomes) == {"unavailable", "no_objection"}
    # Same seed, same sequence of outages.
    twin = SimulatedSecurityCheck(latency=0, failure_rate=0.5, seed=7)
    replay: list[str] = []
    for _ in range(40):
        try:
            replay.append((await twin.check(req)).code)
        except RegistryUnavailable:
            replay.append("unavailable")
    assert replay == outcomes


async def test_visa_is_idempotent_per_case() -> None:
    mfa = SimulatedMfaVisa(latency=0, failure_rate=0)
    req = VisaRequest(
        case_id="KS-2026-000123",
        consulate="Urumqi",
        full_name="Serik Nurlan",
        passport_number="N1234567",
        valid_days=90,
    )
    today = date(2026, 3, 2)

    visa = await mfa.issue(req, today)
    assert visa.visa_number.startswith("KZV-") and len(visa.visa_number) == 12
    assert visa.visa_number[4:] == visa.visa_number[4:].upper()
    assert visa.category == "C3 (кандас)"
    assert visa.valid_from == today
    assert visa.valid_to == today + timedelta(days=89)
    assert visa.entries == "single"
    # A retry, even on another day, gets the same visa; another simulator instance (a
    # restarted worker) gets the same number.
    assert await mfa.issue(req, today + timedelta(days=1)) == visa
    other = SimulatedMfaVisa(latency=0, failure_rate=0)
    assert (await other.issue(req, today)).visa_number == visa.visa_number
    different = await mfa.issue(req.model_copy(update={"case_id": "KS-2026-000124"}), today)
    assert different.visa_number != visa.visa_number


async def test_check_and_visa_activities(sqlite_engine: Engine) -> None:
    acts = _acts(sqlite_engine)
    assert len(acts.all()) == 6
    assert isinstance(acts.registries.ais_kandas, SimulatedAisKandas)

    assert (await acts.check_identity(_identity("F1234567"))).code == "identity_mismatch"
    assert (await acts.check_records(_identity("X1234567"))).code == "entry_ban"
    finding = await acts.security_check(
        SecurityCheckRequest(case_id="KS-9", passport_numbers=["N1234567"])
    )
    assert finding.code == "no_objection"

    before = datetime.now(KZ_TZ).date()
    visa = await acts.request_visa(
        VisaRequest(
            case_id="KS-9",
            consulate="Ulaanbaatar",
            full_name="Serik Nurlan",
            passport_number="N1234567",
            valid_days=90,
        )
    )
    assert before <= visa.valid_from <= datetime.now(KZ_TZ).date()
    assert (visa.valid_to - visa.valid_from).days == 89
