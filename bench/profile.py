"""`python -m bench.profile [--scenarios 2w10,3e,1,3] [--procs worker,api] [--rate 100] [--full]`

Runs scenarios in quick mode (or with full-mode N, one run) on a fresh stack while py-spy samples the chosen stack
processes (the engine worker, the API), then writes, per process, the collapsed stacks
and a summary (where the samples are: by top-level activity or route, by engine
function, by library) to `bench/results/profiles/<timestamp>-<process>.*`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.common import Ctx, log
from bench.stack import new_stack

OUT = Path(__file__).resolve().parent / "results" / "profiles"
ENGINE_DIRS = ("/activities/", "/api/", "/casework/", "/workflows/")


ENGINE = re.compile(r"\((?:\./)?(activities|api|casework|workflows)/[^)]*\)")
# Leaf frames of idle waits (uvicorn's uvloop waits natively, below Runner.run).
IDLE = ("EpollSelector.select", "_worker (concurrent/futures/thread.py:81)", "Condition.wait",
        "Queue.get", "Event.wait", "Thread.join", "select.poll",
        "Runner.run (asyncio/runners.py:118)", "_PollLikeSelector.select")  # fmt: skip


def summarize(collapsed: Path, top: int = 40) -> str:
    """Where the samples are: per innermost engine function (with the library time spent
    under it), per frame (self), and the share of idle waits."""
    inclusive: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    attributed: Counter[str] = Counter()
    total = idle = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        if any(frames[-1].startswith(i) for i in IDLE):
            idle += n
            continue
        total += n
        for f in set(frames):
            inclusive[f] += n
        self_[frames[-1]] += n
        engine = [f for f in frames if ENGINE.search(f)]
        attributed[engine[-1] if engine else "(no engine frame: SDK, event loop, libraries)"] += n
    if not total:
        return "no samples\n"
    lines = [
        f"{total} busy samples ({idle} more were idle waits, left out)",
        "",
        "## innermost engine function (its library calls included)",
        "",
    ]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in attributed.most_common(top)]
    lines += ["", "## engine functions, inclusive", ""]
    lines += [
        f"{100 * n / total:5.1f}%  {f}"
        for f, n in [(f, n) for f, n in inclusive.most_common() if ENGINE.search(f)][:top]
    ]
    lines += ["", "## frames, self (where the CPU is)", ""]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in self_.most_common(top)]
    return "\n".join(lines) + "\n"


def _spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def main_async(args: argparse.Namespace) -> None:
    import importlib

    from bench.__main__ import SCENARIOS

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    stack = new_stack()
    spies: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        await stack.start()
        ctx = Ctx(stack=stack, quick=not args.full, runs=1, postgres_url=None)

        async def record() -> None:
            for name in args.procs.split(","):
                out = OUT / f"{stamp}-{args.tag}{name}.collapsed"
                cmd = [spy, "record", "--pid", str(stack.procs[name].pid), "--rate", str(args.rate),
                       "--format", "raw", "--output", str(out)]  # fmt: skip
                if args.gil:
                    cmd.append("--gil")
                elif not args.active:
                    cmd.append("--idle")
                spies.append((name, _spawn(cmd), out))
            await asyncio.sleep(1)

        if args.scenarios != "3e":  # 3e starts the profilers itself, after its setup
            await record()
        for sid in args.scenarios.split(","):
            if sid == "2w10":  # the engine side of scenario 2 only, 10 in flight, 20 cases
                from bench.scenarios.s2_lifecycle import engine_run

                log("profiling scenario 2 (engine side, 10 in flight)")
                e = await engine_run(ctx, 10, 20)
                log(f"  {e['cases_per_s']} cases/s, {e['error_count']} errors")
                continue
            if sid == "3e":  # the engine side of scenario 3 only, 10 concurrent, 300 samples,
                # sampled from the first completion on (the cases are filed and claimed before)
                from bench.scenarios.s3_task_completion import engine_run as s3_engine

                log("profiling scenario 3 (engine side, 10 concurrent, 300 completions)")
                e = await s3_engine(ctx, "karaganda", 300, on_ready=record)
                log(
                    f"  complete p95 {e['complete']['p95_ms']} ms, visible {e['visible']['p95_ms']} ms"
                )
                continue
            mod = importlib.import_module(SCENARIOS[sid][0] or "")
            log(f"profiling scenario {sid}")
            result = await mod.run(ctx)
            for r in result.rows:
                log(f"  {r.label}: {r.value} vs {r.baseline} ({r.ratio})")
    finally:
        for _, p, _ in spies:
            p.send_signal(signal.SIGINT)
        for name, p, out in spies:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
            if out.exists():
                summary = out.with_suffix(".txt")
                summary.write_text(summarize(out))
                log(f"{name}: {summary}")
            else:
                log(
                    f"{name}: py-spy wrote nothing: {p.stderr.read().decode()[-500:] if p.stderr else ''}"
                )
        await stack.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "--scenarios",
        default="2w10",
        help="scenario ids; 2w10: scenario 2's engine side at 10 in flight",
    )
    p.add_argument("--procs", default="worker,api")
    p.add_argument("--rate", type=int, default=100)
    p.add_argument("--tag", default="", help="prefix of the output names")
    p.add_argument(
        "--active",
        action="store_true",
        help="sample only threads py-spy sees running (CPU), not those waiting on a lock or I/O",
    )
    p.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL: where the process's Python CPU goes",
    )
    p.add_argument("--full", action="store_true", help="full-mode N (one run) instead of quick")
    args = p.parse_args()
    if "3e" in args.scenarios.split(",") and args.scenarios != "3e":
        p.error("3e profiles scenario 3's completions only: run it on its own")
    asyncio.run(main_async(args))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the Temporal SDK can crash at interpreter exit; see bench/__main__.py


if __name__ == "__main__":
    main()
