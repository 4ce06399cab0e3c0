"""The SLA board: overview, at-risk and breached lists, breach forecast, live clock events.

Supervisors (their region, or the country) and auditors only; every query is cut to the
caller's scope by the one policy, so a regional board never shows another region.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from api import sla
from api.auth import CurrentActor
from api.deps import SessionDep
from api.errors import Problem
from casework.contracts import Actor
from casework.regions import Region

router = APIRouter(tags=["sla"])

KEEPALIVE_S = 15.0

StateQuery = Annotated[
    str | None,
    Query(pattern="^(at_risk|breached)$", description="at_risk or breached; both when omitted"),
]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0)]
WindowDays = Annotated[
    int, Query(ge=1, le=90, description="days of completed tasks that give a step's throughput")
]


def _now() -> datetime:
    return datetime.now(UTC)


def _region(region: Region | None) -> str | None:
    return region.value if region else None


@router.get("/sla/overview")
def overview(
    actor: CurrentActor,
    session: SessionDep,
    period_days: Annotated[int, Query(ge=1, le=366)] = 30,
    procedure: str | None = None,
    region: Region | None = None,
) -> dict[str, Any]:
    """Open tasks and cases by SLA state, oldest task, time in step and breaches per day, by procedure, region and step."""
    sla.require_board(actor)
    return sla.overview(
        session,
        actor,
        now=_now(),
        period_days=period_days,
        procedure=procedure,
        region=_region(region),
    )


@router.get("/sla/cases")
def at_risk_cases(
    actor: CurrentActor,
    session: SessionDep,
    state: StateQuery = None,
    procedure: str | None = None,
    region: Region | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Open cases at risk or breached, most overdue first, each with its deadline's explanation."""
    sla.require_board(actor)
    return sla.sla_cases(
        session,
        actor,
        now=_now(),
        state=state,
        limit=limit,
        offset=offset,
        procedure=procedure,
        region=_region(region),
    )


@router.get("/sla/tasks")
def at_risk_tasks(
    actor: CurrentActor,
    session: SessionDep,
    state: StateQuery = None,
    procedure: str | None = None,
    region: Region | None = None,
    window_days: WindowDays = 14,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Open tasks at risk or breached, most overdue first, with the deadline's explanation and a breach forecast."""
    sla.require_board(actor)
    return sla.sla_tasks(
        session,
        actor,
        now=_now(),
        state=state,
        limit=limit,
        offset=offset,
        window_days=window_days,
        procedure=procedure,
        region=_region(region),
    )


@router.get("/sla/forecast")
def breach_forecast(
    actor: CurrentActor,
    session: SessionDep,
    procedure: str | None = None,
    region: Region | None = None,
    window_days: WindowDays = 14,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Each open task's queue position and its step's recent throughput: likely breaches first."""
    sla.require_board(actor)
    now = _now()
    items = sla.forecast(
        session,
        actor,
        now=now,
        window_days=window_days,
        procedure=procedure,
        region=_region(region),
    )
    return {
        "now": sla.iso(now),
        "window_days": window_days,
        "total": len(items),
        "likely_breaches": sum(1 for f in items if f["likely_breach"] is True),
        "limit": limit,
        "offset": offset,
        "items": items[offset : offset + limit],
    }


def _resume_point(after: int, last_event_id: str | None) -> int:
    if last_event_id is None or not last_event_id.strip():
        return after
    try:
        header = int(last_event_id)
    except ValueError:
        raise Problem(
            422,
            "Invalid request",
            "Last-Event-ID must be an event id from this stream",
            kind="invalid-request",
            errors=[{"name": "Last-Event-ID", "reason": "not an integer"}],
        ) from None
    # A reconnecting EventSource repeats the original URL: the header is the newer point.
    return max(after, header)


async def _events(
    request: Request,
    actor: Actor,
    after: int,
    poll: float,
    max_events: int | None,
    timeout: float | None,
) -> AsyncIterator[str]:
    engine = request.app.state.engine
    cursor = sla.EventCursor(last=after)
    started = last_write = time.monotonic()
    sent = 0
    yield f"retry: {int(max(poll, 1.0) * 1000)}\n\n"
    while True:
        events, more = await asyncio.to_thread(sla.stream_batch, engine, actor, cursor)
        for event in events:
            yield sla.sse_frame(event)
            sent += 1
            last_write = time.monotonic()
            if max_events is not None and sent >= max_events:
                return
        now = time.monotonic()
        if timeout is not None and now - started >= timeout:
            return
        if more:
            continue
        if now - last_write >= KEEPALIVE_S:
            yield ": keepalive\n\n"
            last_write = now
        if await request.is_disconnected():
            return
        wait = poll if timeout is None else min(poll, max(timeout - (now - started), 0.0))
        await asyncio.sleep(wait)


@router.get(
    "/sla/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def clock_events(
    request: Request,
    actor: CurrentActor,
    after: Annotated[int, Query(ge=0, description="resume after this event id")] = 0,
    poll: Annotated[float, Query(ge=0.05, le=60)] = 1.0,
    max_events: Annotated[int | None, Query(ge=1)] = None,
    timeout: Annotated[float | None, Query(gt=0, le=86400)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Server-sent clock events (at risk, breached, suspended, resumed, extended) and escalations in the caller's scope, oldest first."""
    sla.require_board(actor)
    start = _resume_point(after, last_event_id)
    return StreamingResponse(
        _events(request, actor, start, poll, max_events, timeout),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
