"""Scenario 5: decision documents.

(a) Throughput: the real bilingual decision (the granted and the refused decision of the
recorded histories) through the decision step (`DecisionActivities.issue`: number,
render, hash, store, register in the read model) vs bare WeasyPrint rendering of the very
same HTML, one document at a time, in the bench process.

(b) Starvation: a burst of decision steps scheduled on the engine worker's task queue
(by a bare workflow, so the renders run inside the engine worker on its activity thread
pool) while a probe measures the engine worker's workflow-task latency: an Update
(`release_task` on an open task, which the workflow answers without any activity) sent
every 100 ms to an engine case, idle vs during the burst.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHistory

from activities.decisions import DecisionActivities
from activities.documents import DocumentContext, DocumentRenderer
from bench.bare import BareBurst
from bench.common import Api, Ctx, ScenarioResult, log, new_bin, row_from_runs
from bench.shape import HISTORIES
from bench.stack import BARE_QUEUE
from bench.stats import summary_ms
from casework.audit import decisions_in
from casework.contracts import Actor, DecisionRequest, ReleaseTask, Role
from workflows.case_base import CaseWorkflowBase

PROBE_REGION = "mangystau"


class CapturingRenderer(DocumentRenderer):
    """The engine's renderer, keeping the last HTML it produced."""

    last_html: str = ""

    def render_html(self, ctx: DocumentContext) -> str:
        html = super().render_html(ctx)
        self.last_html = html
        return html


def recorded_request(name: str) -> DecisionRequest:
    h = WorkflowHistory.from_json(name, json.loads((HISTORIES / f"{name}.json").read_text()))
    req, _ = decisions_in(h)[0]
    return req


def fresh(req: DecisionRequest) -> DecisionRequest:
    case_id = f"WP-BENCH-{uuid.uuid4().hex[:10].upper()}"
    return req.model_copy(
        update={"case_id": case_id, "idempotency_key": f"{case_id}:{req.outcome.value}"}
    )


def throughput(ctx: Ctx, name: str, k: int) -> dict[str, Any]:
    """Decision step vs bare WeasyPrint of the same HTML, k documents each, sequentially."""
    from weasyprint import HTML

    stack = ctx.stack
    renderer = CapturingRenderer()
    step = DecisionActivities(
        stack.engine,
        stack.data_dir / "bench-documents",
        stack.settings.public_base_url,
        renderer=renderer,
    )
    req = recorded_request(name)
    step.issue(fresh(req))  # warm-up: fonts, templates, counters
    html = renderer.last_html
    base_url = str(renderer.template_dir)
    pdf = HTML(string=html, base_url=base_url).write_pdf()
    assert pdf is not None
    out: dict[str, Any] = {"pdf_bytes": len(pdf), "html_chars": len(html)}
    engine_t: list[float] = []
    bare_t: list[float] = []
    for _ in range(k):  # interleaved, so drifts in machine load hit both alike
        t0 = time.perf_counter()
        step.issue(fresh(req))
        engine_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        HTML(string=html, base_url=base_url).write_pdf()
        bare_t.append(time.perf_counter() - t0)
    out["engine"] = {**summary_ms(engine_t), "docs_per_s": round(k / sum(engine_t), 3)}
    out["bare"] = {**summary_ms(bare_t), "docs_per_s": round(k / sum(bare_t), 3)}
    return out


async def _probe_case(ctx: Ctx) -> tuple[str, str, Actor]:
    api = Api(ctx.stack, connections=4)
    bin_ = new_bin()
    r = await api.start_case(api.token("employer", party=bin_), bin_, PROBE_REGION)
    if r.status_code != 201:
        raise RuntimeError(f"probe case: HTTP {r.status_code} {r.text[:200]}")
    case_id = r.json()["case_id"]
    cw = api.token("caseworker", region=PROBE_REGION)
    end = time.monotonic() + 60
    while True:
        t = await api.http.get(
            "/api/v1/tasks", params={"kind": "document_check", "limit": 500}, headers=cw
        )
        found = [x for x in t.json() if x["case_id"] == case_id]
        if found:
            break
        if time.monotonic() > end:
            raise TimeoutError("probe case task not visible")
        await asyncio.sleep(0.1)
    await api.close()
    actor = Actor(user_id="cw-probe", role=Role.caseworker, region=PROBE_REGION)
    return case_id, found[0]["task_id"], actor


async def starvation(ctx: Ctx, m: int, idle_probes: int) -> dict[str, Any]:
    client = ctx.stack.client
    assert client is not None
    case_id, task_id, actor = await _probe_case(ctx)
    handle = client.get_workflow_handle(case_id)

    async def probe() -> float:
        t0 = time.perf_counter()
        await handle.execute_update(
            CaseWorkflowBase.release_task, ReleaseTask(task_id=task_id, actor=actor)
        )
        return time.perf_counter() - t0

    await probe()
    await ctx.stack.settle()
    idle = []
    for _ in range(idle_probes):
        idle.append(await probe())
        await asyncio.sleep(0.1)
    reqs = [
        fresh(recorded_request("work_permit_approved")).model_dump(mode="json") for _ in range(m)
    ]
    t0 = time.perf_counter()
    burst = await client.start_workflow(
        BareBurst.run,
        args=[reqs, ctx.stack.engine_queue],
        id=f"bare-burst-{uuid.uuid4()}",
        task_queue=BARE_QUEUE,
    )
    done = asyncio.create_task(burst.result())
    during = []
    while not done.done():
        during.append(await probe())
        await asyncio.sleep(0.1)
    await done
    wall = time.perf_counter() - t0
    return {
        "idle": summary_ms(idle),
        "burst": summary_ms(during),
        "burst_documents": m,
        "burst_wall_s": round(wall, 2),
        "burst_docs_per_s_in_worker": round(m / wall, 3),
    }


async def run(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult(
        id="5",
        title="decision documents: the decision step vs bare WeasyPrint",
        baseline="bare WeasyPrint rendering of the same HTML; engine-worker update latency when idle",
        target="≥ 80 % of bare documents/s; rendering never delays workflow tasks by more than 20 % at p95 during a burst",
    )
    k = ctx.n(3, 10)
    m = ctx.n(6, 16)
    details: dict[str, Any] = {"documents_per_run": k, "burst_documents": m, "runs": []}
    rates: dict[str, dict[str, list[float | None]]] = {}
    idle_p95: list[float | None] = []
    burst_p95: list[float | None] = []
    for run_no in range(ctx.runs):
        one: dict[str, Any] = {}
        await ctx.stack.settle()
        for name in ("work_permit_approved", "work_permit_refused"):
            t = await asyncio.to_thread(throughput, ctx, name, k)
            one[name] = t
            r = rates.setdefault(name, {"engine": [], "bare": []})
            r["engine"].append(t["engine"]["docs_per_s"])
            r["bare"].append(t["bare"]["docs_per_s"])
        await ctx.stack.settle()
        s = await starvation(ctx, m, ctx.n(20, 40))
        one["starvation"] = s
        idle_p95.append(s["idle"].get("p95_ms"))
        burst_p95.append(s["burst"].get("p95_ms"))
        details["runs"].append(one)
        log(
            f"s5 run {run_no + 1}: granted {one['work_permit_approved']['engine']['docs_per_s']} vs "
            f"bare {one['work_permit_approved']['bare']['docs_per_s']} docs/s; update p95 idle "
            f"{s['idle'].get('p95_ms')} ms, during burst {s['burst'].get('p95_ms')} ms"
        )
    for name, label in (("work_permit_approved", "granted"), ("work_permit_refused", "refused")):
        res.rows.append(
            row_from_runs(
                f"5.{label}.docs_per_s",
                f"{label} decision: documents/s through the decision step",
                "docs/s",
                rates[name]["engine"],
                rates[name]["bare"],
                "≥ 0.8 × bare",
                lambda v, b: v >= 0.8 * b,
                baseline_label="bare WeasyPrint, same HTML",
            )
        )
    res.rows.append(
        row_from_runs(
            "5.burst.update_p95",
            f"engine workflow-task latency (update round trip) p95 during a burst of {m} decisions",
            "ms",
            burst_p95,
            idle_p95,
            "≤ 1.2 × idle p95",
            lambda v, b: v <= 1.2 * b,
            baseline_label="same probe, worker idle",
        )
    )
    res.details = details
    res.notes.append(
        "documents/s: one document at a time in the bench process (interleaved step/bare); "
        "the burst runs inside the engine worker process on its 16-thread activity pool"
    )
    _ = Path
    return res
