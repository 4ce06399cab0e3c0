"""The legal clock: a statutory deadline driven by workflow timers, never by polling.

The deadline is computed by an activity (calendar in force, start, term) and recorded with
its explanation. The clock sleeps until the warning point (case *at risk*) and the
deadline (*breached*); each is an event in history, a search attribute and a read-model
row. It can be suspended (waiting for the applicant: the remaining working days are
recomputed on resume) and extended (hearing, legal extension). What a breach does is
rule-set data, handled by the owning workflow's `on_breach` callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from casework.contracts import (
        BreachAction,
        ClockEventKind,
        ClockNotice,
        ClockProjection,
        Deadline,
        DeadlineRequest,
        ResumeDeadline,
        SlaState,
        Term,
    )
    from casework.rules import ClockRule

    from workflows import activity_names as act
    from workflows.case_base import (
        MERGED_BOOKKEEPING,
        CaseWorkflowBase,
        batched,
        bookkeeping,
        patched,
    )

CALC: workflow.ActivityConfig = {"start_to_close_timeout": timedelta(seconds=30)}
NOTIFIED = {
    ClockEventKind.at_risk,
    ClockEventKind.breached,
    ClockEventKind.suspended,
    ClockEventKind.resumed,
    ClockEventKind.extended,
}


class LegalClock:
    def __init__(
        self,
        wf: CaseWorkflowBase,
        name: str,
        step: str,
        rule: ClockRule,
        on_breach: Callable[[LegalClock], Awaitable[None]] | None = None,
    ) -> None:
        self.wf = wf
        self.name = name
        self.step = step
        self.rule = rule
        self.on_breach = on_breach
        self.state = SlaState.on_track
        self.deadline: Deadline | None = None
        self.suspended_at: datetime | None = None
        self.breached = False
        self._changed = False
        self._runner: asyncio.Task[None] | None = None
        wf.clocks[name] = self

    @property
    def running(self) -> bool:
        return self.state not in (SlaState.stopped,)

    @property
    def due(self) -> datetime | None:
        return self.deadline.deadline if self.deadline else None

    async def start(self, at: datetime | None = None) -> Deadline:
        req = DeadlineRequest(
            start=at or workflow.now(), term=self.rule.term, warn_fraction=self.rule.warn_fraction
        )
        self.deadline = await bookkeeping(
            act.COMPUTE_DEADLINE, req, result_type=Deadline, before=CALC
        )
        self.state = self._state_for_now()
        await self._project(ClockEventKind.started)
        self._runner = asyncio.create_task(self._run())
        return self.deadline

    async def suspend(self, reason: str) -> None:
        if self.state in (SlaState.suspended, SlaState.stopped):
            return
        self.suspended_at = workflow.now()
        self.state = SlaState.suspended
        self._poke()
        await self._project(ClockEventKind.suspended, reason=reason)

    async def resume(self) -> None:
        if self.state != SlaState.suspended or self.deadline is None or self.suspended_at is None:
            return
        req = ResumeDeadline(
            term=self.rule.term,
            deadline=self.deadline.deadline,
            suspended_at=self.suspended_at,
            resumed_at=workflow.now(),
            warn_fraction=self.rule.warn_fraction,
        )
        self.deadline = await bookkeeping(
            act.RESUME_DEADLINE, req, result_type=Deadline, before=CALC
        )
        self.suspended_at = None
        self.state = self._state_for_now()
        self._poke()
        await self._project(ClockEventKind.resumed)

    async def extend(self, term: Term, reason: str) -> None:
        """Move the deadline by `term`, counted from the current deadline."""
        if self.deadline is None or self.state == SlaState.stopped:
            return
        base = self.deadline
        req = DeadlineRequest(start=base.deadline, term=term)
        ext = await bookkeeping(act.COMPUTE_DEADLINE, req, result_type=Deadline, before=CALC)
        self.deadline = base.model_copy(
            update={
                "deadline": ext.deadline,
                "warn_at": base.warn_at,
                "skipped_days": base.skipped_days + ext.skipped_days,
                "counted_days": base.counted_days + ext.counted_days,
                "explanation": f"{base.explanation} Extended by {term.label()} ({reason}): {ext.explanation}",
            }
        )
        if self.state != SlaState.suspended:
            self.state = self._state_for_now()
        self._poke()
        await self._project(ClockEventKind.extended, reason=reason, by=term.label())

    async def stop(self, reason: str = "step completed") -> None:
        if self.state == SlaState.stopped:
            return
        self.state = SlaState.stopped
        self._poke()
        await self._project(ClockEventKind.stopped, reason=reason)

    # ------------------------------------------------------------------ internals

    def _state_for_now(self) -> SlaState:
        assert self.deadline is not None
        now = workflow.now()
        if now >= self.deadline.deadline:
            return SlaState.breached
        if self.deadline.warn_at and now >= self.deadline.warn_at:
            return SlaState.at_risk
        return SlaState.on_track

    def _poke(self) -> None:
        self._changed = True

    def _next_point(self) -> tuple[datetime, SlaState] | None:
        if self.deadline is None or self.state in (
            SlaState.suspended,
            SlaState.stopped,
            SlaState.breached,
        ):
            return None
        if self.state == SlaState.on_track and self.deadline.warn_at:
            return self.deadline.warn_at, SlaState.at_risk
        return self.deadline.deadline, SlaState.breached

    async def _run(self) -> None:
        while self.state != SlaState.stopped:
            point = self._next_point()
            if point is None:
                await workflow.wait_condition(lambda: self._changed)
                self._changed = False
                continue
            when, new_state = point
            delay = (when - workflow.now()).total_seconds()
            if delay > 0:
                try:
                    await workflow.wait_condition(lambda: self._changed, timeout=delay)
                    self._changed = False
                    continue
                except TimeoutError:
                    pass
            self.state = new_state
            # The clock event and what the breach does (escalated tasks, the supervisors'
            # notice) reach the read model in one step.
            async with batched():
                if new_state == SlaState.at_risk:
                    await self._project(ClockEventKind.at_risk)
                else:
                    self.breached = True
                    await self._project(ClockEventKind.breached, action=self.rule.on_breach.value)
                    if self.on_breach is not None:
                        await self.on_breach(self)

    async def _project(self, kind: ClockEventKind, **data: Any) -> None:
        assert self.deadline is not None
        self.wf.refresh_sla()
        event = self.wf.event(
            f"clock_{kind.value}",
            clock=self.name,
            step=self.step,
            deadline=self.deadline.deadline.isoformat(),
            explanation=self.deadline.explanation,
            **data,
        )
        proj = ClockProjection(
            case_id=self.wf.case_id,
            name=self.name,
            step=self.step,
            state=self.state,
            term=self.rule.term,
            started_at=self.deadline.start,
            deadline=self.deadline.deadline,
            warn_at=self.deadline.warn_at,
            explanation=self.deadline.explanation,
            skipped_days=self.deadline.skipped_days,
            on_breach=self.rule.on_breach,
            event=event,
            rev=self.wf._seq,
        )
        if patched(MERGED_BOOKKEEPING):
            await bookkeeping(
                act.PROJECT_CLOCK, proj.model_copy(update={"case": self.wf.snapshot()})
            )
        else:
            await bookkeeping(act.PROJECT_CLOCK, proj)
            await self.wf.project()
        # Histories recorded before webhooks existed have no delivery activities.
        if kind in NOTIFIED and patched("sla-webhooks"):
            assert self.wf.projection is not None
            self.wf.start_delivery(
                ClockNotice(
                    event_id=f"{self.wf.case_id}:{event.seq}",
                    case_id=self.wf.case_id,
                    procedure=self.wf.procedure,
                    region=self.wf.projection.region,
                    kind=kind.value,
                    at=event.at,
                    clock=self.name,
                    step=self.step,
                    deadline=self.deadline.deadline,
                    explanation=self.deadline.explanation,
                )
            )


__all__ = ["LegalClock", "BreachAction"]
