"""`python -m bench.report [results folder]`: rewrite the results tables of BENCHMARKS.md.

For each mode (full, quick) the table shows, for every scenario, its most recent result
in the folder; the text around the tables is kept.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCHMARKS = HERE.parent / "BENCHMARKS.md"


def _load(
    folder: Path, mode: str
) -> tuple[dict[str, Any] | None, dict[str, tuple[dict[str, Any], str]]]:
    """The newest result file of the mode, and per scenario its newest result with its date."""
    files = sorted(folder.glob(f"*-{mode}.json"))
    files = [f for f in files if not f.name.startswith("latest")]
    newest: dict[str, Any] | None = None
    per: dict[str, tuple[dict[str, Any], str]] = {}
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        newest = doc
        for sid, sc in doc.get("scenarios", {}).items():
            if sc.get("status") in ("ok", "error") or sid not in per:
                per[sid] = (sc, doc.get("started_at", ""))
    return newest, per


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        if abs(v) >= 100:
            s = f"{v:,.0f}"
        elif abs(v) >= 10:
            s = f"{v:.1f}"
        else:
            s = f"{v:.2f}"
    else:
        s = str(v)
    return f"{s} {unit}".strip()


def _met(v: bool | None) -> str:
    return "—" if v is None else ("yes" if v else "**no**")


def table(folder: Path, mode: str) -> str:
    newest, per = _load(folder, mode)
    if newest is None:
        return f"_No {mode} run yet: `.venv/bin/python -m bench{' --quick' if mode == 'quick' else ''}`._\n"
    m = newest["machine"]
    cpu = m.get("cpu_during_run", {})
    lines = [
        f"Machine: {m.get('nproc')} CPUs ({m.get('cpu_model')}), {m.get('memory_mb')} MB RAM, "
        f"Python {m.get('python')}, temporalio {m.get('temporalio')}, {m.get('temporal_cli')}, "
        f"WeasyPrint {m.get('weasyprint')}."
        + (
            f" Speed: {m['speed_ms']} ms for the fixed workload of `bench.machine.speed_ms`"
            " (lower is faster; session 8's slow machine: 46-48)."
            if m.get("speed_ms")
            else ""
        )
        + "  ",
        f"Latest {mode} run: {newest.get('started_at')}, {newest.get('duration_s')} s, "
        f"{newest.get('runs_per_figure')} run(s) per figure (median). "
        f"CPU meanwhile: {cpu.get('busy_cores_avg')} cores busy on average, "
        f"{cpu.get('other_processes_cores_avg')} of them by other processes"
        + (
            f"; {cpu['stolen_cores_avg']} cores taken by the hypervisor."
            if cpu.get("stolen_cores_avg") is not None
            else "."
        ),
        "",
        "| # | measure | figure | baseline | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    dates = {d for _, d in per.values()}
    for sid in sorted(per, key=lambda s: int(s)):
        sc, date = per[sid]
        when = f" ({date})" if len(dates) > 1 else ""
        status = sc.get("status")
        if status != "ok":
            note = "; ".join(sc.get("notes", []))[:200]
            label = {
                "not_implemented": "not implemented yet",
                "skipped": "not run",
                "error": "**error**",
            }.get(status, status)
            lines.append(f"| {sid} | {sc.get('title')}{when} | {label} {note} | | | | |")
            continue
        for r in sc.get("rows", []):
            unit = r.get("unit", "")
            base = _fmt(r.get("baseline"), unit)
            if r.get("baseline_label"):
                base += f" ({r['baseline_label']})"
            lines.append(
                f"| {sid} | {r['label']}{when} | {_fmt(r.get('value'), unit)} | {base} | "
                f"{_fmt(r.get('ratio'))} | {r.get('target')} | {_met(r.get('met'))} |"
            )
    return "\n".join(lines) + "\n"


def write_report(folder: Path = HERE / "results", path: Path = BENCHMARKS) -> None:
    text = path.read_text() if path.exists() else ""
    for mode in ("full", "quick"):
        start, end = f"<!-- bench:{mode}:start -->", f"<!-- bench:{mode}:end -->"
        block = f"{start}\n{table(folder, mode)}{end}"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = head + block + tail
        else:
            text += f"\n## Results ({mode} mode)\n\n{block}\n"
    path.write_text(text)


if __name__ == "__main__":
    write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results")
