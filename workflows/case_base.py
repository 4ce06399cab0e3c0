"""The case primitives every procedure shares: timeline events, projection, human tasks.

A procedure's workflow subclasses `CaseWorkflowBase`. Every change to the case happens
here, in workflow code, and reaches the read model through activities, so the workflow
history is the complete legal record and the database can be rebuilt from it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from casework.contracts import (
        FORMS,
        KZ_TZ,
        Actor,
        BatchWritten,
        BookkeepingBatch,
        BookkeepingEntry,
        BreachAction,
        CaseEventIn,
        CaseProjection,
        CaseStart,
        CaseStatus,
        CaseSummary,
        ClaimTask,
        ClockNotice,
        CompleteTask,
        DecisionForm,
        DecisionRecord,
        DecisionRequest,
        GroundRef,
        HearingRecord,
        LoadRules,
        Notification,
        ReassignTask,
        ReleaseTask,
        Role,
        SlaState,
        SubmitObjection,
        TaskChange,
        TaskKind,
        TaskSpec,
        TaskStatus,
    )
    from casework.kandas import KandasStart
    from casework.regions import Region

    from workflows import activity_names as act
    from workflows.search_attributes import CASE_STATUS, SLA_DEADLINE, SLA_STATE

# Projection and bookkeeping activities are short and idempotent: retry them forever
# (a database outage must not fail a case), with a bounded interval.
PROJECTION: workflow.ActivityConfig = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(seconds=30)),
}


# Bookkeeping (read-model projection, notices, working-day deadlines, rule sets) runs as
# local activities: in the worker, inside the workflow task, with no round trip through
# the server per write. They are idempotent like before. Histories recorded before this
# change have regular activities there: `workflow.patched` keeps replaying them as such.
LOCAL_BOOKKEEPING = "local-bookkeeping"
LOCAL: workflow.LocalActivityConfig = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(seconds=30)),
}


# Notices and clock events write the case row in the same step as the notice or the clock
# row (one local activity instead of two); older histories keep two steps.
MERGED_BOOKKEEPING = "merged-bookkeeping"


# The read-model writes a workflow makes in one step (a clock event and what the breach
# does, a status change and the task it opens) go in one local activity and one
# transaction instead of one each; older histories keep one step per write.
BATCHED_BOOKKEEPING = "batched-bookkeeping"
_BATCHABLE = {
    act.PROJECT_CASE: "case",
    act.PROJECT_TASK: "task",
    act.PROJECT_CLOCK: "clock",
    act.NOTIFY: "notice",
}

# The changes above (and the procedures' own: `local-quota`, `first-steps-batched`; the
# clock's `sla-webhooks`) each asked `workflow.patched` where they branch, so a new case
# recorded seven patch markers, and with each the SDK upserts the `TemporalChangeVersion`
# search attribute: seven more events and seven visibility writes per case, five of them
# before its first task. A case started by today's code records one marker instead, at its
# start, and takes every change it names; older histories have no such marker and keep
# asking each patch where they recorded it. A later change joins a new generation that
# names every change before it too; a generation's set never changes once recorded.
_GENERATION_7 = frozenset(
    {
        "local-bookkeeping",
        "merged-bookkeeping",
        "batched-bookkeeping",
        "sla-webhooks",
        "local-quota",
        "rules-in-start",
        "first-steps-batched",
    }
)
# Registry queries are asked as local steps first (`registry_query`); the work permit
# writes its `registry_checks` status beside them (`status-beside-checks`) and a new case's
# first steps in one write (`first-steps-together`); kandas' settlement, support and quota
# ledger steps are local (`kandas-local-steps`).
REGISTRIES_LOCAL_FIRST = "registries-local-first"
# Search-attribute changes made inside a `batched()` block are upserted once, when the block
# ends, the last value of each attribute (a status and a clock changed together, a clock
# stopped and another started): one history event and one visibility write instead of
# one each; older histories upsert each change on its own.
MERGED_UPSERTS = "merged-upserts"
# Newest first: a new case records the first; `begin` finds which one a history recorded.
_GENERATION_8 = _GENERATION_7 | {
    REGISTRIES_LOCAL_FIRST,
    "status-beside-checks",
    "first-steps-together",
    "kandas-local-steps",
    MERGED_UPSERTS,
}
# The work permit writes its `registry_checks` status with the checks' findings
# (`status-in-last-write`).
GENERATIONS: dict[str, frozenset[str]] = {
    "generation-9": _GENERATION_8 | {"status-in-last-write"},
    "generation-8": _GENERATION_8,
    "generation-7": _GENERATION_7,
}
GENERATION = next(iter(GENERATIONS))
GENERATION_CHANGES = GENERATIONS[GENERATION]


def patched(change: str) -> bool:
    """`workflow.patched(change)`, but true without a marker of its own in a case whose
    generation marker (recorded at its start, `CaseWorkflowBase.begin`) names the change."""
    wf = workflow.instance()
    if change in getattr(wf, "generation_changes", ()):
        return True
    return workflow.patched(change)  # noqa: TID251 - a change asked on its own


class _Batch:
    def __init__(self) -> None:
        self.entries: list[BookkeepingEntry] = []
        self.deliveries: list[ClockNotice] = []  # webhooks, scheduled if anyone subscribes
        self.search_attributes: dict[str, Any] = {}  # attribute name -> its last update
        self.open = True  # a task started inside the block must not add to it afterwards


# Per asyncio task: an update handler running meanwhile writes on its own.
_batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
    "bookkeeping_batch", default=None
)


@asynccontextmanager
async def batched() -> AsyncIterator[None]:
    """Collect the read-model writes made inside the block (this task only) and write them,
    in order, in one local activity when it ends. Writes that return a value (deadlines,
    rule sets) still run at once. A block inside a block joins the outer one."""
    current = _batch.get()
    if (current is not None and current.open) or not patched(BATCHED_BOOKKEEPING):
        yield
        return
    batch = _Batch()
    token = _batch.set(batch)
    try:
        yield
    finally:
        batch.open = False
        _batch.reset(token)
        if batch.search_attributes:
            workflow.upsert_search_attributes(list(batch.search_attributes.values()))
        written: BatchWritten | None = None
        if batch.entries:
            written = await workflow.execute_local_activity(
                act.PROJECT_BATCH,
                BookkeepingBatch(entries=batch.entries),
                result_type=BatchWritten,
                **LOCAL,
            )
        # Clock notices go to webhook subscribers; with none, no delivery step is scheduled.
        if batch.deliveries and (written is None or written.webhook_endpoints > 0):
            wf = workflow.instance()
            for notice in batch.deliveries:
                wf.start_delivery(notice)


async def bookkeeping(
    name: str,
    arg: Any,
    result_type: type | None = None,
    before: workflow.ActivityConfig = PROJECTION,
) -> Any:
    """Run a short idempotent bookkeeping activity (a local one in new histories); inside
    a `batched()` block a write is only collected (a copy: the objects may change later)."""
    batch = _batch.get()
    if batch is not None and batch.open and name in _BATCHABLE:
        batch.entries.append(BookkeepingEntry(**{_BATCHABLE[name]: arg.model_copy(deep=True)}))
        return None
    if patched(LOCAL_BOOKKEEPING):
        return await workflow.execute_local_activity(name, arg, result_type=result_type, **LOCAL)
    return await workflow.execute_activity(name, arg, result_type=result_type, **before)


async def local_step(change: str, name: str, arg: Any, result_type: type) -> Any:
    """A short idempotent step in the read-model database (the quota ledger, a settlement
    proposal) or a computation: local in cases that took `change`, a regular activity in
    histories recorded before it."""
    if patched(change):
        return await workflow.execute_local_activity(name, arg, result_type=result_type, **LOCAL)
    return await workflow.execute_activity(name, arg, result_type=result_type, **PROJECTION)


# External registries are slow and sometimes down: retry with backoff for up to a day;
# the case simply waits (and its clock keeps running).
REGISTRY: workflow.ActivityConfig = {
    "start_to_close_timeout": timedelta(seconds=60),
    "schedule_to_close_timeout": timedelta(days=1),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=5),
    ),
}
# ...but they answer within a second almost always, so a query is asked first as a local
# step: inside the workflow task, with no round trip through the server for the activity
# and none for the workflow task that follows it. A few quick attempts within a few
# seconds (a caseworker's completion is answered when its workflow task ends, so a slow
# registry must not hold it longer); a registry still down or slow after them is asked
# again as a regular activity under `REGISTRY`, and the workflow task ends meanwhile.
REGISTRY_LOCAL: workflow.LocalActivityConfig = {
    "start_to_close_timeout": timedelta(seconds=3),
    "schedule_to_close_timeout": timedelta(seconds=6),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(milliseconds=200),
        backoff_coefficient=2.0,
        maximum_attempts=3,
    ),
}


async def registry_query(
    name: str,
    arg: Any,
    result_type: type,
    before_durable: Callable[[], Awaitable[None]] | None = None,
) -> Any:
    """Ask an external registry (a query, or a call idempotent per case): locally first in
    new histories, then durably with the day-long retry; older histories ask durably.
    `before_durable` runs when a registry did not answer in the local attempts, before the
    case starts waiting for it (e.g. showing what the case waits for)."""
    if patched(REGISTRIES_LOCAL_FIRST):
        answer = await ask_registry_locally(name, arg, result_type)
        if answer is not None:
            return answer
        if before_durable is not None:
            await before_durable()
    return await ask_registry_durably(name, arg, result_type)


async def ask_registry_durably(name: str, arg: Any, result_type: type) -> Any:
    """The registry's answer through a regular activity, retried for up to a day."""
    return await workflow.execute_activity(name, arg, result_type=result_type, **REGISTRY)


async def ask_registry_locally(name: str, arg: Any, result_type: type) -> Any:
    """The registry's answer from the quick local attempts, or None if it did not give one
    (down or slow): the caller asks it again durably."""
    try:
        return await workflow.execute_local_activity(
            name, arg, result_type=result_type, **REGISTRY_LOCAL
        )
    except FailureError as err:  # a local step's failure may arrive unwrapped
        failure = err.cause if isinstance(err, ActivityError) else err
        if is_cancelled_exception(err) or (
            isinstance(failure, ApplicationError) and failure.non_retryable
        ):
            raise  # cancelled, or a refusal no retry can change
        workflow.logger.warning(
            "%s did not answer in the local attempts (%s): asking it durably", name, failure
        )
        return None


# The rule set arrives in the start input (the API loaded it to validate the application);
# older histories, and starts without it, load it in a local step.
RULES_IN_START = "rules-in-start"
RulesT = TypeVar("RulesT", bound=BaseModel)


async def case_rules(
    procedure: str, start: CaseStart | KandasStart, model: type[RulesT], filed_at: datetime
) -> RulesT:
    """The rule set the case runs under, from the start input or loaded by a local step."""
    if start.rules is not None and patched(RULES_IN_START):
        return model.model_validate(start.rules)
    rules: RulesT = await bookkeeping(
        act.LOAD_RULES,
        LoadRules(
            procedure=procedure, on=filed_at.astimezone(KZ_TZ).date(), version=start.ruleset_version
        ),
        result_type=model,
    )
    return rules


_SEVERITY = {
    SlaState.breached: 4,
    SlaState.at_risk: 3,
    SlaState.on_track: 2,
    SlaState.suspended: 1,
    SlaState.stopped: 0,
}


def problem(kind: str, detail: str, errors: list[dict[str, str]] | None = None) -> ApplicationError:
    """A business rejection: the API maps `type` to an RFC 9457 problem with field errors."""
    return ApplicationError(detail, {"errors": errors or []}, type=kind, non_retryable=True)


def form_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"name": "form." + ".".join(str(p) for p in e["loc"]), "reason": e["msg"]}
        for e in exc.errors()
    ]


DECISION: workflow.ActivityConfig = {
    "start_to_close_timeout": timedelta(minutes=2),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1)),
}
WEBHOOK: workflow.ActivityConfig = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=5)
    ),
}


def decision_form_errors(form: DecisionForm, ground_codes: set[str]) -> list[dict[str, str]]:
    """A refusal names known grounds and is reasoned; an approval has no grounds."""
    errors: list[dict[str, str]] = []
    if form.decision == "refuse":
        if not form.grounds:
            errors.append({"name": "form.grounds", "reason": "a refusal needs at least one ground"})
        for i, code in enumerate(form.grounds):
            if code not in ground_codes:
                errors.append(
                    {
                        "name": f"form.grounds.{i}",
                        "reason": f"unknown ground '{code}'; allowed: {sorted(ground_codes)}",
                    }
                )
        if not form.reasoning.strip():
            errors.append({"name": "form.reasoning", "reason": "a refusal must be reasoned"})
    elif form.grounds:
        errors.append({"name": "form.grounds", "reason": "an approval has no refusal grounds"})
    return errors


class CaseWorkflowBase:
    """State and handlers shared by every procedure workflow."""

    def __init__(self) -> None:
        self.case_id = ""
        self.procedure = ""
        self.status = CaseStatus.registered
        self.sla_state = SlaState.on_track
        self.sla_deadline: datetime | None = None
        self.tasks: dict[str, TaskSpec] = {}
        self._seq = 0
        self._task_counter = 0
        self.projection: CaseProjection | None = None
        self.objection: SubmitObjection | None = None
        self.hearing_open = False
        self.registered = False  # the case row exists in the read model
        self.deliveries: list[asyncio.Task[None]] = []
        self.index_search_attributes = True
        self.clocks: dict[str, Any] = {}  # name -> LegalClock (registered by the clock itself)
        # The changes named by the generation marker the case recorded (see `patched`).
        self.generation_changes: frozenset[str] = frozenset()

    def begin(self) -> None:
        """The first thing a procedure's run does: a new case records the `GENERATION`
        marker; a history of an older generation finds its own (asking for a marker a
        history lacks records nothing on replay); one recorded before any has none and asks
        each change on its own."""
        for name, changes in GENERATIONS.items():
            if workflow.patched(name):  # noqa: TID251 - the generation itself
                self.generation_changes = changes
                return

    # ------------------------------------------------------------------ timeline

    def event(self, kind: str, actor: str = "system", **data: Any) -> CaseEventIn:
        """A timeline entry with a deterministic sequence number (idempotent projection)."""
        self._seq += 1
        return CaseEventIn(
            case_id=self.case_id,
            seq=self._seq,
            kind=kind,
            at=workflow.now(),
            actor=actor,
            data=data,
        )

    def snapshot(self, *events: CaseEventIn, **changes: Any) -> CaseProjection:
        """The case row as it is now, with timeline entries to append."""
        assert self.projection is not None
        for key, value in changes.items():
            setattr(self.projection, key, value)
        self.projection.status = self.status
        self.projection.sla_state = self.sla_state
        self.projection.deadline = self.sla_deadline
        self.projection.rev = self._seq
        return self.projection.model_copy(update={"events": list(events)})

    async def project(self, *events: CaseEventIn, **changes: Any) -> None:
        """Write the case row (and timeline entries) to the read model."""
        await bookkeeping(act.PROJECT_CASE, self.snapshot(*events, **changes))

    async def set_status(self, status: CaseStatus, *events: CaseEventIn, **changes: Any) -> None:
        self.status = status
        self._upsert([CASE_STATUS.value_set(status.value)])
        await self.project(self.event("status", status=status.value), *events, **changes)

    def set_sla(self, state: SlaState, deadline: datetime | None) -> None:
        self.sla_state = state
        self.sla_deadline = deadline
        updates: list[Any] = [SLA_STATE.value_set(state.value)]
        updates.append(SLA_DEADLINE.value_set(deadline) if deadline else SLA_DEADLINE.value_unset())
        self._upsert(updates)

    def _upsert(self, updates: list[Any]) -> None:
        if not self.index_search_attributes:
            return
        batch = _batch.get()
        if batch is not None and batch.open and patched(MERGED_UPSERTS):
            for update in updates:  # upserted when the block ends (see `batched`)
                batch.search_attributes[update.key.name] = update
            return
        workflow.upsert_search_attributes(updates)

    def start_delivery(self, notice: ClockNotice) -> None:
        """Webhooks run beside the case: a receiver that is down never holds the case up.
        Inside a `batched()` block the delivery waits for the block's write (which says
        whether any endpoint subscribes)."""
        batch = _batch.get()
        if batch is not None and batch.open:
            batch.deliveries.append(notice)
            return

        async def deliver() -> None:
            await workflow.execute_activity(act.DELIVER_WEBHOOKS, notice, **WEBHOOK)

        self.deliveries.append(asyncio.create_task(deliver()))

    async def settle_deliveries(self) -> None:
        """A case closes only after its notifications are out (retried until delivered)."""
        if self.deliveries:
            await asyncio.gather(*self.deliveries)

    def refresh_sla(self) -> None:
        """The case's SLA state is that of its most severe live clock (breached > at risk > ...)."""
        live = [c for c in self.clocks.values() if c.deadline is not None]
        if not live:
            return
        top = max(live, key=lambda c: (_SEVERITY[c.state], -c.deadline.deadline.timestamp()))
        if top.state == SlaState.stopped:
            self.set_sla(SlaState.stopped, None)
        else:
            self.set_sla(top.state, top.deadline.deadline)

    async def notify(
        self, to_role: Role, kind: str, text_ru: str, text_kk: str = "", **data: Any
    ) -> None:
        assert self.projection is not None
        ev = self.event("notification", to=to_role.value, notice=kind)
        note = Notification(
            case_id=self.case_id,
            seq=ev.seq,
            to_role=to_role,
            to_party=self.projection.applicant_party if to_role == Role.employer else None,
            region=self.projection.region,
            kind=kind,
            text_ru=text_ru,
            text_kk=text_kk,
            data=data,
        )
        if patched(MERGED_BOOKKEEPING):
            await bookkeeping(act.NOTIFY, note.model_copy(update={"case": self.snapshot(ev)}))
            return
        await bookkeeping(act.NOTIFY, note)
        await self.project(ev)

    # ------------------------------------------------------------------ human tasks

    async def open_task(
        self,
        kind: TaskKind,
        title: str,
        role: Role,
        region: Region | None,
        due_at: datetime | None,
        context: dict[str, Any] | None = None,
        consulate: str | None = None,
    ) -> TaskSpec:
        self._task_counter += 1
        spec = TaskSpec(
            task_id=f"{self.case_id}-T{self._task_counter}",
            case_id=self.case_id,
            procedure=self.procedure,
            kind=kind,
            title=title,
            role=role,
            region=region,
            consulate=consulate,
            due_at=due_at,
            opened_at=workflow.now(),
            context=context or {},
        )
        self.tasks[spec.task_id] = spec
        await self._project_task(
            spec, self.event("task_opened", task_id=spec.task_id, task=kind.value, role=role.value)
        )
        return spec

    async def open_step(
        self,
        status: CaseStatus,
        kind: TaskKind,
        title: str,
        role: Role,
        region: Region | None,
        due_at: datetime | None,
        context: dict[str, Any] | None = None,
        consulate: str | None = None,
    ) -> TaskSpec:
        """A new status and the task that works on it, written to the read model in one step."""
        async with batched():
            await self.set_status(status)
            return await self.open_task(kind, title, role, region, due_at, context, consulate)

    async def wait_task(self, spec: TaskSpec) -> dict[str, Any]:
        """Wait until the task is completed; returns the validated form data."""
        await workflow.wait_condition(lambda: self.tasks[spec.task_id].status == TaskStatus.done)
        return self.tasks[spec.task_id].form_data or {}

    async def cancel_open_tasks(self, reason: str) -> None:
        for spec in self.tasks.values():
            if spec.status in (TaskStatus.open, TaskStatus.claimed):
                spec.status = TaskStatus.cancelled
                await self._project_task(
                    spec, self.event("task_cancelled", task_id=spec.task_id, reason=reason)
                )

    async def _project_task(self, spec: TaskSpec, event: CaseEventIn | None) -> None:
        await bookkeeping(act.PROJECT_TASK, TaskChange(task=spec, event=event, rev=self._seq))

    def _may_work_on(self, actor: Actor, spec: TaskSpec) -> str | None:
        """Why this actor may not act on the task (None: allowed). Same rule as the API policy."""
        if actor.role not in (spec.role, Role.supervisor):
            return f"this task is for the role {spec.role.value}"
        if spec.region is not None and actor.region is not None and actor.region != spec.region:
            return "this task belongs to another region"
        if spec.region is not None and actor.region is None and actor.role != Role.supervisor:
            return "caller has no region scope"
        if spec.consulate is not None and actor.consulate != spec.consulate:
            return "this task belongs to another foreign mission"
        return None

    def _task_for(self, task_id: str, actor: Actor) -> TaskSpec:
        spec = self.tasks.get(task_id)
        if spec is None:
            raise problem("TaskNotFound", f"no task {task_id} in case {self.case_id}")
        why = self._may_work_on(actor, spec)
        if why:
            raise problem("Forbidden", why)
        if spec.status in (TaskStatus.done, TaskStatus.cancelled):
            raise problem(
                "TaskClosed",
                f"task {task_id} is already {spec.status.value}",
                [{"name": "task_id", "reason": f"task is {spec.status.value}"}],
            )
        return spec

    def validate_form(self, spec: TaskSpec, form: dict[str, Any]) -> BaseModel:
        """Schema and procedure rules for a task's form; subclasses add semantic checks."""
        model = FORMS[spec.kind]
        try:
            return model.model_validate(form)
        except ValidationError as exc:
            raise problem("InvalidForm", "the form has invalid fields", form_errors(exc)) from None

    @workflow.update
    async def claim_task(self, req: ClaimTask) -> TaskSpec:
        spec = self._task_for(
            req.task_id, req.actor
        )  # re-checked: state may have moved since validation
        if spec.status == TaskStatus.claimed and spec.assignee == req.actor.user_id:
            return spec
        if spec.status == TaskStatus.claimed:
            raise problem("TaskClaimed", f"task already claimed by {spec.assignee}")
        spec.status, spec.assignee = TaskStatus.claimed, req.actor.user_id
        await self._project_task(
            spec, self.event("task_claimed", actor=req.actor.user_id, task_id=spec.task_id)
        )
        return spec

    @claim_task.validator
    def _validate_claim(self, req: ClaimTask) -> None:
        spec = self._task_for(req.task_id, req.actor)
        if spec.status == TaskStatus.claimed and spec.assignee != req.actor.user_id:
            raise problem(
                "TaskClaimed",
                f"task already claimed by {spec.assignee}",
                [{"name": "task_id", "reason": "claimed by another user"}],
            )

    @workflow.update
    async def release_task(self, req: ReleaseTask) -> TaskSpec:
        spec = self._task_for(req.task_id, req.actor)
        if spec.status == TaskStatus.open:
            return spec
        spec.status, spec.assignee = TaskStatus.open, None
        await self._project_task(
            spec, self.event("task_released", actor=req.actor.user_id, task_id=spec.task_id)
        )
        return spec

    @release_task.validator
    def _validate_release(self, req: ReleaseTask) -> None:
        spec = self._task_for(req.task_id, req.actor)
        if (
            spec.status == TaskStatus.claimed
            and spec.assignee != req.actor.user_id
            and req.actor.role != Role.supervisor
        ):
            raise problem(
                "Forbidden", "only the assignee or a supervisor may release a claimed task"
            )

    @workflow.update
    async def complete_task(self, req: CompleteTask) -> TaskSpec:
        spec = self._task_for(req.task_id, req.actor)
        if spec.status == TaskStatus.claimed and spec.assignee != req.actor.user_id:
            raise problem("TaskClaimed", f"task is claimed by {spec.assignee}")
        form = self.validate_form(spec, req.form)
        spec.status = TaskStatus.done
        spec.assignee = spec.assignee or req.actor.user_id
        spec.form_data = form.model_dump(mode="json")
        spec.completed_by = req.actor.user_id
        spec.completed_at = workflow.now()
        await self._project_task(
            spec,
            self.event(
                "task_completed", actor=req.actor.user_id, task_id=spec.task_id, form=spec.form_data
            ),
        )
        return spec

    @complete_task.validator
    def _validate_complete(self, req: CompleteTask) -> None:
        spec = self._task_for(req.task_id, req.actor)
        if spec.status == TaskStatus.claimed and spec.assignee != req.actor.user_id:
            raise problem(
                "TaskClaimed",
                f"task is claimed by {spec.assignee}",
                [{"name": "task_id", "reason": "claimed by another user"}],
            )
        self.validate_form(spec, req.form)

    @workflow.update
    async def reassign_task(self, req: ReassignTask) -> TaskSpec:
        spec = self._task_for(req.task_id, req.actor)
        before = spec.assignee
        spec.assignee = req.to_user
        spec.status = TaskStatus.claimed if req.to_user else TaskStatus.open
        await self._project_task(
            spec,
            self.event(
                "task_reassigned",
                actor=req.actor.user_id,
                task_id=spec.task_id,
                from_user=before,
                to_user=req.to_user,
                reason=req.reason,
            ),
        )
        return spec

    @reassign_task.validator
    def _validate_reassign(self, req: ReassignTask) -> None:
        if req.actor.role != Role.supervisor:
            raise problem("Forbidden", "only a supervisor reassigns tasks")
        self._task_for(req.task_id, req.actor)

    @workflow.query
    def open_tasks(self) -> list[TaskSpec]:
        return [t for t in self.tasks.values() if t.status in (TaskStatus.open, TaskStatus.claimed)]

    async def issue(self, req: DecisionRequest) -> DecisionRecord:
        """The decision step (render, hash, store, register; idempotent), then the timeline entry."""
        record: DecisionRecord = await workflow.execute_activity(
            act.ISSUE_DECISION, req, result_type=DecisionRecord, **DECISION
        )
        await self.project(
            self.event(
                "decision_issued",
                actor=req.decided_by or "system",
                number=record.number,
                outcome=req.outcome.value,
                grounds=[g.code for g in req.grounds],
                sha256=record.sha256,
                permit_number=record.permit_number,
            )
        )
        return record

    def tasks_done_by(self, kind: TaskKind) -> str:
        done = [t for t in self.tasks.values() if t.kind == kind and t.completed_by]
        return done[-1].completed_by or "" if done else ""

    async def escalate(self, clock: Any) -> None:
        """A deadline passed: raise the open tasks' priority; `escalate` also flags them and
        notifies the supervisors (rule-set data decides which)."""
        action = clock.rule.on_breach
        for spec in self.open_tasks():
            spec.priority += 10
            if action == BreachAction.supervisor_queue:
                spec.role, spec.assignee, spec.status = Role.supervisor, None, TaskStatus.open
            if action == BreachAction.escalate:
                spec.context = {
                    **spec.context,
                    "escalated": True,
                    "escalated_at": workflow.now().isoformat(),
                }
            await self._project_task(
                spec,
                self.event(
                    "task_escalated", task_id=spec.task_id, clock=clock.name, action=action.value
                ),
            )
        if action in (BreachAction.escalate, BreachAction.supervisor_queue):
            await self.notify(
                Role.supervisor,
                "deadline_breached",
                f"Нарушен срок «{clock.step}» по делу {self.case_id}",
                f"{self.case_id} ісі бойынша «{clock.step}» мерзімі бұзылды",
                clock=clock.name,
            )

    # ------------------------------------------------------------------ hearing before refusal

    def is_applicant(self, actor: Actor) -> bool:
        """Whether the actor speaks for the applicant (procedure-specific)."""
        return False

    def summary(self) -> CaseSummary:
        raise NotImplementedError

    async def hold_hearing(
        self,
        *,
        consideration: Any,
        clock_rule: Any,
        grounds: list[GroundRef],
        intended: DecisionForm,
        notify_role: Role,
        review_role: Role,
        review_region: Region | None,
        review_consulate: str | None = None,
    ) -> tuple[HearingRecord, DecisionForm]:
        """Hearing before refusal (APPC art. 73): notice with grounds, a term to object, review.

        The consideration clock is extended by the hearing term; the objection (or its
        absence) goes to the reviewer's final decision task.
        """
        from workflows.legal_clock import LegalClock

        await self.set_status(CaseStatus.hearing)
        await consideration.extend(clock_rule.term, "hearing before refusal")
        window = LegalClock(
            self,
            "hearing",
            "hearing",
            clock_rule.model_copy(update={"on_breach": BreachAction.raise_priority}),
        )
        deadline = await window.start()
        notified_at = workflow.now()
        self.objection = None
        self.hearing_open = True
        await self.notify(
            notify_role,
            "intended_refusal",
            "Уведомление о предварительном решении об отказе. Основания: "
            + "; ".join(g.text_ru for g in grounds)
            + f". Возражение можно представить до {deadline.deadline.astimezone(KZ_TZ):%d.%m.%Y %H:%M}.",
            "Бас тарту туралы алдын ала шешім туралы хабарлама. Негіздер: "
            + "; ".join(g.text_kk for g in grounds)
            + f". Қарсылықты {deadline.deadline.astimezone(KZ_TZ):%d.%m.%Y %H:%M} дейін беруге болады.",
            grounds=[g.code for g in grounds],
            objection_deadline=deadline.deadline.isoformat(),
        )
        await workflow.wait_condition(lambda: self.objection is not None or window.breached)
        self.hearing_open = False
        await window.stop("objection received" if self.objection else "objection term elapsed")
        record = HearingRecord(
            notified_at=notified_at,
            objection_deadline=deadline.deadline,
            intended_grounds=grounds,
            objection_text=self.objection.text if self.objection else None,
            objection_received_at=workflow.now() if self.objection else None,
        )
        task = await self.open_step(
            CaseStatus.decision,
            TaskKind.objection_review,
            "Final decision after the hearing",
            review_role,
            review_region,
            consideration.due,
            {
                "hearing": record.model_dump(mode="json"),
                "intended": intended.model_dump(mode="json"),
            },
            consulate=review_consulate,
        )
        final = DecisionForm.model_validate(await self.wait_task(task))
        done = self.tasks[task.task_id]
        record.reviewed_by = done.completed_by
        record.reviewed_at = done.completed_at
        await self.project(self.event("hearing_closed", hearing=record.model_dump(mode="json")))
        return record, final

    @workflow.update
    async def submit_objection(self, req: SubmitObjection) -> CaseSummary:
        self.objection = req
        await self.project(self.event("objection_received", actor=req.actor.user_id, text=req.text))
        await workflow.wait_condition(lambda: self.registered)
        return self.summary()

    @submit_objection.validator
    def _validate_objection(self, req: SubmitObjection) -> None:
        if not self.is_applicant(req.actor):
            raise problem("Forbidden", "only the applicant may object")
        if not self.hearing_open or self.objection is not None:
            raise problem(
                "CaseState",
                "no hearing is open for objections",
                [{"name": "text", "reason": "hearing not open"}],
            )
