"""Small statistics helpers: percentiles, latency summaries, medians of runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return data[lo]
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary_ms(seconds: Iterable[float]) -> dict[str, Any]:
    """Latency summary in milliseconds from durations in seconds."""
    ms = [s * 1000.0 for s in seconds]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": rnd(percentile(ms, 50)),
        "p95_ms": rnd(percentile(ms, 95)),
        "p99_ms": rnd(percentile(ms, 99)),
        "max_ms": rnd(max(ms)),
        "mean_ms": rnd(statistics.fmean(ms)),
    }


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def medians_by_key(samples: Sequence[dict[str, float]]) -> dict[str, float | None]:
    """Each key's median over the samples that have it, keys in first-seen order."""
    keys = dict.fromkeys(k for sample in samples for k in sample)
    return {k: rnd(median([sample.get(k) for sample in samples])) for k in keys}


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline == 0:
        return None
    return round(value / baseline, 3)
