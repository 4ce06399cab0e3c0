"""Quotas: limit, reserved, used and remaining per pool."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from activities.quota import quota_view
from api import policy
from api.auth import CurrentActor
from api.deps import SessionDep
from casework.regions import Region

router = APIRouter(tags=["quotas"])


@router.get("/quotas")
def list_quotas(
    actor: CurrentActor,
    session: SessionDep,
    kind: str | None = None,
    region: Region | None = None,
    year: int | None = None,
) -> list[dict[str, Any]]:
    """Quota pools with limit, reserved, used and remaining (staff only)."""
    policy.require_staff(actor)
    engine = session.get_bind()
    return quota_view(engine, kind=kind, region=region.value if region else None, year=year)  # type: ignore[arg-type]
