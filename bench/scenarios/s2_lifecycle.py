"""Scenario 2: N work-permit cases driven only through the API, W in flight, vs a bare
workflow of the same shape driven by a Temporal client.

Engine side. Employers file (`POST /cases/work_permit`); simulated caseworkers watch
their inbox (`GET /tasks`, one shared poller every 100 ms) and claim and complete each
task: the document check first comes back incomplete (a diploma is missing), the
employer supplies it (`POST /cases/{id}/documents`), the check is completed, the decision
approves; the simulated payment gateway pays the fee (`POST /dev/payments/{id}/pay`) once
the employer's case list (`GET /cases`, shared poller every 100 ms) shows it awaiting
payment; a case is done when the list shows it issued, i.e. its decision PDF is
registered. This is the path of the recorded history
`tests/workflows/histories/work_permit_approved.json`.

Bare side. `BareCase` does what that recorded history does, in its order: 52 empty
activities, 5 updates, 4 timers started and cancelled, 15 search-attribute upserts; a
client sends each update as soon as the previous one returned (no polling).

Scenario 9 (memory) is measured here: peak RSS of the worker and the API during the
engine runs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench.bare import BareCase
from bench.common import (
    Api,
    Ctx,
    HttpError,
    ScenarioResult,
    closed_loop,
    cpu_ms_per,
    log,
    new_bin,
    row_from_runs,
)
from bench.histories import breakdown, mean_breakdown
from bench.shape import APPROVED, load_history_json, ops_from_history, shape_counts
from bench.stack import BARE_QUEUE, reset_peak_rss, rss_mb
from bench.stats import summary_ms

REGION = "astana"
POLL_S = 0.1
STEP_TIMEOUT_S = 180.0
# A run in which no simulated actor gets anything done for this long has stalled: it is
# stopped and its unfinished cases count as failed (see BENCHMARKS.md, scenario 2).
STALL_S = 45.0


class Desk:
    """Shared pollers: the caseworkers' inbox and the employer's case list."""

    def __init__(self, api: Api, caseworker: dict[str, str], employer: dict[str, str]) -> None:
        self.api = api
        self.caseworker = caseworker
        self.employer = employer
        self.tasks: dict[str, list[dict[str, Any]]] = {}
        self.cases: dict[str, dict[str, Any]] = {}
        self._tick = asyncio.Event()
        self._stop = False
        self.polls = 0
        self.poll_errors: list[str] = []

    def _notify(self) -> None:
        ev, self._tick = self._tick, asyncio.Event()
        ev.set()

    async def _inbox(self) -> None:
        while not self._stop:
            try:
                r = await self.api.http.get(
                    "/api/v1/tasks",
                    params={"status": "open", "limit": 500},
                    headers=self.caseworker,
                )
            except HttpError as exc:
                self.poll_errors.append(f"inbox: {exc!r}")
                await asyncio.sleep(POLL_S)
                continue
            if r.status_code != 200:
                self.poll_errors.append(f"inbox: HTTP {r.status_code}")
            else:
                tasks: dict[str, list[dict[str, Any]]] = {}
                for t in r.json():
                    tasks.setdefault(t["case_id"], []).append(t)
                self.tasks = tasks
                self.polls += 1
                self._notify()
            await asyncio.sleep(POLL_S)

    async def _cases(self) -> None:
        while not self._stop:
            try:
                r = await self.api.http.get(
                    "/api/v1/cases", params={"limit": 500}, headers=self.employer
                )
            except HttpError as exc:
                self.poll_errors.append(f"cases: {exc!r}")
                await asyncio.sleep(POLL_S)
                continue
            if r.status_code != 200:
                self.poll_errors.append(f"cases: HTTP {r.status_code}")
            else:
                self.cases = {c["case_id"]: c for c in r.json()["items"]}
                self.polls += 1
                self._notify()
            await asyncio.sleep(POLL_S)

    async def wait(self, pred: Callable[[], Any]) -> Any:
        end = time.monotonic() + STEP_TIMEOUT_S
        while True:
            tick = self._tick
            found = pred()
            if found:
                return found
            if time.monotonic() > end:
                raise TimeoutError("step not reached in time")
            try:
                await asyncio.wait_for(tick.wait(), 1.0)
            except TimeoutError:
                pass

    async def task(self, case_id: str, kind: str, seen: set[str]) -> dict[str, Any]:
        def pred() -> dict[str, Any] | None:
            return next(
                (
                    t
                    for t in self.tasks.get(case_id, [])
                    if t["kind"] == kind and t["task_id"] not in seen
                ),
                None,
            )

        task: dict[str, Any] = await self.wait(pred)
        seen.add(task["task_id"])
        return task

    async def status(self, case_id: str, status: str) -> dict[str, Any]:
        def pred() -> dict[str, Any] | None:
            c = self.cases.get(case_id)
            return c if c is not None and c["status"] == status else None

        case: dict[str, Any] = await self.wait(pred)
        return case

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._inbox()), asyncio.create_task(self._cases())]

    def stop(self) -> None:
        self._stop = True


async def _check(r: Any, what: str) -> dict[str, Any]:
    if r.status_code not in (200, 201):
        raise RuntimeError(f"{what}: HTTP {r.status_code} {r.text[:300]}")
    body: dict[str, Any] = r.json()
    return body


async def engine_run(
    ctx: Ctx, inflight: int, n: int, time_limit: float | None = None
) -> dict[str, Any]:
    api = Api(ctx.stack, connections=inflight * 2 + 8)
    bin_ = new_bin()
    employer = api.token("employer", party=bin_, user=f"emp-{bin_}")
    caseworker = api.token("caseworker", region=REGION, user="cw-bench")
    desk = Desk(api, caseworker, employer)
    pollers = desk.start()
    steps: dict[str, list[float]] = {}
    case_ids: list[str] = []

    last_progress = time.perf_counter()
    shed = 0  # answers 429 (admission control), each sent again after its Retry-After

    async def admitted(send: Callable[[], Awaitable[Any]]) -> Any:
        """As a client of this API should: send again after `Retry-After` while it sheds
        load (a 429 changed nothing)."""
        nonlocal shed
        while True:
            r = await send()
            if r.status_code != 429:
                return r
            shed += 1
            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))

    def mark(step: str, t0: float) -> float:
        nonlocal last_progress
        now = last_progress = time.perf_counter()
        steps.setdefault(step, []).append(now - t0)
        return now

    async def work(case_id: str, kind: str, form: dict[str, Any], seen: set[str]) -> None:
        t = time.perf_counter()
        task = await desk.task(case_id, kind, seen)
        t = mark(f"wait {kind} task visible", t)
        tid = task["task_id"]
        await _check(
            await admitted(lambda: api.http.post(f"/api/v1/tasks/{tid}/claim", headers=caseworker)),
            "claim",
        )
        t = mark("POST claim", t)
        await _check(
            await admitted(
                lambda: api.http.post(
                    f"/api/v1/tasks/{tid}/complete", json={"form": form}, headers=caseworker
                )
            ),
            "complete",
        )
        mark("POST complete", t)

    async def one_case(i: int) -> None:
        t = time.perf_counter()
        body = await _check(await admitted(lambda: api.start_case(employer, bin_, REGION)), "start")
        t = mark("POST case", t)
        case_id = body["case_id"]
        case_ids.append(case_id)
        seen: set[str] = set()
        await work(
            case_id,
            "document_check",
            {"outcome": "incomplete", "missing_documents": ["diploma"]},
            seen,
        )
        t = time.perf_counter()
        await desk.status(case_id, "waiting_applicant")
        t = mark("wait waiting_applicant visible", t)
        await _check(
            await admitted(
                lambda: api.http.post(
                    f"/api/v1/cases/{case_id}/documents",
                    json={"documents": ["diploma"]},
                    headers=employer,
                )
            ),
            "documents",
        )
        mark("POST documents", t)
        await work(case_id, "document_check", {"outcome": "complete"}, seen)
        await work(case_id, "decision", {"decision": "approve"}, seen)
        t = time.perf_counter()
        await desk.status(case_id, "awaiting_payment")
        t = mark("wait awaiting_payment visible", t)
        await _check(
            await admitted(
                lambda: api.http.post(
                    f"/api/v1/dev/payments/{case_id}/pay", json={}, headers=employer
                )
            ),
            "pay",
        )
        t = mark("POST pay", t)
        case = await desk.status(case_id, "issued")
        if not case.get("decision_number"):
            raise RuntimeError(f"{case_id} issued without a decision number")
        mark("wait issued (decision registered) visible", t)

    stalled = asyncio.Event()

    async def watchdog() -> None:
        while True:
            await asyncio.sleep(1)
            if time.perf_counter() - last_progress > STALL_S:
                stalled.set()
                return

    dog = asyncio.create_task(watchdog())
    cpu0 = ctx.stack.cpu()
    lat, wall, errors = await closed_loop(n, inflight, one_case, time_limit, stalled)
    cpu1 = ctx.stack.cpu()
    per_case = cpu_ms_per(cpu0, cpu1, len(lat))
    cores = ctx.stack.cores(cpu0, wall, cpu1)
    dog.cancel()
    desk.stop()
    for p in pollers:  # a poll stuck in a wedged API must not hold the bench up
        p.cancel()
    await asyncio.gather(*pollers, return_exceptions=True)
    await api.close()
    return {
        "cases": len(lat),
        "wall_s": round(wall, 2),
        "cases_per_s": round(len(lat) / wall, 3) if wall else None,
        "case_latency": summary_ms(lat),
        "steps_mean_ms": {k: round(sum(v) / len(v) * 1000, 1) for k, v in steps.items()},
        "errors": errors[:10],
        "error_count": len(errors),
        "shed_and_sent_again": shed,
        "stalled": stalled.is_set(),
        "cores_used": cores,
        "cpu_ms_per_case": per_case,
        "case_ids": case_ids,
        "desk_polls": desk.polls,
        "desk_poll_errors": len(desk.poll_errors),
        "desk_poll_error_samples": desk.poll_errors[:5],
    }


async def bare_run(ctx: Ctx, inflight: int, n: int, ops: list[str]) -> dict[str, Any]:
    client = ctx.stack.client
    assert client is not None
    updates = ops.count("U")
    ids: list[str] = []

    async def one_case(i: int) -> None:
        wid = f"bare-case-{uuid.uuid4()}"
        ids.append(wid)
        h = await client.start_workflow(BareCase.run, ops, id=wid, task_queue=BARE_QUEUE)
        for k in range(updates):
            await h.execute_update(BareCase.step, k)
        await h.result()

    cpu0 = ctx.stack.cpu()
    lat, wall, errors = await closed_loop(n, inflight, one_case)
    cpu1 = ctx.stack.cpu()
    per_case = cpu_ms_per(cpu0, cpu1, len(lat))
    cores = ctx.stack.cores(cpu0, wall, cpu1)
    return {
        "cores_used": cores,
        "cpu_ms_per_case": per_case,
        "cases": len(lat),
        "wall_s": round(wall, 2),
        "cases_per_s": round(len(lat) / wall, 3) if wall else None,
        "case_latency": summary_ms(lat),
        "errors": errors[:10],
        "error_count": len(errors),
        "case_ids": ids,
    }


async def _breakdowns(ctx: Ctx, ids: list[str], limit: int = 20) -> dict[str, Any]:
    client = ctx.stack.client
    assert client is not None
    items = []
    for wid in ids[:limit]:
        h = await client.get_workflow_handle(wid).fetch_history()
        items.append(breakdown(list(h.events)))
    return mean_breakdown(items)


class MemorySampler:
    """Peak resident memory of the stack's processes: VmHWM (reset at the start) and the
    highest VmRSS sampled every 250 ms."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.max_rss: dict[str, float] = {n: 0.0 for n in pids}
        self.start_rss = {n: rss_mb(p).get("VmRSS") for n, p in pids.items()}
        self.reset = {n: reset_peak_rss(p) for n, p in pids.items()}
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            for n, p in self.pids.items():
                self.max_rss[n] = max(self.max_rss[n], rss_mb(p).get("VmRSS", 0.0))
            await asyncio.sleep(0.25)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def stop(self) -> dict[str, Any]:
        if self._task:
            self._task.cancel()
        return {
            n: {
                "rss_at_start_mb": self.start_rss[n],
                "peak_rss_sampled_mb": self.max_rss[n],
                "peak_rss_vmhwm_mb": rss_mb(p).get("VmHWM") if self.reset[n] else None,
            }
            for n, p in self.pids.items()
        }


async def run(ctx: Ctx) -> ScenarioResult:
    recorded = load_history_json(APPROVED)
    shape = shape_counts(recorded)
    res = ScenarioResult(
        id="2",
        title="full lifecycle through the API (file, claim, form, complete, supply, pay, decision PDF registered)",
        baseline=(
            f"bare workflow of the recorded case's shape ({shape['activities']} empty activities, "
            f"{shape['local_activities']} empty local activities, {shape['updates']} updates, "
            f"{shape['timers_started']} timers, {shape['upserts']} upserts)"
        ),
        target="≥ 0.6 × bare cases/s at 10 and 50 in flight",
    )
    stack = ctx.stack
    ops = ops_from_history(recorded)
    details: dict[str, Any] = {
        "bare_shape": shape_counts(recorded),
        "bare_ops": "".join(o if len(o) == 1 else f"[{o}]" for o in ops),
    }
    plan = {10: ctx.n(10, 30), 50: ctx.n(50, 75)}
    # Upper bound of a run; a stalled one stops earlier (STALL_S).
    time_limit = ctx.n(150, 240)
    names = ("worker", "api", "temporal", "bare_worker")
    sampler = MemorySampler({n: pid for n, pid in stack.pids().items() if n in names})
    sampler.start()
    # Warm-up: one case through each side.
    await engine_run(ctx, 1, 1)
    await bare_run(ctx, 1, 1, ops)
    for inflight, n in plan.items():
        eng: list[float | None] = []
        bare: list[float | None] = []
        runs: list[dict[str, Any]] = []
        failed = 0
        for run_no in range(ctx.runs):
            await stack.settle()
            e = await engine_run(ctx, inflight, n, time_limit)
            await stack.settle()
            b = await bare_run(ctx, inflight, n, ops)
            failed += e["error_count"]
            eng.append(e["cases_per_s"])
            bare.append(b["cases_per_s"])
            log(
                f"s2 in-flight {inflight} run {run_no + 1}: engine {e['cases_per_s']} cases/s "
                f"(p50 {e['case_latency'].get('p50_ms')} ms, {e['error_count']} errors, "
                f"{e['shed_and_sent_again']} answers 429 sent again); "
                f"bare {b['cases_per_s']} cases/s (p50 {b['case_latency'].get('p50_ms')} ms); "
                f"CPU ms per case: engine {e['cpu_ms_per_case']}, bare {b['cpu_ms_per_case']}"
            )
            if run_no == 0:
                e["breakdown_per_case_s"] = await _breakdowns(ctx, e["case_ids"])
                b["breakdown_per_case_s"] = await _breakdowns(ctx, b["case_ids"])
                if inflight == min(plan):
                    client = stack.client
                    assert client is not None
                    hist = await client.get_workflow_handle(e["case_ids"][0]).fetch_history()
                    import json

                    details["engine_shape"] = shape_counts(json.loads(hist.to_json()))
            e.pop("case_ids")
            b.pop("case_ids")
            runs.append({"engine": e, "bare": b})
        details[f"inflight_{inflight}"] = {"n": n, "runs": runs}
        res.rows.append(
            row_from_runs(
                f"2.w{inflight}.throughput",
                f"cases/s, {inflight} in flight",
                "cases/s",
                eng,
                bare,
                "≥ 0.6 × bare",
                lambda v, b: v >= 0.6 * b,
                baseline_label="bare same-shape workflow",
            )
        )
        if failed:
            res.rows[-1].met = False
            res.rows[-1].note = f"{failed} engine cases failed or did not finish in time"
    ctx.shared["s2_memory"] = sampler.stop()
    details["memory"] = ctx.shared["s2_memory"]
    res.details = details
    return res
