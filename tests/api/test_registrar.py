"""Registration rows of new cases are group-committed: every request's row lands, once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, func, select

from api.registrar import Registrar
from casework.db import CaseRow, create_all, get_engine


def row(case_id: str, **over: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "case_id": case_id,
        "procedure": "work_permit",
        "ruleset_version": "2026.01",
        "region": "astana",
        "status": "registered",
        "sla_state": "on_track",
        "applicant_party": "123456789012",
        "applicant_name": "Employer",
        "summary": {},
        "filed_at": now,
        "filed_by": "employer-1",
        "request_hash": "h",
        "updated_at": now,
        "rev": 0,
    }
    values.update(over)
    return values


async def test_concurrent_registrations_all_land_once_and_a_newer_row_is_kept(
    tmp_path: Path,
) -> None:
    engine = get_engine(f"sqlite:///{tmp_path}/rm.db")
    create_all(engine)
    registrar = Registrar(engine)
    # The workflow's own projection (rev 3) got there first for one of them.
    with Session(engine) as s:
        s.add(CaseRow(**row("WP-7", status="document_check", rev=3)))
        s.commit()

    await asyncio.gather(*(registrar.register(row(f"WP-{i}")) for i in range(60)))
    await registrar.register(row("WP-0"))  # a retry

    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(CaseRow)).one() == 60
        kept = s.get(CaseRow, "WP-7")
        assert kept is not None and kept.status == "document_check" and kept.rev == 3
    await registrar.close()


async def test_a_failed_commit_fails_every_request_in_it(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path}/rm.db")  # no tables: every insert fails
    registrar = Registrar(engine)
    results = await asyncio.gather(
        *(registrar.register(row(f"WP-{i}")) for i in range(5)), return_exceptions=True
    )
    assert len(results) == 5 and all(isinstance(r, OperationalError) for r in results)
    with pytest.raises(OperationalError, match="no such table"):
        await registrar.register(row("WP-9"))
    await registrar.close()
