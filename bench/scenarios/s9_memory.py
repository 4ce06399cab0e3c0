"""Scenario 9: peak resident memory of the worker and the API during scenario 2."""

from __future__ import annotations

from bench.common import Ctx, Row, ScenarioResult


async def run(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult(
        id="9",
        title="memory: peak resident memory during scenario 2",
        baseline="— (the bare worker's peak is shown beside the engine worker's)",
        target="reported",
    )
    mem = ctx.shared.get("s2_memory")
    if not mem:
        res.status = "error"
        res.notes.append("scenario 2 did not record memory")
        return res

    def peak(name: str) -> float | None:
        m = mem.get(name, {})
        values = [v for v in (m.get("peak_rss_vmhwm_mb"), m.get("peak_rss_sampled_mb")) if v]
        return max(values) if values else None

    res.rows.append(
        Row("9.worker", "worker peak RSS", "MB", peak("worker"), peak("bare_worker"), "reported",
            None, baseline_label="bare worker peak")
    )  # fmt: skip
    res.rows.append(Row("9.api", "API peak RSS", "MB", peak("api"), None, "reported", None))
    res.rows.append(
        Row("9.temporal", "Temporal dev server peak RSS", "MB", peak("temporal"), None,
            "reported", None)
    )  # fmt: skip
    res.details = mem
    res.notes.append(
        "VmHWM is reset (clear_refs) at the start of scenario 2 and read at its end; "
        "VmRSS is also sampled every 250 ms; the larger of the two is reported."
    )
    return res
