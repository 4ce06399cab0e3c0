"""`python -m bench.experiments.bare_shapes [--quick]`

What fewer or cheaper activities would gain, measured on bare Temporal: the recorded
case's shape (52 activities) against the same case with one projection activity per
workflow step (27 activities), with the projections as local activities, and both. Each
variant runs as `BareCase` on the bare worker at 10 and 50 cases in flight, median of 3
runs (quick: 1). Results: `bench/results/experiments/<timestamp>-bare-shapes.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Ctx, log
from bench.scenarios.s2_lifecycle import bare_run
from bench.shape import APPROVED, load_history_json
from bench.stats import median

OUT = Path(__file__).resolve().parent.parent / "results" / "experiments"
PROJECTIONS = {"project_case", "project_task", "project_clock", "notify"}


def named_ops(history: dict[str, Any]) -> list[str]:
    ops: list[str] = []
    for ev in history["events"]:
        t = str(ev["eventType"]).removeprefix("EVENT_TYPE_")
        if t == "ACTIVITY_TASK_SCHEDULED":
            ops.append(ev["activityTaskScheduledEventAttributes"]["activityType"]["name"])
        elif t == "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES":
            ops.append("u")
        elif t == "TIMER_STARTED":
            ops.append("t+")
        elif t == "TIMER_CANCELED":
            ops.append("t-")
        elif t == "WORKFLOW_EXECUTION_UPDATE_ACCEPTED":
            ops.append("U")
    return ops


def merged(ops: list[str]) -> list[str]:
    """A projection right after another one (upserts and timers aside) joins it: one
    projection activity per workflow step."""
    out: list[str] = []
    for o in ops:
        if o in PROJECTIONS:
            j = len(out) - 1
            while j >= 0 and out[j] in ("u", "t+", "t-"):
                j -= 1
            if j >= 0 and out[j] in PROJECTIONS:
                continue
        out.append(o)
    return out


def code(ops: list[str], local_projections: bool) -> list[str]:
    """BareCase ops: projections as "l" (local activity) or "a", other activities "a"."""
    out = []
    for o in ops:
        if o in ("u", "t+", "t-", "U"):
            out.append(o)
        elif o in PROJECTIONS and local_projections:
            out.append("l")
        else:
            out.append("a")
    return out


async def main_async(quick: bool) -> dict[str, Any]:
    from bench.stack import new_stack

    named = named_ops(load_history_json(APPROVED))
    variants = {
        "recorded (52 activities)": code(named, False),
        "one projection per step (27 activities)": code(merged(named), False),
        "projections as local activities (10 + 42 local)": code(named, True),
        "both (10 + 17 local)": code(merged(named), True),
    }
    runs = 1 if quick else 3
    plan = {10: 10 if quick else 30, 50: 50 if quick else 100}
    stack = new_stack()
    results: dict[str, Any] = {}
    try:
        await stack.start()
        ctx = Ctx(stack=stack, quick=quick, runs=runs, postgres_url=None)
        for name, ops in variants.items():
            await bare_run(ctx, 1, 1, ops)  # warm-up
            results[name] = {"ops": "".join(o if len(o) == 1 else f"[{o}]" for o in ops)}
            for inflight, n in plan.items():
                rates = []
                for _ in range(runs):
                    await stack.settle(names=("temporal", "bare_worker"))
                    r = await bare_run(ctx, inflight, n, ops)
                    rates.append(r["cases_per_s"])
                results[name][f"inflight_{inflight}_cases_per_s"] = median(rates)
                results[name][f"inflight_{inflight}_runs"] = rates
                log(f"{name}: {inflight} in flight: {median(rates)} cases/s {rates}")
    finally:
        await stack.stop()
    return results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    t0 = time.time()
    results = asyncio.run(main_async(args.quick))
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t0))
    path = OUT / f"{stamp}-bare-shapes{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps({"started": stamp, "variants": results}, indent=1) + "\n")
    log(f"results: {path}")
    sys.stdout.flush()
    os._exit(0)  # the Temporal SDK can crash at interpreter exit


if __name__ == "__main__":
    main()
