"""`/metrics` in Prometheus text format, read from the read model at scrape time.

Nothing is counted in the API process: every API replica answers from the same database,
so any replica a scrape lands on gives the same numbers, and a restart loses nothing.
The Temporal SDK's own worker metrics (task slots, poll latency, sticky cache...) are
exported by the worker process itself through the SDK's Prometheus endpoint, not here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from api.sla import BOARD_STATES, CLOSED_CASE, OPEN_TASK, db_time, utc
from casework.contracts import TaskStatus
from casework.db import CaseEventRow, CaseRow, TaskRow

router = APIRouter(tags=["metrics"])

TIME_IN_STEP_BUCKETS = (1.0, 4.0, 8.0, 24.0, 48.0, 72.0, 120.0, 240.0)
TIME_IN_STEP_DAYS = 30


class ReadModelCollector(Collector):
    """Queries the read model on every scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        with Session(self.engine) as s:
            yield self._open_tasks(s)
            yield self._open_cases(s)
            yield self._breaches(s)
            yield self._time_in_step(s)

    def _open_tasks(self, s: Session) -> Metric:
        # Consular tasks carry no region of their own; they count in their case's region.
        region = func.coalesce(TaskRow.region, CaseRow.region)
        rows = s.exec(
            select(  # type: ignore[call-overload]
                TaskRow.procedure, TaskRow.kind, region, TaskRow.sla_state, func.count()
            )
            .outerjoin(CaseRow, col(CaseRow.case_id) == col(TaskRow.case_id))
            .where(col(TaskRow.status).in_(OPEN_TASK))
            .group_by(TaskRow.procedure, TaskRow.kind, region, TaskRow.sla_state)
        ).all()
        counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(
            lambda: dict.fromkeys(BOARD_STATES, 0)
        )
        for proc, kind, reg, state, n in rows:
            key = (proc, reg or "", kind)
            counts[key][state] = counts[key].get(state, 0) + n
        g = GaugeMetricFamily(
            "casework_open_tasks",
            "Open tasks by procedure, region, step and SLA state.",
            labels=["procedure", "region", "step", "sla_state"],
        )
        # Every state of a present group is exported, so a series drops to 0 rather than vanishing.
        for (proc, reg, step), states in sorted(counts.items()):
            for state, n in sorted(states.items()):
                g.add_metric([proc, reg, step, state], n)
        return g

    def _open_cases(self, s: Session) -> Metric:
        rows = s.exec(
            select(CaseRow.procedure, CaseRow.region, CaseRow.sla_state, func.count())
            .where(col(CaseRow.status).not_in(CLOSED_CASE))
            .group_by(CaseRow.procedure, CaseRow.region, CaseRow.sla_state)
        ).all()
        counts: dict[tuple[str, str], dict[str, int]] = defaultdict(
            lambda: dict.fromkeys(BOARD_STATES, 0)
        )
        for proc, reg, state, n in rows:
            counts[(proc, reg)][state] = counts[(proc, reg)].get(state, 0) + n
        g = GaugeMetricFamily(
            "casework_open_cases",
            "Open cases by procedure, region and SLA state.",
            labels=["procedure", "region", "sla_state"],
        )
        for (proc, reg), states in sorted(counts.items()):
            for state, n in sorted(states.items()):
                g.add_metric([proc, reg, state], n)
        return g

    def _breaches(self, s: Session) -> Metric:
        rows = s.exec(
            select(CaseRow.procedure, CaseRow.region, func.count())
            .select_from(CaseEventRow)
            .join(CaseRow, col(CaseRow.case_id) == col(CaseEventRow.case_id))
            .where(CaseEventRow.kind == "clock_breached")
            .group_by(CaseRow.procedure, CaseRow.region)
        ).all()
        c = CounterMetricFamily(
            "casework_breaches",
            "Legal deadlines breached (clock_breached events in case histories).",
            labels=["procedure", "region"],
        )
        for proc, reg, n in sorted(rows):
            c.add_metric([proc, reg], n)
        return c

    def _time_in_step(self, s: Session) -> Metric:
        since = datetime.now(UTC) - timedelta(days=TIME_IN_STEP_DAYS)
        rows = s.exec(
            select(TaskRow.procedure, TaskRow.kind, TaskRow.opened_at, TaskRow.completed_at).where(
                TaskRow.status == TaskStatus.done.value,
                col(TaskRow.completed_at) >= db_time(since),
            )
        ).all()
        spans: dict[tuple[str, str], list[float]] = defaultdict(list)
        for proc, kind, opened, completed in rows:
            span = utc(completed) - utc(opened)  # type: ignore[operator]
            spans[(proc, kind)].append(span.total_seconds() / 3600)
        h = HistogramMetricFamily(
            "casework_time_in_step_hours",
            f"Hours from a task's opening to its completion, tasks completed in the last {TIME_IN_STEP_DAYS} days.",
            labels=["procedure", "step"],
        )
        for (proc, step), values in sorted(spans.items()):
            buckets = [
                (str(b), float(sum(1 for v in values if v <= b))) for b in TIME_IN_STEP_BUCKETS
            ]
            buckets.append(("+Inf", float(len(values))))
            h.add_metric([proc, step], buckets, sum(values))
        return h


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics of the read model: open tasks and cases by SLA state, breaches, time in step."""
    # A registry per scrape: no state survives between scrapes, and apps built side by side
    # (tests, several workers) never collide on a global registry.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReadModelCollector(request.app.state.engine))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
