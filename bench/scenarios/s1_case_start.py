"""Scenario 1: case start through the API vs a bare `client.start_workflow`.

The API's `POST /api/v1/cases/work_permit` authenticates, validates the application,
derives the case number, starts the workflow and group-commits the registration row, then
answers. The bare baseline starts an empty workflow with the same input payload and the
same four search attributes. An informative second baseline: a bare start of
a workflow that then takes the first steps a started case takes on its own before it waits
for its first human task (the recorded case's local activities, activities, upserts and
timer, all empty), so that both sides leave the same Temporal work behind each start on
the same two cores. Informative figures: a bare update-with-start of the shape
the API used before (the update returns after two empty activities), and the HTTP floor,
`GET /healthz` through the same client at the same concurrency (no engine work at all),
which shows how much of the difference is HTTP and the Python client rather than the
engine.
"""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)

from api import timing as server_timing
from bench.bare import BareCase, BareEmpty, BareRegistration
from bench.common import (
    Api,
    Ctx,
    ScenarioResult,
    bare_payload,
    closed_loop,
    cpu_ms_per,
    log,
    new_bin,
    row_from_runs,
)
from bench.shape import APPROVED, load_history_json, ops_from_history
from bench.stack import BARE_QUEUE
from bench.stats import medians_by_key, summary_ms
from workflows.search_attributes import CASE_PROCEDURE, CASE_REGION, CASE_STATUS, SLA_STATE

REGION = "almaty_city"


def search_attributes() -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(CASE_PROCEDURE, "work_permit"),
            SearchAttributePair(CASE_REGION, REGION),
            SearchAttributePair(CASE_STATUS, "registered"),
            SearchAttributePair(SLA_STATE, "on_track"),
        ]
    )


async def start_bare(client: Client, run: Any, arg: Any, prefix: str) -> None:
    """A bare `client.start_workflow` on the bare worker, with the case's search attributes."""
    await client.start_workflow(
        run,
        arg,
        id=f"{prefix}-{uuid.uuid4()}",
        task_queue=BARE_QUEUE,
        search_attributes=search_attributes(),
    )


async def run(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult(
        id="1",
        title="case start: POST /api/v1/cases/work_permit",
        baseline="bare client.start_workflow of an empty workflow (same input payload, same 4 search attributes)",
        target="≥ 80 % of bare starts/s; p95 ≤ 1.25 × bare p95",
    )
    stack = ctx.stack
    client = stack.client
    assert client is not None
    api = Api(stack, connections=64)
    bin_ = new_bin()
    employer = api.token("employer", party=bin_, user="bench-employer-s1")
    payload = bare_payload(REGION)
    actor = {"user_id": "bench-employer", "role": "employer", "party": bin_}
    errors: dict[str, list[str]] = {}
    phases: list[dict[str, float]] = []  # the API's Server-Timing of each engine start

    async def engine_job(i: int) -> None:
        r = await api.start_case(employer, bin_, REGION)
        if r.status_code != 201:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        phases.append(server_timing.parse(r.headers.get("Server-Timing", "")))

    async def bare_job(i: int) -> None:
        await start_bare(client, BareEmpty.run, payload, "bare-start")

    # What a started case does on its own before it waits for its first human task, as
    # recorded (the same local activities, activities, upserts and timer), all empty.
    ops = ops_from_history(load_history_json(APPROVED))
    first_steps = ops[: ops.index("U")]

    async def shape_job(i: int) -> None:
        await start_bare(client, BareCase.run, first_steps, "bare-shape")

    async def uws_job(i: int) -> None:
        op = WithStartWorkflowOperation(
            BareRegistration.run,
            payload,
            id=f"bare-uws-{uuid.uuid4()}",
            task_queue=BARE_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=search_attributes(),
        )
        await client.execute_update_with_start_workflow(
            BareRegistration.registration, actor, start_workflow_operation=op
        )

    async def floor_job(i: int) -> None:
        r = await api.http.get("/healthz")
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}")

    # Warm-up: first requests load code paths and connections on every side.
    for job in (engine_job, bare_job, shape_job, uws_job, floor_job):
        await closed_loop(3, 1, job)

    plan = {1: ctx.n(5, 30), 10: ctx.n(20, 100), 32: ctx.n(32, 128)}
    details: dict[str, Any] = {}
    await stack.settle()  # after the warm-up; each measurement then ends with the stack idle
    for conc, n in plan.items():
        figures: dict[str, dict[str, list[float | None]]] = {
            k: {"tput": [], "p95": []} for k in ("engine", "bare", "shape", "uws", "floor")
        }
        per_run: list[dict[str, Any]] = []
        for run_no in range(ctx.runs):
            one: dict[str, Any] = {}
            for name, job in (
                ("engine", engine_job),
                ("bare", bare_job),
                ("shape", shape_job),
                ("uws", uws_job),
                ("floor", floor_job),
            ):
                phases.clear()
                cpu0 = stack.cpu()
                lat, wall, errs = await closed_loop(n, conc, job)
                cpu1 = stack.cpu()
                per_start = cpu_ms_per(cpu0, cpu1, len(lat))
                cores = stack.cores(cpu0, wall, cpu1)
                # The started workflows' first tasks may trail the last start (a worker
                # behind the server): CPU until the whole stack is idle again, both sides;
                # the next measurement starts from that idle stack.
                await stack.settle()
                per_start_settled = cpu_ms_per(cpu0, stack.cpu(), len(lat))
                if errs:
                    errors.setdefault(f"{name}@{conc}", []).extend(errs[:5])
                s = summary_ms(lat)
                tput = len(lat) / wall if wall else None
                figures[name]["tput"].append(tput)
                figures[name]["p95"].append(s.get("p95_ms"))
                one[name] = {
                    **s,
                    "per_s": round(tput or 0, 2),
                    "errors": len(errs),
                    "cores_used": cores,
                    "cpu_ms_per_start": per_start,
                    "cpu_ms_per_start_until_idle": per_start_settled,
                }
                if name == "engine":  # where the API's own part of each start went
                    one[name]["server_timing_median_ms"] = medians_by_key(phases)
            per_run.append(one)
            log(
                f"s1 c={conc} run {run_no + 1}: engine {one['engine']['per_s']}/s p95 "
                f"{one['engine'].get('p95_ms')} ms; bare {one['bare']['per_s']}/s p95 "
                f"{one['bare'].get('p95_ms')} ms; bare same-shape {one['shape']['per_s']}/s p95 "
                f"{one['shape'].get('p95_ms')} ms; bare update-with-start {one['uws']['per_s']}/s;"
                f" engine Server-Timing medians {one['engine']['server_timing_median_ms']}"
            )
        details[f"concurrency_{conc}"] = {"n": n, "runs": per_run}
        bare_label = "bare start_workflow"
        shape_label = (
            f"bare start_workflow; the workflow then takes the case's {len(first_steps)} first "
            "steps, empty"
        )
        # (key, label, unit, figure, baseline, baseline label, target, check)
        specs: list[tuple[str, str, str, str, str, str, str, Any]] = [
            ("throughput", f"starts/s, {conc} concurrent", "starts/s", "engine", "bare",
             bare_label, "≥ 0.80 × bare", lambda v, b: v >= 0.8 * b),
            ("p95", f"p95 start latency, {conc} concurrent", "ms", "engine", "bare",
             bare_label, "≤ 1.25 × bare p95", lambda v, b: v <= 1.25 * b),
            ("throughput_vs_shape",
             f"starts/s vs bare start of a workflow that takes the case's first steps, {conc} concurrent",
             "starts/s", "engine", "shape", shape_label, "informative", None),
            ("p95_vs_shape",
             f"p95 start latency vs bare start of a workflow that takes the case's first steps, {conc} concurrent",
             "ms", "engine", "shape", shape_label, "informative", None),
            ("p95_vs_uws",
             f"p95 start latency vs bare update-with-start of the same shape, {conc} concurrent",
             "ms", "engine", "uws", "bare update-with-start, 2 empty activities",
             "informative", None),
            ("floor", f"HTTP floor: GET /healthz p95 through the same client, {conc} concurrent",
             "ms", "floor", "bare", bare_label, "informative", None),
        ]  # fmt: skip
        for key, label, unit, side, base, base_label, target, check in specs:
            measure = "tput" if key.startswith("throughput") else "p95"
            res.rows.append(
                row_from_runs(
                    f"1.c{conc}.{key}",
                    label,
                    unit,
                    figures[side][measure],
                    figures[base][measure],
                    target,
                    check,
                    baseline_label=base_label,
                )
            )
    details["errors"] = errors
    res.details = details
    await api.close()
    return res
