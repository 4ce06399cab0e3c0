"""Smoke test of the benchmark harness: the quick mode with tiny N for three cheap
scenarios produces a well-formed results file. No timing assertions: figures are
machine-dependent and belong in bench/results, never in a test."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = ["1", "3", "6"]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_mode_writes_well_formed_results(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEWORK_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scenarios", ",".join(SCENARIOS),
         "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    latest = tmp_path / "latest.json"
    assert latest.is_file()
    stamped = [p for p in tmp_path.glob("*-quick.json") if not p.name.startswith("latest")]
    assert len(stamped) == 1
    doc = json.loads(latest.read_text())
    assert doc == json.loads(stamped[0].read_text())

    assert doc["mode"] == "quick"
    machine = doc["machine"]
    for key in ("nproc", "memory_mb", "cpu_model", "python", "temporalio", "date"):
        assert machine.get(key), key
    assert _number(machine["nproc"]) and _number(machine["memory_mb"])
    # How fast this machine is, and how much the hypervisor took meanwhile: what tells a
    # slower machine from a slower engine when runs of different days are compared.
    assert _number(machine["speed_ms"]) and machine["speed_ms"] > 0
    assert _number(machine["cpu_during_run"]["stolen_cores_avg"])

    for sid in SCENARIOS:
        sc = doc["scenarios"][sid]
        assert sc["status"] == "ok", (sid, sc.get("notes"))
        assert sc["rows"], sid
        compared = [r for r in sc["rows"] if r["target"] != "informative"]
        assert compared, sid
        for row in compared:
            assert _number(row["value"]), (sid, row)
            assert _number(row["baseline"]), (sid, row)
            assert _number(row["ratio"]), (sid, row)
            assert row["met"] in (True, False), (sid, row)
            assert row["target"]
    # Scenarios not asked for are listed, never given made-up figures.
    for sid, sc in doc["scenarios"].items():
        if sid not in SCENARIOS:
            assert sc["status"] in ("skipped", "not_implemented")
            assert sc["rows"] == []
