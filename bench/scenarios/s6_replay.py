"""Scenario 6: replay. One full recorded case history (work_permit_approved.json) and a
bulk of N copies, through the Replayer and sandbox the audit uses
(`casework.sandbox.replayer`) with the engine's workflows, vs a bare history of the
same shape (the `BareCase` workflow run once on this server, with the recorded case's
activities, updates, timers and upserts) replayed the same way.

Also reported: the engine's audit path for one case (`casework.audit.replay_history`:
replay plus the decision-register check).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from temporalio.client import WorkflowHistory

from bench.bare import BareCase
from bench.common import Ctx, ScenarioResult, log, row_from_runs
from bench.shape import APPROVED, load_history_json, ops_from_history
from bench.stack import BARE_QUEUE
from bench.stats import summary_ms
from casework.audit import replay_history, workflows_for
from casework.sandbox import replayer


async def bare_history(ctx: Ctx) -> WorkflowHistory:
    client = ctx.stack.client
    assert client is not None
    ops = ops_from_history(load_history_json(APPROVED))
    wid = f"bare-replay-{uuid.uuid4()}"
    h = await client.start_workflow(BareCase.run, ops, id=wid, task_queue=BARE_QUEUE)
    for k in range(ops.count("U")):
        await h.execute_update(BareCase.step, k)
    await h.result()
    return await h.fetch_history()


async def _copies(history: WorkflowHistory, n: int) -> AsyncIterator[WorkflowHistory]:
    for i in range(n):
        yield WorkflowHistory(f"{history.workflow_id}-{i}", history.events)


async def replay_single(
    replayer_workflows: list[Any], history: WorkflowHistory, k: int
) -> list[float]:
    out = []
    for _ in range(k):
        engine_replayer = replayer(replayer_workflows)
        t0 = time.perf_counter()
        result = await engine_replayer.replay_workflow(history, raise_on_replay_failure=True)
        out.append(time.perf_counter() - t0)
        _ = result
    return out


async def replay_bulk(replayer_workflows: list[Any], history: WorkflowHistory, n: int) -> float:
    t0 = time.perf_counter()
    results = await replayer(replayer_workflows).replay_workflows(
        _copies(history, n), raise_on_replay_failure=True
    )
    wall = time.perf_counter() - t0
    if len(results.replay_failures):
        raise RuntimeError(f"{len(results.replay_failures)} replay failures")
    return wall


async def run(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult(
        id="6",
        title="replay: one full case history; bulk replay",
        baseline="bare workflow history of the same shape (same activities, updates, timers, upserts)",
        target="≤ 1.5 × bare",
    )
    engine_hist = WorkflowHistory.from_json("WP-REC-APPROVED", load_history_json(APPROVED))
    bare_hist = await bare_history(ctx)
    bulk_n = ctx.n(20, 1000)
    single_k = ctx.n(3, 5)
    bare_wfs: list[Any] = [BareCase]
    # As the audit path does: the replayer gets the class the history was recorded by,
    # as the bare side gets its one class.
    engine_wfs: list[Any] = workflows_for(engine_hist)
    # Warm-up: imports into the sandbox, first worker.
    await replay_single(engine_wfs, engine_hist, 1)
    await replay_single(bare_wfs, bare_hist, 1)
    single_e: list[float | None] = []
    single_b: list[float | None] = []
    bulk_e: list[float | None] = []
    bulk_b: list[float | None] = []
    runs = []
    for run_no in range(ctx.runs):
        se = await replay_single(engine_wfs, engine_hist, single_k)
        sb = await replay_single(bare_wfs, bare_hist, single_k)
        s_e, s_b = summary_ms(se), summary_ms(sb)
        single_e.append(s_e["p50_ms"])
        single_b.append(s_b["p50_ms"])
        one: dict[str, Any] = {"single_engine": s_e, "single_bare": s_b}
        # The bulk replay is itself a mean over `bulk_n` histories: in full mode (1,000
        # histories, about 4 minutes a side) it runs once, not three times.
        if run_no == 0:
            be = await replay_bulk(engine_wfs, engine_hist, bulk_n)
            bb = await replay_bulk(bare_wfs, bare_hist, bulk_n)
            bulk_e.append(be / bulk_n * 1000)
            bulk_b.append(bb / bulk_n * 1000)
            one.update({"bulk_engine_s": round(be, 2), "bulk_bare_s": round(bb, 2)})
        runs.append(one)
        log(
            f"s6 run {run_no + 1}: single {s_e['p50_ms']} vs bare {s_b['p50_ms']} ms"
            + (f"; bulk {bulk_n}: {be:.1f} s vs bare {bb:.1f} s" if run_no == 0 else "")
        )
    # The engine's audit path for one case (replay + decision register check).
    audit = []
    for _ in range(single_k):
        t0 = time.perf_counter()
        report = await replay_history(ctx.stack.engine, engine_hist)
        audit.append(time.perf_counter() - t0)
        if not report.deterministic:
            raise RuntimeError(f"recorded history no longer replays: {report.failure}")
    res.rows.append(
        row_from_runs(
            "6.single",
            f"replay one case history ({len(engine_hist.events)} events), median of {single_k}",
            "ms",
            single_e,
            single_b,
            "≤ 1.5 × bare",
            lambda v, b: v <= 1.5 * b,
            baseline_label=f"bare history, {len(bare_hist.events)} events",
        )
    )
    res.rows.append(
        row_from_runs(
            "6.bulk",
            f"bulk replay of {bulk_n} histories (one run), per history",
            "ms",
            bulk_e,
            bulk_b,
            "≤ 1.5 × bare",
            lambda v, b: v <= 1.5 * b,
            baseline_label=f"bare history, {len(bare_hist.events)} events",
        )
    )
    res.details = {
        "engine_history_events": len(engine_hist.events),
        "bare_history_events": len(bare_hist.events),
        "engine_history_bytes": len(json.dumps(load_history_json(APPROVED))),
        "bare_history_bytes": len(bare_hist.to_json()),
        "bulk_n": bulk_n,
        "single_k": single_k,
        "audit_replay_history": summary_ms(audit),
        "runs": runs,
    }
    return res
