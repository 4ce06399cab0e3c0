"""Scenario 8: overload. 200 clients filing cases at once (closed loop, 200 in flight)
through the API vs 200 clients doing bare `start_workflow` on the same server.

Besides the p95, it records every answer's status and when it came, to check whether
the API sheds load (429, admission control) before its p95 passes 5 s.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.bare import BareEmpty
from bench.common import Api, Ctx, ScenarioResult, bare_payload, log, new_bin, row_from_runs
from bench.scenarios.s1_case_start import start_bare
from bench.stats import percentile, summary_ms

REGION = "almaty_region"
INFLIGHT = 200


def _window_p95(done: list[tuple[float, float]], window: float = 1.0) -> list[tuple[float, float]]:
    """p95 latency of the answers completed in each `window` seconds (from the start)."""
    buckets: dict[int, list[float]] = {}
    for t_done, lat in done:
        buckets.setdefault(int(t_done // window), []).append(lat)
    out = []
    for b in sorted(buckets):
        p = percentile(buckets[b], 95)
        if p is not None:
            out.append(((b + 1) * window, p))
    return out


async def engine_run(ctx: Ctx, n: int) -> dict[str, Any]:
    api = Api(ctx.stack, connections=INFLIGHT + 10)
    bin_ = new_bin()
    employer = api.token("employer", party=bin_)
    codes: Counter[str] = Counter()
    done: list[tuple[float, float]] = []
    ok: list[float] = []
    first_429: float | None = None
    t_start = time.perf_counter()
    counter = iter(range(n))

    async def client() -> None:
        nonlocal first_429
        for _ in counter:
            t0 = time.perf_counter()
            try:
                r = await api.start_case(employer, bin_, REGION)
                code = str(r.status_code)
            except Exception as exc:  # noqa: BLE001 - timeouts and resets are answers too
                code = type(exc).__name__
            t1 = time.perf_counter()
            codes[code] += 1
            done.append((t1 - t_start, t1 - t0))
            if code == "201":
                ok.append(t1 - t0)
            if code == "429" and first_429 is None:
                first_429 = t1 - t_start

    import asyncio

    await asyncio.gather(*(client() for _ in range(INFLIGHT)))
    wall = time.perf_counter() - t_start
    await api.close()
    windows = _window_p95(done)
    over_5s = next((t for t, p in windows if p > 5.0), None)
    return {
        "answers": dict(codes),
        "ok": summary_ms(ok),
        "all_answers": summary_ms([lat for _, lat in done]),
        "ok_per_s": round(len(ok) / wall, 2),
        "wall_s": round(wall, 2),
        "first_429_s": first_429,
        "p95_first_over_5s_at_s": over_5s,
        "shed_before_5s": over_5s is None or (first_429 is not None and first_429 <= over_5s),
    }


async def floor_run(ctx: Ctx, n: int) -> dict[str, Any]:
    """The HTTP floor: the same client, connections and concurrency against `GET /healthz`
    (no engine work at all), so the engine's own share of the answer time can be read."""
    import asyncio

    api = Api(ctx.stack, connections=INFLIGHT + 10)
    lat: list[float] = []

    async def one() -> None:
        t0 = time.perf_counter()
        r = await api.http.get("/healthz")
        if r.status_code == 200:
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(one() for _ in range(n)))
    await api.close()
    return {"ok": summary_ms(lat)}


async def bare_run(ctx: Ctx, n: int) -> dict[str, Any]:
    import asyncio

    client = ctx.stack.client
    assert client is not None
    payload = bare_payload(REGION)
    lat: list[float] = []
    errors: Counter[str] = Counter()
    counter = iter(range(n))
    t_start = time.perf_counter()

    async def one() -> None:
        for _ in counter:
            t0 = time.perf_counter()
            try:
                await start_bare(client, BareEmpty.run, payload, "bare-overload")
            except Exception as exc:  # noqa: BLE001
                errors[type(exc).__name__] += 1
                continue
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(one() for _ in range(INFLIGHT)))
    wall = time.perf_counter() - t_start
    return {"ok": summary_ms(lat), "ok_per_s": round(len(lat) / wall, 2), "errors": dict(errors)}


async def run(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult(
        id="8",
        title=f"overload: {INFLIGHT} case starts in flight",
        baseline=f"bare start_workflow, {INFLIGHT} in flight",
        target="p95 ≤ 1.25 × bare; the API answers 429 (admission control) before p95 passes 5 s",
    )
    n = INFLIGHT  # one wave: every client files one case at the same moment
    eng: list[float | None] = []
    bare: list[float | None] = []
    floors: list[float | None] = []
    shed = True
    failures = 0
    runs = []
    for run_no in range(ctx.runs):
        await ctx.stack.settle(timeout=60)
        floor = await floor_run(ctx, n)
        e = await engine_run(ctx, n)
        await ctx.stack.settle(timeout=60)
        b = await bare_run(ctx, n)
        runs.append({"engine": e, "bare": b, "http_floor": floor})
        floors.append(floor["ok"].get("p95_ms"))
        eng.append(e["all_answers"].get("p95_ms"))
        bare.append(b["ok"].get("p95_ms"))
        shed = shed and e["shed_before_5s"]
        failures += sum(v for k, v in e["answers"].items() if k not in ("201", "429"))
        log(
            f"s8 run {run_no + 1}: engine answers {e['answers']} p95 "
            f"{e['all_answers'].get('p95_ms')} ms ({e['ok_per_s']}/s); bare p95 "
            f"{b['ok'].get('p95_ms')} ms ({b['ok_per_s']}/s)"
        )
    res.rows.append(
        row_from_runs(
            "8.p95",
            f"p95 answer time, {INFLIGHT} in flight ({n} starts)",
            "ms",
            eng,
            bare,
            "≤ 1.25 × bare",
            lambda v, b: v <= 1.25 * b,
            baseline_label="bare start_workflow",
        )
    )
    res.rows.append(
        row_from_runs(
            "8.floor",
            f"HTTP floor: GET /healthz, {INFLIGHT} in flight, same client (p95)",
            "ms",
            floors,
            bare,
            "informative",
            None,
            baseline_label="bare start_workflow",
        )
    )
    worst = max((r["engine"]["p95_first_over_5s_at_s"] or 0) for r in runs)
    res.rows.append(
        row_from_runs(
            "8.shed",
            "429 answered before the p95 passed 5 s (1 = yes)",
            "",
            [1.0 if r["engine"]["shed_before_5s"] else 0.0 for r in runs],
            [],
            "429 before p95 > 5 s",
            None,
            note=f"p95 first over 5 s after {worst} s" if worst else "",
        )
    )
    res.rows[-1].met = shed
    res.details = {"starts_per_run": n, "failed_answers": failures, "runs": runs}
    return res
