"""The supervisors' SLA board over HTTP, on read-model rows written directly (no Temporal).

Two regions (astana, almaty_city), two procedures, open tasks in every SLA state, done
tasks with known durations, live clocks with explanations and clock events; the same
tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from api import sla
from api.auth import mint_token
from api.main import create_app
from api.sla import EventCursor, percentile, utc
from casework.contracts import KZ_TZ, Actor, Role
from casework.db import CaseEventRow, CaseRow, ClockRow, TaskRow
from casework.settings import Settings

WP, KS = "work_permit", "kandas_status"
AST, ALM = "astana", "almaty_city"
CONSULATE = "KZ-CN-URUMQI"


# --------------------------------------------------------------------------- seed data


@dataclass
class Board:
    http: httpx.AsyncClient
    settings: Settings
    engine: Engine
    now: datetime
    events: list[dict[str, Any]]  # the inserted clock events, with their ids

    def token(self, role: str, **scope: Any) -> dict[str, str]:
        actor = Actor(user_id=f"{role}-test", role=Role(role), **scope)
        return {"Authorization": f"Bearer {mint_token(actor, self.settings)}"}

    async def get(self, path: str, who: dict[str, str], **params: Any) -> Any:
        r = await self.http.get(f"/api/v1{path}", headers=who, params=params)
        assert r.status_code == 200, r.text
        return r.json()


# case_id: procedure, region, status, sla_state, hours from now to the deadline
CASES: dict[str, tuple[str, str, str, str, float | None]] = {
    "A1": (WP, AST, "decision", "breached", -30),
    "A2": (WP, AST, "decision", "breached", -2),
    "A3": (WP, AST, "decision", "at_risk", 10),
    "A4": (WP, AST, "document_check", "on_track", 200),
    "A5": (KS, AST, "commission_review", "suspended", 50),
    "A6": (WP, AST, "issued", "stopped", None),
    "B1": (WP, ALM, "decision", "breached", -5),
    "B2": (KS, ALM, "settlement", "at_risk", 3),
    "B3": (WP, ALM, "document_check", "on_track", 300),
    "B4": (WP, ALM, "refused", "stopped", None),
}

# task_id: case, procedure, kind, task region, sla_state, opened hours ago, due in hours
OPEN_TASKS: dict[str, tuple[str, str, str, str | None, str, float, float]] = {
    "tA1": ("A1", WP, "decision", AST, "breached", 100, -30),
    "tA2": ("A2", WP, "decision", AST, "breached", 60, -2),
    "tA3": ("A3", WP, "decision", AST, "at_risk", 20, 10),
    "tA4": ("A4", WP, "document_check", AST, "on_track", 1, 200),
    "tA5": ("A5", KS, "commission", AST, "suspended", 30, 50),
    "tB1": ("B1", WP, "decision", ALM, "breached", 40, -5),
    "tB2": ("B2", KS, "settlement", ALM, "at_risk", 10, 3),
    "tB3": ("B3", WP, "document_check", ALM, "on_track", 2, 300),
    # A consular task has no region of its own: it belongs to its case's region.
    "tB4": ("B2", KS, "consular_check", None, "at_risk", 5, 20),
}

# task_id: case, procedure, kind, region, completed hours ago, duration in hours
DONE_TASKS: dict[str, tuple[str, str, str, str, float, float]] = {
    "dA1": ("A6", WP, "document_check", AST, 24, 2),
    "dA2": ("A6", WP, "document_check", AST, 48, 4),
    "dA3": ("A6", WP, "document_check", AST, 72, 6),
    "dA4": ("A6", WP, "document_check", AST, 96, 8),
    "dA5": ("A6", WP, "document_check", AST, 40 * 24, 100),  # outside every period
    "dA6": ("A6", WP, "decision", AST, 30, 10),
    "dA7": ("A6", WP, "decision", AST, 50, 30),
    "dB1": ("B4", WP, "decision", ALM, 20 * 24, 12),  # in the 30-day period, not the 14-day window
}

# In id order: (case, kind, hours ago); kinds outside the stream are mixed in on purpose.
EVENTS: list[tuple[str, str, float]] = [
    ("A6", "clock_breached", 40 * 24),
    ("A1", "clock_started", 120),
    ("A1", "clock_at_risk", 60),
    ("B1", "clock_at_risk", 20),
    ("A1", "clock_breached", 30),
    ("A1", "task_escalated", 30),
    ("B1", "clock_breached", 5),
    ("A5", "clock_suspended", 4),
    ("B2", "clock_at_risk", 3),
    ("A2", "clock_breached", 2),
    ("A1", "status", 1.5),
    ("A4", "clock_extended", 1),
]
STREAMED = {
    "clock_at_risk",
    "clock_breached",
    "clock_suspended",
    "clock_resumed",
    "clock_extended",
    "task_escalated",
}


def explanation(case_id: str) -> str:
    return f"{case_id}: 7 working days from filing; 16 Dec (Independence Day) skipped"


def seed(engine: Engine, now: datetime) -> list[dict[str, Any]]:
    def ago(h: float) -> datetime:
        return now - timedelta(hours=h)

    with Session(engine) as s:
        for case_id, (proc, region, status, state, due_h) in CASES.items():
            deadline = now + timedelta(hours=due_h) if due_h is not None else None
            s.add(
                CaseRow(
                    case_id=case_id,
                    procedure=proc,
                    ruleset_version="2026.01",
                    region=region,
                    status=status,
                    sla_state=state,
                    deadline=deadline,
                    applicant_party="123456789012",
                    applicant_name=f"Applicant {case_id}",
                    filed_at=ago(200),
                    filed_by="employer",
                    request_hash="h",
                    consulate=CONSULATE if proc == KS else None,
                    updated_at=now,
                )
            )
            s.add(
                ClockRow(
                    case_id=case_id,
                    name="consideration",
                    step="consideration",
                    state=state,
                    term={"amount": 7, "unit": "working_days"},
                    started_at=ago(200),
                    deadline=deadline or ago(100),
                    warn_at=None,
                    explanation=explanation(case_id),
                    skipped_days=[{"day": "2026-12-16", "reason": "Independence Day"}],
                    updated_at=now,
                )
            )
        for task_id, (case_id, proc, kind, region, state, opened_h, due_h) in OPEN_TASKS.items():
            s.add(
                TaskRow(
                    task_id=task_id,
                    case_id=case_id,
                    procedure=proc,
                    kind=kind,
                    title=kind,
                    role="consulate_officer" if region is None else "caseworker",
                    region=region,
                    consulate=CONSULATE if region is None else None,
                    status="open",
                    due_at=now + timedelta(hours=due_h),
                    sla_state=state,
                    opened_at=ago(opened_h),
                )
            )
        for task_id, (case_id, proc, kind, region, done_h, took_h) in DONE_TASKS.items():
            s.add(
                TaskRow(
                    task_id=task_id,
                    case_id=case_id,
                    procedure=proc,
                    kind=kind,
                    title=kind,
                    role="caseworker",
                    region=region,
                    status="done",
                    sla_state="stopped",
                    opened_at=ago(done_h + took_h),
                    completed_at=ago(done_h),
                    completed_by="cw",
                )
            )
        s.commit()
        rows = []
        for seq, (case_id, kind, h) in enumerate(EVENTS, start=1):
            data: dict[str, Any] = {
                "clock": "consideration",
                "step": "consideration",
                "deadline": (now + timedelta(hours=CASES[case_id][4] or 0)).isoformat(),
                "explanation": explanation(case_id),
            }
            if kind == "task_escalated":
                data = {"task_id": "tA1", "clock": "consideration", "action": "escalate"}
            row = CaseEventRow(
                case_id=case_id, seq=seq, kind=kind, at=ago(h), actor="system", data=data
            )
            s.add(row)
            # One commit per event: ids follow the order of the list.
            s.commit()
            rows.append({"id": row.id, "case_id": case_id, "kind": kind, "at": ago(h)})
    return rows


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def board_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path)
    request.getfixturevalue("pg_engine")  # empties the tables after the test
    return Settings(data_dir=tmp_path, database_url=request.getfixturevalue("pg_url"))


@pytest.fixture
async def board(board_settings: Settings) -> AsyncIterator[Board]:
    # The board only reads the read model: no Temporal client is needed.
    app = create_app(board_settings, client=object())  # type: ignore[arg-type]
    now = datetime.now(UTC)
    events = seed(app.state.engine, now)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield Board(http, board_settings, app.state.engine, now, events)


def expected_events(board: Board, regions: set[str]) -> list[dict[str, Any]]:
    return [e for e in board.events if e["kind"] in STREAMED and CASES[e["case_id"]][1] in regions]


def parse_sse(body: str) -> list[dict[str, Any]]:
    events = []
    for block in body.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "data" in fields:
            events.append(
                {"id": int(fields["id"]), "event": fields["event"], **json.loads(fields["data"])}
            )
    return events


# --------------------------------------------------------------------------- who may look

PATHS = ["/sla/overview", "/sla/cases", "/sla/tasks", "/sla/forecast", "/sla/events"]


async def test_only_supervisors_and_auditors_see_the_board(board: Board) -> None:
    caseworker = board.token("caseworker", region=AST)
    employer = board.token("employer", party="123456789012")
    consulate = board.token("consulate_officer", consulate=CONSULATE)
    for path in PATHS:
        for who in (caseworker, employer, consulate):
            r = await board.http.get(f"/api/v1{path}", headers=who, params={"timeout": 0.1})
            assert r.status_code == 403, (path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        r = await board.http.get(f"/api/v1{path}")
        assert r.status_code == 401


# --------------------------------------------------------------------------- overview


def groups_by_key(body: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(g["procedure"], g["region"], g["step"]): g for g in body["groups"]}


async def test_overview_regional_supervisor_sees_only_its_region(board: Board) -> None:
    body = await board.get("/sla/overview", board.token("supervisor", region=AST))
    assert body["scope"] == {"role": "supervisor", "region": AST, "national": False}
    assert body["period_days"] == 30
    groups = groups_by_key(body)
    assert {g["region"] for g in body["groups"]} == {AST}
    assert set(groups) == {
        (WP, AST, "decision"),
        (WP, AST, "document_check"),
        (KS, AST, "commission"),
    }

    decision = groups[(WP, AST, "decision")]
    assert decision["open"] == {
        "on_track": 0,
        "at_risk": 1,
        "breached": 2,
        "suspended": 0,
        "total": 3,
    }
    assert decision["oldest"]["task_id"] == "tA1"
    assert decision["oldest"]["age_hours"] == pytest.approx(100, abs=0.1)
    # Durations 10 h and 30 h: median 20, p90 by linear interpolation 10 + 0.9 * 20.
    assert decision["time_in_step_hours"] == {"median": 20.0, "p90": 28.0, "count": 2}

    check = groups[(WP, AST, "document_check")]
    assert check["open"]["on_track"] == 1 and check["open"]["total"] == 1
    # 2, 4, 6, 8 h in the period (the 100 h task finished 40 days ago and is left out).
    assert check["time_in_step_hours"] == {"median": 5.0, "p90": 7.4, "count": 4}

    assert groups[(KS, AST, "commission")]["open"]["suspended"] == 1
    assert groups[(KS, AST, "commission")]["time_in_step_hours"] == {
        "median": None,
        "p90": None,
        "count": 0,
    }
    # A6 is issued: only the four open astana cases count.
    assert body["cases"] == {
        "on_track": 1,
        "at_risk": 1,
        "breached": 2,
        "suspended": 1,
        "total": 5,
    }
    assert {g["region"] for g in body["case_groups"]} == {AST}


def breaches_by_day(board: Board, regions: set[str], since: datetime) -> Counter[str]:
    return Counter(
        e["at"].astimezone(KZ_TZ).date().isoformat()
        for e in board.events
        if e["kind"] == "clock_breached" and CASES[e["case_id"]][1] in regions and e["at"] >= since
    )


async def test_overview_national_and_auditor_see_both_regions(board: Board) -> None:
    national = await board.get("/sla/overview", board.token("supervisor"))
    auditor = await board.get("/sla/overview", board.token("auditor"))
    assert national["groups"] == auditor["groups"]
    assert national["scope"]["national"] is True
    groups = groups_by_key(national)
    assert {g["region"] for g in national["groups"]} == {AST, ALM}
    assert groups[(WP, ALM, "decision")]["time_in_step_hours"] == {
        "median": 12.0,
        "p90": 12.0,
        "count": 1,
    }
    assert groups[(KS, ALM, "consular_check")]["open"]["at_risk"] == 1
    assert national["cases"]["breached"] == 3 and national["cases"]["total"] == 8

    # Breaches per Astana day, a dense series over the period, the 40-day-old one left out.
    since = datetime.fromisoformat(national["period"]["from"])
    days = national["breaches_per_day"]
    assert len(days) == 30 and days == sorted(days, key=lambda d: d["day"])
    got = {d["day"]: d["count"] for d in days if d["count"]}
    assert got == breaches_by_day(board, {AST, ALM}, since)
    assert sum(got.values()) == 3
    regional = await board.get("/sla/overview", board.token("supervisor", region=ALM))
    assert sum(d["count"] for d in regional["breaches_per_day"]) == 1

    # A shorter period drops the almaty decision finished 20 days ago.
    week = await board.get("/sla/overview", board.token("supervisor"), period_days=7)
    assert groups_by_key(week)[(WP, ALM, "decision")]["time_in_step_hours"]["count"] == 0
    assert len(week["breaches_per_day"]) == 7


# --------------------------------------------------------------------------- lists


async def test_breached_cases_most_overdue_first_with_explanation(board: Board) -> None:
    national = await board.get("/sla/cases", board.token("supervisor"), state="breached")
    assert national["total"] == 3
    assert [c["case_id"] for c in national["items"]] == ["A1", "B1", "A2"]
    first = national["items"][0]
    assert first["overdue_hours"] == pytest.approx(30, abs=0.1)
    assert first["explanation"] == explanation("A1")
    assert first["skipped_days"] == [{"day": "2026-12-16", "reason": "Independence Day"}]
    assert first["step"] == "consideration" and first["clocks"][0]["state"] == "breached"

    regional = await board.get(
        "/sla/cases", board.token("supervisor", region=AST), state="breached"
    )
    assert [c["case_id"] for c in regional["items"]] == ["A1", "A2"]

    page = await board.get(
        "/sla/cases", board.token("auditor"), state="breached", limit=1, offset=1
    )
    assert page["total"] == 3 and [c["case_id"] for c in page["items"]] == ["B1"]

    at_risk = await board.get("/sla/cases", board.token("supervisor"), state="at_risk")
    assert [c["case_id"] for c in at_risk["items"]] == ["B2", "A3"]
    assert at_risk["items"][0]["overdue_hours"] == 0
    assert at_risk["items"][0]["hours_left"] == pytest.approx(3, abs=0.1)

    both = await board.get("/sla/cases", board.token("supervisor"))
    assert [c["case_id"] for c in both["items"]] == ["A1", "B1", "A2", "B2", "A3"]

    r = await board.http.get(
        "/api/v1/sla/cases", headers=board.token("supervisor"), params={"state": "on_fire"}
    )
    assert r.status_code == 422


async def test_task_lists_are_scoped_sorted_and_carry_a_forecast(board: Board) -> None:
    national = await board.get("/sla/tasks", board.token("supervisor"), state="breached")
    assert [t["task_id"] for t in national["items"]] == ["tA1", "tB1", "tA2"]
    assert national["items"][0]["explanation"] == explanation("A1")
    assert national["items"][0]["overdue_hours"] == pytest.approx(30, abs=0.1)
    assert all(t["forecast"]["likely_breach"] is True for t in national["items"])

    at_risk = await board.get("/sla/tasks", board.token("auditor"), state="at_risk")
    assert [t["task_id"] for t in at_risk["items"]] == ["tB2", "tA3", "tB4"]
    consular = at_risk["items"][2]
    assert consular["region"] == ALM and consular["kind"] == "consular_check"

    astana = await board.get("/sla/tasks", board.token("supervisor", region=AST))
    assert [t["task_id"] for t in astana["items"]] == ["tA1", "tA2", "tA3"]
    almaty = await board.get("/sla/tasks", board.token("supervisor", region=ALM))
    # The regional view follows the inbox rule: a consular task is the mission's, not the region's.
    assert [t["task_id"] for t in almaty["items"]] == ["tB1", "tB2"]


# --------------------------------------------------------------------------- forecast


async def test_forecast_flags_a_long_slow_queue_and_clears_a_free_one(board: Board) -> None:
    body = await board.get("/sla/forecast", board.token("supervisor", region=AST))
    items = {f["task_id"]: f for f in body["items"]}
    assert set(items) == {"tA1", "tA2", "tA3", "tA4", "tA5"}

    # Two decisions ahead, two completed in 14 days: weeks of work against 10 h left.
    slow = items["tA3"]
    assert (slow["position"], slow["ahead"], slow["queue_length"]) == (3, 2, 3)
    assert slow["throughput_per_hour"] == pytest.approx(2 / (14 * 24), abs=1e-4)
    assert slow["throughput_scope"] == "region"
    assert slow["likely_breach"] is True
    assert slow["reason"].startswith("2 tasks ahead, 0.00595 tasks/h → done in ~504.0 h, due in")

    # Alone in its queue, four checks done in 14 days: ~84 h against 200 h left.
    free = items["tA4"]
    assert (free["position"], free["ahead"]) == (1, 0)
    assert free["likely_breach"] is False
    assert "0 tasks ahead" in free["reason"] and "done in ~84.0 h" in free["reason"]

    unknown = items["tA5"]
    assert unknown["likely_breach"] is None and unknown["reason"] == "no recent throughput"

    # Likely breaches first, each group by due time.
    flags = [f["likely_breach"] for f in body["items"]]
    assert flags[: flags.count(True)] == [True] * flags.count(True)
    assert [f["task_id"] for f in body["items"]][:3] == ["tA1", "tA2", "tA3"]
    assert body["likely_breaches"] == 3

    national = await board.get("/sla/forecast", board.token("supervisor"))
    items = {f["task_id"]: f for f in national["items"]}
    assert set(items) == set(OPEN_TASKS)
    # No almaty check was completed lately: the national rate of the step stands in.
    fallback = items["tB3"]
    assert fallback["throughput_scope"] == "national"
    assert fallback["likely_breach"] is False and "(national rate)" in fallback["reason"]


# --------------------------------------------------------------------------- live stream


async def stream(board: Board, who: dict[str, str], **params: Any) -> httpx.Response:
    headers = dict(who)
    if "last_event_id" in params:
        headers["Last-Event-ID"] = str(params.pop("last_event_id"))
    params.setdefault("poll", 0.05)
    r = await board.http.get("/api/v1/sla/events", headers=headers, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return r


async def test_stream_is_scoped_ordered_and_resumable(board: Board) -> None:
    astana_sup = board.token("supervisor", region=AST)
    want = expected_events(board, {AST})
    got = parse_sse((await stream(board, astana_sup, timeout=0.5)).text)
    assert [e["id"] for e in got] == [e["id"] for e in want]
    assert [e["event"] for e in got] == [e["kind"] for e in want]
    assert {e["region"] for e in got} == {AST}
    breach = next(e for e in got if e["kind"] == "clock_breached" and e["case_id"] == "A1")
    assert breach["procedure"] == WP and breach["clock"] == "consideration"
    assert breach["step"] == "consideration" and breach["explanation"] == explanation("A1")
    assert breach["deadline"] and breach["at"]
    escalation = next(e for e in got if e["kind"] == "task_escalated")
    assert escalation["task_id"] == "tA1" and escalation["action"] == "escalate"

    # max_events ends the response; Last-Event-ID resumes without repeating.
    first = parse_sse((await stream(board, astana_sup, max_events=2, timeout=10)).text)
    assert [e["id"] for e in first] == [e["id"] for e in want[:2]]
    rest = parse_sse(
        (await stream(board, astana_sup, last_event_id=first[-1]["id"], timeout=0.5)).text
    )
    assert [e["id"] for e in rest] == [e["id"] for e in want[2:]]
    via_query = parse_sse(
        (await stream(board, astana_sup, after=first[-1]["id"], timeout=0.5)).text
    )
    assert via_query == rest

    for who in (board.token("supervisor"), board.token("auditor")):
        everything = parse_sse((await stream(board, who, timeout=0.5)).text)
        assert [e["id"] for e in everything] == [
            e["id"] for e in expected_events(board, {AST, ALM})
        ]
    almaty = parse_sse(
        (await stream(board, board.token("supervisor", region=ALM), timeout=0.5)).text
    )
    assert [e["id"] for e in almaty] == [e["id"] for e in expected_events(board, {ALM})]


async def test_stream_delivers_a_new_event_once_while_open(board: Board) -> None:
    astana_sup = board.token("supervisor", region=AST)
    last = board.events[-1]["id"]
    pending = asyncio.create_task(
        stream(board, astana_sup, after=last, max_events=2, timeout=10, poll=0.05)
    )
    await asyncio.sleep(0.3)

    def add(case_id: str, seq: int, kind: str) -> None:
        with Session(board.engine) as s:
            s.add(
                CaseEventRow(
                    case_id=case_id,
                    seq=seq,
                    kind=kind,
                    at=datetime.now(UTC),
                    actor="system",
                    data={"clock": "consideration", "step": "consideration"},
                )
            )
            s.commit()

    # Another region's breach and a non-clock event are not for this board.
    add("B3", 900, "clock_breached")
    add("A3", 901, "status")
    add("A3", 902, "clock_breached")
    await asyncio.sleep(0.2)
    add("A4", 903, "clock_at_risk")
    got = parse_sse((await pending).text)
    assert [(e["case_id"], e["kind"]) for e in got] == [
        ("A3", "clock_breached"),
        ("A4", "clock_at_risk"),
    ]
    assert got[0]["id"] < got[1]["id"]


def test_cursor_waits_for_a_hole_then_moves_on() -> None:
    def fresh(*ids: int) -> list[tuple[int, bool]]:
        return [(i, False) for i in ids]

    # Ids 3 and 6 are not visible yet: an insert still committing, or one rolled back.
    cursor = EventCursor(last=0, grace=5.0)
    assert cursor.safe_upto(fresh(1, 2, 4, 5, 7), now=100.0) == 2
    # The late row shows up within the grace period: delivery continues in id order.
    cursor.last = 2
    assert cursor.safe_upto(fresh(3, 4, 5, 7), now=101.0) == 5
    cursor.last = 5
    # Id 6 never shows up: after the grace period (from when it was first seen) it is skipped.
    assert cursor.safe_upto(fresh(7), now=104.0) == 5
    assert cursor.safe_upto(fresh(7, 8), now=105.5) == 8
    assert cursor.gaps == {}
    # A hole followed by old rows is history (a rollback long ago): no wait at all.
    cursor = EventCursor(last=0, grace=5.0)
    assert cursor.safe_upto([(73, True), (74, True), (76, False)], now=0.0) == 74


# --------------------------------------------------------------------------- metrics


async def test_metrics_expose_the_read_model(board: Board) -> None:
    r = await board.http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    tasks = "casework_open_tasks"
    assert value(tasks, procedure=WP, region=AST, step="decision", sla_state="breached") == 2
    assert value(tasks, procedure=WP, region=AST, step="decision", sla_state="at_risk") == 1
    assert value(tasks, procedure=WP, region=AST, step="decision", sla_state="on_track") == 0
    assert value(tasks, procedure=WP, region=ALM, step="decision", sla_state="breached") == 1
    assert value(tasks, procedure=KS, region=AST, step="commission", sla_state="suspended") == 1
    assert value(tasks, procedure=KS, region=ALM, step="consular_check", sla_state="at_risk") == 1
    open_tasks = sum(v for (name, _), v in samples.items() if name == tasks)
    assert open_tasks == len(OPEN_TASKS)

    cases = "casework_open_cases"
    assert value(cases, procedure=WP, region=AST, sla_state="breached") == 2
    assert value(cases, procedure=KS, region=AST, sla_state="suspended") == 1
    assert value(cases, procedure=KS, region=ALM, sla_state="at_risk") == 1
    assert sum(v for (name, _), v in samples.items() if name == cases) == 8

    # Every breach ever recorded, including the one 40 days ago.
    assert value("casework_breaches_total", procedure=WP, region=AST) == 3
    assert value("casework_breaches_total", procedure=WP, region=ALM) == 1

    hist = "casework_time_in_step_hours"
    check = {"procedure": WP, "step": "document_check"}
    assert value(f"{hist}_bucket", le="1.0", **check) == 0
    assert value(f"{hist}_bucket", le="4.0", **check) == 2
    assert value(f"{hist}_bucket", le="8.0", **check) == 4
    assert value(f"{hist}_bucket", le="+Inf", **check) == 4
    assert value(f"{hist}_count", **check) == 4
    assert value(f"{hist}_sum", **check) == pytest.approx(20)
    decision = {"procedure": WP, "step": "decision"}
    assert value(f"{hist}_bucket", le="24.0", **decision) == 2
    assert value(f"{hist}_count", **decision) == 3
    assert value(f"{hist}_sum", **decision) == pytest.approx(52)


async def test_overview_figures_equal_a_recount_of_the_seeded_rows(board: Board) -> None:
    """The aggregates computed in the database match a plain recount of the seed, per scope."""
    for who, regions in (
        (board.token("supervisor"), {AST, ALM}),
        (board.token("supervisor", region=AST), {AST}),
        (board.token("supervisor", region=ALM), {ALM}),
    ):
        body = await board.get("/sla/overview", who)
        national = len(regions) == 2
        want: dict[tuple[str, str, str], Counter[str]] = {}
        oldest: dict[tuple[str, str, str], tuple[float, str]] = {}
        for task_id, (case_id, proc, kind, region, state, opened_h, _) in OPEN_TASKS.items():
            # A consular task counts in its case's region, and only on the national board.
            reg = region or CASES[case_id][1]
            if reg not in regions or (region is None and not national):
                continue
            want.setdefault((proc, reg, kind), Counter())[state] += 1
            if (proc, reg, kind) not in oldest or opened_h > oldest[(proc, reg, kind)][0]:
                oldest[(proc, reg, kind)] = (opened_h, task_id)
        got = groups_by_key(body)
        for key, counts in want.items():
            assert got[key]["open"] == {
                s: counts[s] for s in ("on_track", "at_risk", "breached", "suspended")
            } | {"total": sum(counts.values())}
            assert got[key]["oldest"]["task_id"] == oldest[key][1]
        open_cases = Counter(
            state
            for proc, reg, status, state, _ in CASES.values()
            if reg in regions and status not in {"issued", "refused"}
        )
        assert body["cases"]["total"] == sum(open_cases.values())
        for state in ("on_track", "at_risk", "breached", "suspended"):
            assert body["cases"][state] == open_cases[state]
        since = datetime.fromisoformat(body["period"]["from"])
        got_days = {d["day"]: d["count"] for d in body["breaches_per_day"] if d["count"]}
        assert got_days == breaches_by_day(board, regions, since)


async def test_time_in_step_equals_a_recount_on_either_database(board: Board) -> None:
    """Median and p90 of many durations (to the microsecond), consular tasks and a case that
    moved region included, are the exact interpolated values a plain recount gives."""
    rng = random.Random(7)
    with Session(board.engine) as s:
        for i in range(300):
            case_id = rng.choice(["A6", "B4", "B2", "A5"])
            proc, case_region = CASES[case_id][0], CASES[case_id][1]
            # Consular (no region), the case's region, or another one (a case that moved).
            region = rng.choice(
                [None, case_region, case_region, AST if case_region == ALM else ALM]
            )
            done = board.now - timedelta(hours=rng.uniform(0, 40 * 24))
            s.add(
                TaskRow(
                    task_id=f"r{i}",
                    case_id=case_id,
                    procedure=proc,
                    kind=rng.choice(["document_check", "decision", "consular_check"]),
                    title="t",
                    role="caseworker",
                    region=region,
                    status="done",
                    sla_state="stopped",
                    opened_at=done - timedelta(microseconds=rng.randrange(1, 200 * 3600 * 10**6)),
                    completed_at=done,
                )
            )
        s.commit()
        # A kandas case moves: its done tasks now count in its new region.
        s.exec(text("UPDATE case_file SET region = :r WHERE case_id = 'B2'"), params={"r": AST})  # type: ignore[call-overload]
        s.commit()
        case_region = {c: AST if c == "B2" else v[1] for c, v in CASES.items()}
        rows = [
            (t, case_region[t.case_id])
            for t in s.exec(select(TaskRow).where(TaskRow.status == "done")).all()
        ]
    for period in (30, 7):
        for who, region in (
            (board.token("supervisor"), None),
            *((board.token("supervisor", region=r), r) for r in (AST, ALM)),
        ):
            body = await board.get("/sla/overview", who, period_days=period)
            since = datetime.fromisoformat(body["period"]["from"])
            spans: dict[tuple[str, str, str], list[float]] = {}
            for t, case_region in rows:
                completed, opened = utc(t.completed_at), utc(t.opened_at)
                assert completed is not None and opened is not None
                if not since <= completed <= board.now:
                    continue
                # A regional board: tasks of the region in cases of the region.
                if region is not None and not (t.region == region and case_region == region):
                    continue
                key = (t.procedure, t.region or case_region, t.kind)
                spans.setdefault(key, []).append((completed - opened).total_seconds() / 3600)
            got = {
                k: g["time_in_step_hours"]
                for k, g in groups_by_key(body).items()
                if g["time_in_step_hours"]["count"]
            }
            assert got == {
                k: {"median": percentile(v, 0.5), "p90": percentile(v, 0.9), "count": len(v)}
                for k, v in spans.items()
            }


async def test_task_list_forecast_agrees_with_the_full_forecast(board: Board) -> None:
    """A page's queue positions, queue lengths and rates, read from the database per page,
    are those of the forecast that reads every open task: tasks without a due time,
    consular queues and a queue with no recent completions of its own included."""
    with Session(board.engine) as s:
        for i in range(12):
            case_id = ["A1", "A2", "A3", "B1", "B2"][i % 5]
            proc, region = CASES[case_id][0], CASES[case_id][1]
            consular = i % 4 == 3
            s.add(
                TaskRow(
                    task_id=f"x{i:02d}",
                    case_id=case_id,
                    procedure=proc,
                    kind="consular_check" if consular else ["decision", "appeal"][i % 2],
                    title="t",
                    role="consulate_officer" if consular else "caseworker",
                    region=None if consular else region,
                    consulate=CONSULATE if consular else None,
                    status="claimed" if i % 3 else "open",
                    # Some without a due time (last in their queue), some sharing one.
                    due_at=None if i % 5 == 4 else board.now + timedelta(hours=i % 3 - 1),
                    sla_state=["at_risk", "breached"][i % 2],
                    opened_at=board.now - timedelta(hours=50 - i),
                )
            )
        s.commit()
    fields = ("position", "ahead", "queue_length", "throughput_per_hour", "throughput_scope")
    for who in (
        board.token("supervisor"),
        board.token("supervisor", region=AST),
        board.token("supervisor", region=ALM),
    ):
        full = {f["task_id"]: f for f in (await board.get("/sla/forecast", who))["items"]}
        seen = 0
        for offset in range(0, 30, 4):
            page = await board.get("/sla/tasks", who, limit=4, offset=offset)
            for t in page["items"]:
                assert {k: t["forecast"][k] for k in fields} == {
                    k: full[t["task_id"]][k] for k in fields
                }, t["task_id"]
                seen += 1
        assert seen == page["total"]
    national = await board.get("/sla/tasks", board.token("supervisor"), limit=100)
    scopes = {t["forecast"]["throughput_scope"] for t in national["items"]}
    assert {"region", "national", None} <= scopes


async def test_overview_from_the_counts_equals_one_counted_from_the_rows(
    board: Board, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After tasks are completed, a kandas case moves region and a stale write arrives, the
    open tasks and cases the database counts are those counted from the rows, per scope."""
    with board.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE task SET status = 'done', sla_state = 'stopped', completed_at = :at"
                " WHERE task_id IN ('tA2', 'tB1')"
            ),
            {"at": board.now},
        )
        conn.execute(text("UPDATE case_file SET region = :r WHERE case_id = 'B2'"), {"r": AST})
        conn.execute(text("UPDATE case_file SET status = 'issued' WHERE case_id = 'A1'"))
        conn.execute(text("UPDATE task SET sla_state = 'breached' WHERE task_id = 'tB4'"))

    def figures(body: dict[str, Any]) -> Any:
        return (
            [(g["procedure"], g["region"], g["step"], g["open"]) for g in body["groups"]],
            [g["oldest"] and g["oldest"]["task_id"] for g in body["groups"]],
            body["cases"],
            body["case_groups"],
        )

    for who in (
        board.token("supervisor"),
        board.token("supervisor", region=AST),
        board.token("supervisor", region=ALM),
    ):
        counted = await board.get("/sla/overview", who)
        with monkeypatch.context() as m:
            m.setattr(sla, "_translated", lambda *_: None)  # as for a scope the counts cannot tell
            from_rows = await board.get("/sla/overview", who)
        assert figures(counted) == figures(from_rows)
    national = groups_by_key(await board.get("/sla/overview", board.token("supervisor")))
    # The consular task of the moved case now counts in the case's new region.
    assert national[(KS, AST, "consular_check")]["open"]["breached"] == 1
