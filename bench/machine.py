"""What the results were measured on, and how busy the machine was meanwhile."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from casework.binaries import temporal_cli


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _temporal_cli_version() -> str:
    try:
        out = subprocess.run([temporal_cli(), "--version"], capture_output=True, text=True)
        return out.stdout.strip()
    except (OSError, FileNotFoundError):
        return "unknown"


def _cpu_jiffies() -> list[int]:
    """The whole machine's CPU jiffies since boot, by kind (the `cpu` line of /proc/stat)."""
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine since boot."""
    fields = _cpu_jiffies()
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def steal_jiffies() -> int:
    """CPU jiffies the hypervisor gave to other guests (`steal` in /proc/stat)."""
    fields = _cpu_jiffies()
    return fields[7] if len(fields) > 7 else 0


def speed_ms(rounds: int = 5) -> float:
    """A fixed single-core Python workload (JSON, hashing, a dict and a sort), median of
    `rounds`, in ms: the same on any run of one machine within a few per cent, so runs on
    different machines (or a machine slowed by its neighbours) can be told apart. Lower is
    faster: session 8's machine, about three times slower than session 7's by every bare
    baseline, took 46-48 ms (session 7 did not measure it)."""
    doc = {"case": "WP-0000000000", "events": [{"seq": i, "kind": "status"} for i in range(50)]}
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        acc = 0
        for i in range(400):
            text = json.dumps({**doc, "n": i}, sort_keys=True)
            acc ^= int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            acc ^= len(sorted({str(j * i): j for j in range(60)}))
        times.append((time.perf_counter() - t0) * 1000)
    return round(sorted(times)[len(times) // 2], 1)


def machine_info() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "memory_mb": _mem_total_mb(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "temporalio": _version("temporalio"),
        "temporal_cli": _temporal_cli_version(),
        "weasyprint": _version("weasyprint"),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_start": list(os.getloadavg()),
        "speed_ms": speed_ms(),
    }
