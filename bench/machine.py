"""What the results were measured on, and how busy the machine was meanwhile."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
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


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


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
    }
