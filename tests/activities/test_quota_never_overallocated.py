"""The quota ledger never over-allocates a pool, and every movement is a ledger entry."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from activities import quota as ledger
from activities.quota import (
    commit,
    ensure_quota,
    ledger_entries,
    quota_key,
    quota_view,
    release,
    reserve,
)
from casework.contracts import QuotaRequest, QuotaResult
from casework.db import QuotaHoldRow, QuotaRow
from casework.demo import (
    KANDAS_QUOTA_2026,
    REGION_WEIGHTS,
    RESETTLER_QUOTA_2026,
    WORK_PERMIT_QUOTA_2026,
    load_demo_quotas,
    split_national_quota,
)
from casework.regions import Region

T = TypeVar("T")

KEY = quota_key("work_permit", "almaty_city", "3", 2026)


def _pool(engine: Engine, limit: int, key: str = KEY) -> str:
    kind, region, category, year = key.split(":")
    ensure_quota(engine, kind, region, category, int(year), limit)
    return key


def _req(case_id: str, key: str = KEY, actor: str = "system") -> QuotaRequest:
    return QuotaRequest(case_id=case_id, quota_key=key, actor=actor)


def _counters(engine: Engine, key: str = KEY) -> tuple[int, int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            select(QuotaRow.limit, QuotaRow.reserved, QuotaRow.used).where(
                QuotaRow.quota_key == key
            )
        ).one()
    return row.limit, row.reserved, row.used


def _hold_states(engine: Engine, key: str = KEY) -> Counter[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(QuotaHoldRow.state, func.count())
            .where(QuotaHoldRow.quota_key == key)
            .group_by(QuotaHoldRow.state)
        ).all()
    return Counter({state: n for state, n in rows})


def _actions(engine: Engine, key: str = KEY) -> Counter[str]:
    return Counter(entry.action for entry in ledger_entries(engine, quota_key=key))


def _assert_books_balance(engine: Engine, key: str = KEY) -> None:
    """Counters, holds and ledger tell the same story, and the pool is not over-allocated."""
    limit, reserved, used = _counters(engine, key)
    holds = _hold_states(engine, key)
    actions = _actions(engine, key)
    assert reserved + used <= limit
    assert reserved == holds["reserved"]
    assert used == holds["committed"]
    assert actions["reserve"] == sum(holds.values())
    assert actions["commit"] == holds["committed"]
    assert actions["release"] == holds["released"]


def _race(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run fn(0..n-1) on n threads released at the same instant."""
    barrier = threading.Barrier(n, timeout=30)

    def run(i: int) -> T:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


# --------------------------------------------------------------------------- rules


def test_reservation_takes_one_unit_and_records_who_and_when(engine: Engine) -> None:
    _pool(engine, 3)
    before = datetime.now(UTC)

    result = reserve(engine, _req("WP-1", actor="caseworker-7"))

    assert result == QuotaResult(
        quota_key=KEY, case_id="WP-1", ok=True, state="reserved", remaining=2
    )
    assert _counters(engine) == (3, 1, 0)
    [entry] = ledger_entries(engine, case_id="WP-1")
    assert (entry.quota_key, entry.action, entry.actor) == (KEY, "reserve", "caseworker-7")
    assert entry.at.tzinfo is not None
    assert before - timedelta(seconds=1) <= entry.at <= datetime.now(UTC) + timedelta(seconds=1)


def test_retried_reservation_never_takes_two_units(engine: Engine) -> None:
    _pool(engine, 3)

    first = reserve(engine, _req("WP-1"))
    again = reserve(engine, _req("WP-1"))

    assert first.ok and again.ok
    assert again.state == "reserved"
    assert _counters(engine) == (3, 1, 0)
    assert _actions(engine) == Counter(reserve=1)


def test_reservation_of_a_committed_case_returns_the_committed_hold(engine: Engine) -> None:
    _pool(engine, 3)
    reserve(engine, _req("WP-1"))
    commit(engine, _req("WP-1"))

    result = reserve(engine, _req("WP-1"))

    assert (result.ok, result.state, result.remaining) == (True, "committed", 2)
    assert _counters(engine) == (3, 0, 1)


def test_reservation_beyond_the_limit_is_refused_as_exhausted(engine: Engine) -> None:
    _pool(engine, 2)
    assert reserve(engine, _req("WP-1")).ok
    assert reserve(engine, _req("WP-2")).ok

    refused = reserve(engine, _req("WP-3"))

    assert (refused.ok, refused.state, refused.remaining) == (False, "exhausted", 0)
    assert _counters(engine) == (2, 2, 0)
    assert ledger_entries(engine, case_id="WP-3") == []
    _assert_books_balance(engine)


def test_exhausted_case_gets_a_unit_once_one_is_released(engine: Engine) -> None:
    _pool(engine, 1)
    reserve(engine, _req("WP-1"))
    assert reserve(engine, _req("WP-2")).state == "exhausted"

    release(engine, _req("WP-1"))
    retried = reserve(engine, _req("WP-2"))

    assert (retried.ok, retried.state, retried.remaining) == (True, "reserved", 0)
    _assert_books_balance(engine)


def test_reservation_in_an_unknown_pool_is_refused(engine: Engine) -> None:
    result = reserve(engine, _req("WP-1", key="work_permit:atlantis:3:2026"))

    assert (result.ok, result.state, result.remaining) == (False, "unknown_quota", None)
    assert ledger_entries(engine) == []


def test_commit_moves_the_unit_from_reserved_to_used_once(engine: Engine) -> None:
    _pool(engine, 3)
    reserve(engine, _req("WP-1"))

    first = commit(engine, _req("WP-1"))
    again = commit(engine, _req("WP-1"))

    assert (first.ok, first.state, first.remaining) == (True, "committed", 2)
    assert (again.ok, again.state) == (True, "committed")
    assert _counters(engine) == (3, 0, 1)
    assert _actions(engine) == Counter(reserve=1, commit=1)


def test_release_returns_the_unit_once(engine: Engine) -> None:
    _pool(engine, 3)
    reserve(engine, _req("WP-1"))

    first = release(engine, _req("WP-1"))
    again = release(engine, _req("WP-1"))

    assert (first.ok, first.state, first.remaining) == (True, "released", 3)
    assert (again.ok, again.state, again.remaining) == (True, "released", 3)
    assert _counters(engine) == (3, 0, 0)
    assert _actions(engine) == Counter(reserve=1, release=1)


def test_issued_permits_unit_is_not_returned_by_release(engine: Engine) -> None:
    _pool(engine, 3)
    reserve(engine, _req("WP-1"))
    commit(engine, _req("WP-1"))

    result = release(engine, _req("WP-1"))

    assert (result.ok, result.state) == (False, "committed")
    assert _counters(engine) == (3, 0, 1)
    assert _actions(engine) == Counter(reserve=1, commit=1)


def test_released_case_cannot_reserve_or_commit_again(engine: Engine) -> None:
    _pool(engine, 3)
    reserve(engine, _req("WP-1"))
    release(engine, _req("WP-1"))

    again = reserve(engine, _req("WP-1"))
    committed = commit(engine, _req("WP-1"))

    assert (again.ok, again.state) == (False, "released")
    assert (committed.ok, committed.state) == (False, "released")
    assert _counters(engine) == (3, 0, 0)
    assert _actions(engine) == Counter(reserve=1, release=1)


def test_commit_or_release_without_a_reservation_changes_nothing(engine: Engine) -> None:
    _pool(engine, 3)

    committed = commit(engine, _req("WP-9"))
    released = release(engine, _req("WP-9"))
    unknown = release(engine, _req("WP-9", key="kandas:atlantis:kandas:2026"))

    assert (committed.ok, committed.state, committed.remaining) == (False, "released", 3)
    assert (released.ok, released.state, released.remaining) == (False, "released", 3)
    assert (unknown.ok, unknown.state) == (False, "unknown_quota")
    assert _counters(engine) == (3, 0, 0)
    assert ledger_entries(engine) == []


def test_changing_a_limit_keeps_what_is_reserved_and_used(engine: Engine) -> None:
    _pool(engine, 3)
    reserve(engine, _req("WP-1"))
    reserve(engine, _req("WP-2"))
    commit(engine, _req("WP-2"))

    _pool(engine, 1)  # lowered below what is already allocated

    assert _counters(engine) == (1, 1, 1)
    [view] = quota_view(engine)
    assert view["remaining"] == 0
    assert reserve(engine, _req("WP-3")).state == "exhausted"

    _pool(engine, 5)
    assert _counters(engine) == (5, 1, 1)
    assert reserve(engine, _req("WP-3")).remaining == 2


def test_quota_view_lists_pools_with_remaining_units(engine: Engine) -> None:
    _pool(engine, 4)
    kandas = _pool(engine, 10, quota_key("kandas", "pavlodar", "kandas", 2026))
    _pool(engine, 10, quota_key("kandas", "pavlodar", "kandas", 2025))
    reserve(engine, _req("K-1", key=kandas))

    assert [p["quota_key"] for p in quota_view(engine)] == [
        "kandas:pavlodar:kandas:2025",
        kandas,
        KEY,
    ]
    [pool] = quota_view(engine, kind="kandas", region="pavlodar", year=2026)
    assert pool == {
        "quota_key": kandas,
        "kind": "kandas",
        "region": "pavlodar",
        "category": "kandas",
        "year": 2026,
        "limit": 10,
        "reserved": 1,
        "used": 0,
        "remaining": 9,
    }
    assert quota_view(engine, region="astana") == []


def test_quota_key_rejects_parts_that_would_make_it_ambiguous() -> None:
    assert (
        quota_key("work_permit", "astana", "seasonal", 2026) == "work_permit:astana:seasonal:2026"
    )
    with pytest.raises(ValueError):
        quota_key("work_permit", "astana:x", "1", 2026)
    with pytest.raises(ValueError):
        quota_key("work_permit", "", "1", 2026)


# --------------------------------------------------------------------------- concurrency


def _concurrent_distinct_cases(engine: Engine, threads: int, limit: int) -> None:
    _pool(engine, limit)

    results = _race(threads, lambda i: reserve(engine, _req(f"WP-{i}")))

    states = Counter(r.state for r in results)
    assert states == Counter(reserved=limit, exhausted=threads - limit)
    assert sum(r.ok for r in results) == limit
    assert _counters(engine) == (limit, limit, 0)
    assert _hold_states(engine) == Counter(reserved=limit)
    assert _actions(engine) == Counter(reserve=limit)
    granted = {r.case_id for r in results if r.ok}
    assert {e.case_id for e in ledger_entries(engine, quota_key=KEY)} == granted


@pytest.mark.postgres
def test_concurrent_reservations_grant_exactly_the_units_available(pg_engine: Engine) -> None:
    _concurrent_distinct_cases(pg_engine, threads=40, limit=7)


def test_concurrent_reservations_grant_exactly_the_units_available_on_sqlite(
    sqlite_engine: Engine,
) -> None:
    _concurrent_distinct_cases(sqlite_engine, threads=12, limit=5)


@pytest.mark.postgres
def test_concurrent_retries_of_one_reservation_take_one_unit(pg_engine: Engine) -> None:
    _pool(pg_engine, 7)

    results = _race(20, lambda _: reserve(pg_engine, _req("WP-1")))

    assert all(r.ok and r.state == "reserved" for r in results)
    assert {(r.quota_key, r.case_id) for r in results} == {(KEY, "WP-1")}
    assert _counters(pg_engine) == (7, 1, 0)
    assert _hold_states(pg_engine) == Counter(reserved=1)
    assert _actions(pg_engine) == Counter(reserve=1)


@pytest.mark.postgres
def test_racing_commit_and_release_of_one_hold_apply_exactly_once(pg_engine: Engine) -> None:
    holds = 15
    _pool(pg_engine, holds)
    for i in range(holds):
        assert reserve(pg_engine, _req(f"WP-{i}")).ok

    # Thread 2i commits case i while thread 2i+1 releases it.
    def act(i: int) -> QuotaResult:
        req = _req(f"WP-{i // 2}")
        return commit(pg_engine, req) if i % 2 == 0 else release(pg_engine, req)

    results = _race(2 * holds, act)

    committed = released = 0
    for case in range(holds):
        by_commit, by_release = results[2 * case], results[2 * case + 1]
        assert by_commit.ok != by_release.ok, (by_commit, by_release)
        # Whoever lost reports the state the winner left behind.
        assert by_commit.state == by_release.state
        committed += by_commit.ok
        released += by_release.ok
    assert _counters(pg_engine) == (holds, 0, committed)
    assert _hold_states(pg_engine) == Counter(committed=committed, released=released)
    _assert_books_balance(pg_engine)


@pytest.mark.postgres
def test_mixed_traffic_keeps_counters_holds_and_ledger_in_step(pg_engine: Engine) -> None:
    _pool(pg_engine, 10)
    ops = [reserve, reserve, reserve, commit, release]  # retries of each included

    def act(i: int) -> QuotaResult:
        return ops[i % len(ops)](pg_engine, _req(f"WP-{i % 25}"))

    _race(60, act)

    _assert_books_balance(pg_engine)


def test_locked_database_is_retried_rather_than_reported(sqlite_engine: Engine) -> None:
    attempts: list[int] = []

    def flaky(conn: Connection) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise OperationalError(
                "UPDATE quota", {}, sqlite3.OperationalError("database is locked")
            )
        return "done"

    assert ledger._transaction(sqlite_engine, flaky) == "done"
    assert len(attempts) == 3


def test_other_database_errors_are_not_retried(sqlite_engine: Engine) -> None:
    attempts: list[int] = []

    def broken(conn: Connection) -> None:
        attempts.append(1)
        raise OperationalError("UPDATE quota", {}, sqlite3.OperationalError("no such table"))

    with pytest.raises(OperationalError):
        ledger._transaction(sqlite_engine, broken)
    assert len(attempts) == 1


# --------------------------------------------------------------------------- demo data


@pytest.mark.parametrize("total", [0, 1, 7, 726, 3402, 5893, 3131, 4994, 100_003])
def test_national_quota_split_sums_exactly_to_the_total(total: int) -> None:
    split = split_national_quota(total, REGION_WEIGHTS)

    assert sum(split.values()) == total
    assert set(split) == set(REGION_WEIGHTS)
    assert all(n >= 0 for n in split.values())


def test_national_quota_split_follows_the_weights_and_is_deterministic() -> None:
    assert split_national_quota(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert split_national_quota(5, {"a": 0, "b": 3, "c": 1}) == {"a": 0, "b": 4, "c": 1}
    assert split_national_quota(0, {"a": 0}) == {"a": 0}
    with pytest.raises(ValueError):
        split_national_quota(1, {"a": 0})
    with pytest.raises(ValueError):
        split_national_quota(-1, {"a": 1})


def test_region_weights_cover_every_region_with_the_capital_cities_first() -> None:
    assert set(REGION_WEIGHTS) == {r.value for r in Region}
    top_two = sorted(REGION_WEIGHTS, key=REGION_WEIGHTS.__getitem__, reverse=True)[:2]
    assert set(top_two) == {Region.almaty_city.value, Region.astana.value}
    assert set(KANDAS_QUOTA_2026) | set(RESETTLER_QUOTA_2026) <= set(REGION_WEIGHTS)
    assert sum(KANDAS_QUOTA_2026.values()) + sum(RESETTLER_QUOTA_2026.values()) == 8278


def test_loading_demo_quotas_twice_keeps_allocations(engine: Engine) -> None:
    expected = len(WORK_PERMIT_QUOTA_2026) * len(Region) + 8 + 7

    assert load_demo_quotas(engine) == expected
    key = quota_key("work_permit", "astana", "1", 2026)
    reserve(engine, _req("WP-1", key=key))
    commit(engine, _req("WP-1", key=key))
    reserve(engine, _req("WP-2", key=key))
    before = quota_view(engine)

    assert load_demo_quotas(engine) == expected

    assert quota_view(engine) == before
    assert len(before) == expected
    by_kind = Counter(p["kind"] for p in before)
    assert by_kind == Counter(
        work_permit=len(WORK_PERMIT_QUOTA_2026) * len(Region), kandas=8, resettler=7
    )
    for category, total in WORK_PERMIT_QUOTA_2026.items():
        assert sum(p["limit"] for p in before if p["category"] == category) == total
    [astana] = [p for p in before if p["quota_key"] == key]
    assert (astana["reserved"], astana["used"]) == (1, 1)
    [pavlodar] = quota_view(engine, kind="kandas", region="pavlodar")
    assert pavlodar["limit"] == 977
