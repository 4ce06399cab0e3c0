"""The quota ledger: reserve, commit and release one unit of a quota pool for one case.

Plain synchronous functions on an Engine; the worker wraps them in activities that run
on a thread pool. The promise they keep: no pool is ever over-allocated, whatever the
concurrency, and every movement of a unit is one row of the append-only ledger.

How that holds on both SQLite and PostgreSQL without SELECT ... FOR UPDATE:

- Every write transaction *starts* with a write (the hold insert, or the conditional
  update of the hold). On SQLite that takes the single writer lock up front, so the
  busy timeout applies and a stale read snapshot can never be upgraded; on PostgreSQL
  the row lock orders concurrent writers.
- A unit is taken by ``UPDATE quota SET reserved = reserved + 1 WHERE reserved + used
  < limit``: the database evaluates the guard against the latest committed row (on
  PostgreSQL, READ COMMITTED re-checks it after waiting for the row lock), so two
  transactions can never both take the last unit.
- The hold's primary key (quota_key, case_id) makes reserve idempotent per case: a
  second insert fails, and the caller gets the hold that won.
- Hold transitions are conditional (``WHERE state = 'reserved'``), so of a commit and a
  release racing for one hold exactly one applies.
- Locks are always taken hold first, pool second, so these operations cannot deadlock
  each other; serialization failures, deadlocks (PostgreSQL) and "database is locked"
  (SQLite) are retried anyway, with jittered backoff.

Outcomes (``QuotaResult.ok`` / ``state``):

============  ====================  ==========================  ==========================
hold before   reserve               commit                      release
============  ====================  ==========================  ==========================
none          True  reserved        False released (none held)  False released (none held)
              False exhausted
reserved      True  reserved (no-op) True committed             True  released
committed     True  committed        True committed (no-op)     False committed
released      False released         False released             True  released (no-op)
============  ====================  ==========================  ==========================

An unknown pool gives ``False unknown_quota`` wherever the case holds nothing in it.

Two decisions worth knowing:

- **An issued permit's unit is never returned by release.** Once committed, the unit is
  used for the year; revocation of a permit is a separate legal act, not a release.
- **A released hold is final: the same case cannot reserve again in that pool.** The
  case was refused or lapsed, and a closed case stays closed; the employer files a new
  application, which is a new case with its own hold. The ledger's unique constraint
  (quota_key, case_id, action) encodes the same rule, so each case has at most one
  reserve, one commit and one release entry per pool, and an activity retry can never
  write a movement twice.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, SQLModel, col

from casework.contracts import QuotaRequest, QuotaResult
from casework.db import QuotaEntryRow, QuotaHoldRow, QuotaRow
from casework.writer import write_transaction

__all__ = [
    "commit",
    "ensure_quota",
    "ledger_entries",
    "quota_key",
    "quota_view",
    "release",
    "reserve",
]

_T = TypeVar("_T")


def _table(model: type[SQLModel]) -> Table:
    return model.metadata.tables[str(model.__tablename__)]


QUOTA = _table(QuotaRow)
HOLD = _table(QuotaHoldRow)
LEDGER = _table(QuotaEntryRow)

RESERVED = "reserved"
COMMITTED = "committed"
RELEASED = "released"

# Enough to ride out a burst of contention; anything longer is the activity's retry
# policy's business, and every operation here is safe to repeat.
_MAX_ATTEMPTS = 8
_BASE_BACKOFF_S = 0.01
_PG_RETRYABLE = {"40001", "40P01"}  # serialization_failure, deadlock_detected


class _Rollback(Exception):
    """Leaves the transaction without committing and hands back the answer."""

    def __init__(self, result: QuotaResult) -> None:
        super().__init__(result.state)
        self.result = result


# --------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _is_transient(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_RETRYABLE:
        return True
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        return "locked" in message or "busy" in message
    return False


def _transaction(engine: Engine, work: Callable[[Connection], _T]) -> _T:
    """Run ``work`` in one transaction, retrying it whole on transient conflicts."""
    attempt = 1
    while True:
        try:
            with write_transaction(engine) as conn:
                return work(conn)
        except DBAPIError as exc:
            if attempt >= _MAX_ATTEMPTS or not _is_transient(exc):
                raise
        delay = _BASE_BACKOFF_S * 2 ** (attempt - 1)
        time.sleep(random.uniform(delay / 2, delay))
        attempt += 1


def _remaining(limit: int, reserved: int, used: int) -> int:
    # A limit lowered below what is already allocated must not read as negative room.
    return max(0, limit - reserved - used)


def _pool_remaining(conn: Connection, key: str) -> int | None:
    row = conn.execute(
        select(QUOTA.c.limit, QUOTA.c.reserved, QUOTA.c.used).where(QUOTA.c.quota_key == key)
    ).one_or_none()
    return None if row is None else _remaining(row.limit, row.reserved, row.used)


def _hold_state(conn: Connection, req: QuotaRequest) -> str | None:
    return conn.execute(
        select(HOLD.c.state).where(HOLD.c.quota_key == req.quota_key, HOLD.c.case_id == req.case_id)
    ).scalar_one_or_none()


def _result(req: QuotaRequest, ok: bool, state: str, remaining: int | None) -> QuotaResult:
    return QuotaResult.model_validate(
        {
            "quota_key": req.quota_key,
            "case_id": req.case_id,
            "ok": ok,
            "state": state,
            "remaining": remaining,
        }
    )


def _existing_hold_result(conn: Connection, req: QuotaRequest) -> QuotaResult | None:
    """What a repeated reserve answers: the hold already there, or None if there is none."""
    state = _hold_state(conn, req)
    if state is None:
        return None
    return _result(req, state != RELEASED, state, _pool_remaining(conn, req.quota_key))


def _nothing_held(conn: Connection, req: QuotaRequest) -> QuotaResult:
    remaining = _pool_remaining(conn, req.quota_key)
    if remaining is None:
        return _result(req, False, "unknown_quota", None)
    return _result(req, False, RELEASED, remaining)


def _append_entry(conn: Connection, req: QuotaRequest, action: str, at: datetime) -> None:
    conn.execute(
        insert(LEDGER).values(
            quota_key=req.quota_key, case_id=req.case_id, action=action, at=at, actor=req.actor
        )
    )


# --------------------------------------------------------------------------- pools


def quota_key(kind: str, region: str, category: str, year: int) -> str:
    for part in (kind, region, category):
        if not part or ":" in part:
            raise ValueError(f"quota key part must be non-empty and without ':': {part!r}")
    return f"{kind}:{region}:{category}:{year}"


def ensure_quota(
    engine: Engine, kind: str, region: str, category: str, year: int, limit: int
) -> None:
    """Create the pool, or set its limit; reserved and used are never touched."""
    if limit < 0:
        raise ValueError(f"quota limit must be >= 0, got {limit}")
    key = quota_key(kind, region, category, year)

    def work(conn: Connection) -> None:
        updated = conn.execute(
            update(QUOTA).where(QUOTA.c.quota_key == key).values(limit=limit)
        ).rowcount
        if updated == 0:
            conn.execute(
                insert(QUOTA).values(
                    quota_key=key,
                    kind=kind,
                    region=region,
                    category=category,
                    year=year,
                    limit=limit,
                    reserved=0,
                    used=0,
                )
            )

    try:
        _transaction(engine, work)
    except IntegrityError:
        # Another loader created the pool between our update and insert: it exists
        # now, so the update path applies.
        _transaction(engine, work)


# --------------------------------------------------------------------------- movements


def reserve(engine: Engine, req: QuotaRequest) -> QuotaResult:
    """Take one unit for the case, unless it already holds one (then return that hold)."""
    with engine.connect() as conn:
        # Fast path for activity retries: no write, no unique-violation noise.
        existing = _existing_hold_result(conn, req)
    if existing is not None:
        return existing

    def work(conn: Connection) -> QuotaResult:
        now = _now()
        # The hold goes first: it is the per-case lock, and the first write of the
        # transaction (see the module docstring for why that matters on SQLite).
        conn.execute(
            insert(HOLD).values(
                quota_key=req.quota_key, case_id=req.case_id, state=RESERVED, updated_at=now
            )
        )
        pool = conn.execute(
            update(QUOTA)
            .where(
                QUOTA.c.quota_key == req.quota_key,
                QUOTA.c.reserved + QUOTA.c.used < QUOTA.c.limit,
            )
            .values(reserved=QUOTA.c.reserved + 1)
            .returning(QUOTA.c.limit, QUOTA.c.reserved, QUOTA.c.used)
        ).one_or_none()
        if pool is None:
            remaining = _pool_remaining(conn, req.quota_key)
            state = "unknown_quota" if remaining is None else "exhausted"
            # Roll the hold back too: an exhausted case holds nothing and may try again.
            raise _Rollback(_result(req, False, state, remaining))
        _append_entry(conn, req, "reserve", now)
        return _result(req, True, RESERVED, _remaining(pool.limit, pool.reserved, pool.used))

    try:
        return _transaction(engine, work)
    except _Rollback as rollback:
        return rollback.result
    except IntegrityError:
        # A concurrent reserve for the same case committed its hold first; answer with it.
        with engine.connect() as conn:
            existing = _existing_hold_result(conn, req)
        if existing is None:  # pragma: no cover - holds are never deleted
            raise
        return existing


def _transition(
    engine: Engine,
    req: QuotaRequest,
    *,
    to_state: str,
    action: str,
    counters: dict[str, Any],
    on_other_state: Callable[[str, int | None], QuotaResult],
) -> QuotaResult:
    """Move a reserved hold to ``to_state`` and adjust the pool, exactly once."""

    def work(conn: Connection) -> QuotaResult:
        now = _now()
        moved = conn.execute(
            update(HOLD)
            .where(
                HOLD.c.quota_key == req.quota_key,
                HOLD.c.case_id == req.case_id,
                HOLD.c.state == RESERVED,
            )
            .values(state=to_state, updated_at=now)
        ).rowcount
        if moved == 0:
            state = _hold_state(conn, req)
            if state is None:
                return _nothing_held(conn, req)
            return on_other_state(state, _pool_remaining(conn, req.quota_key))
        pool = conn.execute(
            update(QUOTA)
            .where(QUOTA.c.quota_key == req.quota_key, QUOTA.c.reserved > 0)
            .values(**counters)
            .returning(QUOTA.c.limit, QUOTA.c.reserved, QUOTA.c.used)
        ).one_or_none()
        if pool is None:
            # A reserved hold without its unit in the pool means the ledger was edited
            # by hand; refuse loudly rather than drive a counter negative.
            raise RuntimeError(f"quota {req.quota_key!r} has no reserved unit for {req.case_id}")
        _append_entry(conn, req, action, now)
        return _result(req, True, to_state, _remaining(pool.limit, pool.reserved, pool.used))

    return _transaction(engine, work)


def commit(engine: Engine, req: QuotaRequest) -> QuotaResult:
    """Turn the case's reserved unit into a used one (the permit is issued)."""

    def other(state: str, remaining: int | None) -> QuotaResult:
        return _result(req, state == COMMITTED, state, remaining)

    return _transition(
        engine,
        req,
        to_state=COMMITTED,
        action="commit",
        counters={"reserved": QUOTA.c.reserved - 1, "used": QUOTA.c.used + 1},
        on_other_state=other,
    )


def release(engine: Engine, req: QuotaRequest) -> QuotaResult:
    """Give the case's reserved unit back to the pool (refusal, lapse, withdrawal)."""

    def other(state: str, remaining: int | None) -> QuotaResult:
        # Released already: same answer as the first time. Committed: refused.
        return _result(req, state == RELEASED, state, remaining)

    return _transition(
        engine,
        req,
        to_state=RELEASED,
        action="release",
        counters={"reserved": QUOTA.c.reserved - 1},
        on_other_state=other,
    )


# --------------------------------------------------------------------------- reading


def quota_view(
    engine: Engine,
    kind: str | None = None,
    region: str | None = None,
    year: int | None = None,
) -> list[dict[str, Any]]:
    """Pools with their limit, reserved, used and remaining units."""
    query = select(QUOTA).order_by(QUOTA.c.kind, QUOTA.c.year, QUOTA.c.region, QUOTA.c.category)
    if kind is not None:
        query = query.where(QUOTA.c.kind == kind)
    if region is not None:
        query = query.where(QUOTA.c.region == region)
    if year is not None:
        query = query.where(QUOTA.c.year == year)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "quota_key": row.quota_key,
            "kind": row.kind,
            "region": row.region,
            "category": row.category,
            "year": row.year,
            "limit": row.limit,
            "reserved": row.reserved,
            "used": row.used,
            "remaining": _remaining(row.limit, row.reserved, row.used),
        }
        for row in rows
    ]


def ledger_entries(
    engine: Engine, case_id: str | None = None, quota_key: str | None = None
) -> list[QuotaEntryRow]:
    """Ledger entries in the order they were written."""
    query = select(QuotaEntryRow).order_by(col(QuotaEntryRow.id))
    if case_id is not None:
        query = query.where(col(QuotaEntryRow.case_id) == case_id)
    if quota_key is not None:
        query = query.where(col(QuotaEntryRow.quota_key) == quota_key)
    with Session(engine, expire_on_commit=False) as session:
        entries = list(session.scalars(query).all())
        session.expunge_all()
    return entries
