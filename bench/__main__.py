"""`python -m bench [--quick] [--scenarios 1,2,...] [--postgres-url URL] [--out bench/results]`

Starts its own stack (Temporal dev server in SQLite WAL mode with the project's search
attributes, the engine worker and the API as subprocesses, and the bare baseline's
worker), runs each scenario beside its bare baseline in the same run, on the same server,
with the same concurrency (median of 3 runs; quick mode: 1 run with tiny N), and writes
`<out>/<timestamp>-<mode>.json` and `<out>/latest.json`; with the default `--out` it also
rewrites the results tables of BENCHMARKS.md (`python -m bench.report`).

With `--target` it measures a running stack instead (the one the `CASEWORK_*` environment
describes, its API at `--api-url`): only the bare baseline's worker is started, beside it on
the same Temporal server; results go to `<out>/targets/`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Ctx, ScenarioResult, log
from bench.machine import busy_jiffies, machine_info, steal_jiffies
from bench.stack import BenchStack, TargetStack, cpu_seconds, new_stack, new_target_stack

DEFAULT_OUT = Path(__file__).resolve().parent / "results"

# id -> (module, title, baseline, target); module None: not implemented yet.
SCENARIOS: dict[str, tuple[str | None, str, str, str]] = {
    "1": ("bench.scenarios.s1_case_start", "case start", "bare client.start_workflow", "≥ 80 % of bare starts/s; p95 ≤ 1.25 × bare p95"),
    "2": ("bench.scenarios.s2_lifecycle", "full lifecycle through the API", "bare workflow of the same shape", "≥ 0.6 × bare cases/s at 10 and 50 in flight"),
    "3": ("bench.scenarios.s3_task_completion", "task completion → next task visible", "bare update to an idle workflow", "p95 ≤ bare p95 + 100 ms at 10 concurrent"),
    "4": ("bench.scenarios.s4_read_side", "read side at 10k/100k/1M rows (PostgreSQL)", "—", "p95 ≤ 100 ms at 1 M rows; query plans saved"),
    "5": ("bench.scenarios.s5_documents", "decision documents", "bare WeasyPrint of the same HTML", "≥ 80 % of bare docs/s; workflow tasks delayed ≤ 20 % at p95 during a burst"),
    "6": ("bench.scenarios.s6_replay", "replay", "bare workflow history of the same length", "≤ 1.5 × bare"),
    "7": ("bench.scenarios.s7_clock", "clock precision", "timer fire time in the history", "breach visible in the read model p95 ≤ 1 s, max ≤ 2 s"),
    "8": ("bench.scenarios.s8_overload", "overload: 200 in flight", "bare at 200 in flight", "p95 ≤ 1.25 × bare; 429 before p95 passes 5 s"),
    "9": ("bench.scenarios.s9_memory", "memory during scenario 2", "—", "reported"),
}  # fmt: skip
# Experiments: the engine changes BENCHMARKS.md recommends, tried without editing the
# engine; their results go to `<out>/experiments/`, never into the BENCHMARKS.md tables.
EXPERIMENTS: dict[str, dict[str, str]] = {
    "one-worker": {
        "workers": "1",
        "what": "one engine worker process (before: the engine runs one per CPU)",
    },
    "reload-workflow-modules": {
        "env": "CASEWORK_WORKER_SANDBOX_RELOAD_WORKFLOW_MODULES=true",
        "what": "the SDK's default sandbox: every case imports its workflow module afresh, "
        "on the engine's workers and the bare worker alike (before session 8)",
    },
    "sdk-sandbox-calls": {
        "env": "CASEWORK_WORKER_SANDBOX_DIRECT_CALLS=false",
        "what": "the SDK's own sandbox instance: each serialization context asked through "
        "the sandbox, each entry compiled again, on the engine's workers and the bare "
        "worker alike (before session 9)",
    },
    "unsandboxed": {
        "env": "CASEWORK_WORKER_SANDBOX=false",
        "what": "workflows run without the SDK's sandbox, on the engine's workers and the bare "
        "worker alike (replays stay sandboxed): what the sandbox costs each side",
    },
    "sdk-payload-walks": {
        "env": "CASEWORK_WORKER_SKIP_IDLE_PAYLOAD_WALKS=false",
        "what": "the SDK walks every payload of every activation and completion for a codec "
        "and external storage although neither is configured, on the engine's workers and "
        "the bare worker alike (before session 10)",
    },
}
# Scenarios that disturb the stack for a while (breach storms, overload) run last.
ORDER = ["1", "2", "9", "3", "5", "6", "8", "7", "4"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="1 run, tiny N (under 5 minutes)")
    p.add_argument("--scenarios", default=",".join(sorted(SCENARIOS)), help="e.g. 1,3,6")
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("CASEWORK_TEST_POSTGRES_URL")
        or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server for scenario 4 (a bench database is created on it)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument(
        "--read-model",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="where the stack's read model lives (default: SQLite, the embedded default); "
        "postgres: a fresh database on --postgres-url; results go to <out>/experiments",
    )
    p.add_argument("--runs", type=int, default=None, help="runs per figure (default 3; quick 1)")
    p.add_argument("--keep", action="store_true", help="keep the stack's data folder")
    p.add_argument(
        "--target",
        action="store_true",
        help="measure a running stack (a development or staging one: the bench files cases, "
        "pays them and tops up quota pools), configured by the same CASEWORK_* environment "
        "it was started with; results go to <out>/targets",
    )
    p.add_argument(
        "--api-url",
        default="",
        help="with --target: the target's API (default: CASEWORK_PUBLIC_BASE_URL)",
    )
    p.add_argument(
        "--experiment",
        help=f"comma-separated, from {sorted(EXPERIMENTS)} (see bench/experiments)",
    )
    return p.parse_args(argv)


async def run_scenario(sid: str, ctx: Ctx) -> ScenarioResult:
    module, title, baseline, target = SCENARIOS[sid]
    t0 = time.monotonic()
    if module is None:
        return ScenarioResult(sid, title, baseline, target, status="not_implemented")
    try:
        ctx.stack.check_alive()
        mod = importlib.import_module(module)
        result: ScenarioResult = await mod.run(ctx)
    except NotImplementedError as exc:
        result = ScenarioResult(sid, title, baseline, target, status="not_implemented")
        result.notes.append(str(exc) or "not implemented yet")
    except Exception as exc:  # noqa: BLE001 - one failed scenario must not lose the others
        log(f"scenario {sid} failed: {exc!r}")
        traceback.print_exc()
        result = ScenarioResult(sid, title, baseline, target, status="error")
        result.notes.append(f"{type(exc).__name__}: {exc}")
        result.details["traceback"] = traceback.format_exc()[-3000:]
    result.duration_s = time.monotonic() - t0
    log(f"scenario {sid} done in {result.duration_s:.0f}s ({result.status}, met={result.met})")
    return result


async def main_async(args: argparse.Namespace) -> int:
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios: {unknown}")
    if "9" in wanted and "2" not in wanted:
        wanted.append("2")  # memory is measured during scenario 2
    mode = "quick" if args.quick else "full"
    experiments = [e for e in (args.experiment or "").split(",") if e]
    if set(experiments) - set(EXPERIMENTS):
        raise SystemExit(f"unknown experiments: {set(experiments) - set(EXPERIMENTS)}")
    if experiments:
        mode += "-exp-" + "+".join(experiments)
    if args.read_model == "postgres":
        mode += "-pg"
    if args.target and (experiments or args.read_model != "sqlite"):
        raise SystemExit(
            "--target measures the stack as it runs: --experiment and --read-model "
            "change a stack the bench starts itself"
        )
    if args.target:
        mode += "-target"
    if args.out.resolve() == DEFAULT_OUT:
        if experiments or args.read_model != "sqlite":
            args.out = DEFAULT_OUT / "experiments"
        elif args.target:
            args.out = DEFAULT_OUT / "targets"
    runs = args.runs or (1 if args.quick else 3)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    machine = machine_info()
    busy0 = busy_jiffies()
    steal0 = steal_jiffies()
    stack: BenchStack = (
        new_target_stack(args.api_url, keep=args.keep) if args.target else new_stack(args.keep)
    )
    if args.read_model == "postgres":
        stack.use_postgres(args.postgres_url)
    for e in experiments:
        stack.api_module = EXPERIMENTS[e].get("api_module", stack.api_module)
        stack.worker_module = EXPERIMENTS[e].get("worker_module", stack.worker_module)
        stack.workers = int(EXPERIMENTS[e].get("workers", stack.workers))
        if "env" in EXPERIMENTS[e]:
            name, _, value = EXPERIMENTS[e]["env"].partition("=")
            stack.extra_env[name] = value
    results: dict[str, ScenarioResult] = {}
    ours0 = cpu_seconds(os.getpid())
    stack_cpu: dict[str, float] = {}
    try:
        if isinstance(stack, TargetStack):
            log(f"target: API {stack.api_url}, Temporal {stack.settings.temporal_address}")
        else:
            log(f"starting the stack in {stack.data_dir}")
        await stack.start()
        # A target's processes ran before the bench: only what they spend from now counts.
        cpu_before_run = dict(stack.cpu()) if stack.observed else {}
        cpu_before_run.pop("bench", None)
        log(f"stack up: Temporal {stack.settings.temporal_address}, API {stack.api_url}")
        ctx = Ctx(stack=stack, quick=args.quick, runs=runs, postgres_url=args.postgres_url)
        for sid in ORDER:
            if sid in wanted:
                log(f"scenario {sid}: {SCENARIOS[sid][1]}")
                results[sid] = await run_scenario(sid, ctx)
        # The stack's processes and the workers' render processes (not other load).
        stack_cpu = {
            n: v - cpu_before_run.get(n, 0.0) for n, v in stack.cpu().items() if n != "bench"
        }
    finally:
        await stack.stop()
    wall = time.monotonic() - t0
    busy1 = busy_jiffies()
    stolen = steal_jiffies() - steal0
    machine["loadavg_end"] = list(os.getloadavg())
    nproc = machine["nproc"] or 1
    jiffies = max(1, busy1[1] - busy0[1])
    busy_cores = (busy1[0] - busy0[0]) / jiffies * nproc
    ours = (cpu_seconds(os.getpid()) - ours0 + sum(stack_cpu.values())) / wall
    machine["cpu_during_run"] = {
        "busy_cores_avg": round(busy_cores, 2),
        "bench_stack_cores_avg": round(ours, 2),
        "other_processes_cores_avg": round(max(0.0, busy_cores - ours), 2),
        # Cores the hypervisor gave to other guests meanwhile.
        "stolen_cores_avg": round(stolen / jiffies * nproc, 2),
        "note": "other processes (e.g. other test runs) shared the CPU; ratios to baselines "
        "measured in the same run are what count",
    }
    doc = {
        "mode": mode,
        "experiments": {e: EXPERIMENTS[e] for e in experiments},
        "runs_per_figure": runs,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(wall, 1),
        "machine": machine,
        "stack": stack.describe()
        if isinstance(stack, TargetStack)
        else {
            "temporal": "dev server (temporal server start-dev), SQLite file in WAL mode "
            "(journal_mode=WAL, synchronous=NORMAL), project search attributes, headless",
            "worker": "python -m casework.cli worker (casework.runtime.build_worker)",
            "api": "python -m casework.cli api (uvicorn, one process)",
            "bare_worker": "python -m bench.bare_worker (same SDK, converter, sandbox, 16 activity slots)",
            "read_model": (
                "SQLite (WAL) as the embedded default; PostgreSQL for scenario 4"
                if args.read_model == "sqlite"
                else "PostgreSQL (a fresh database on --postgres-url)"
            ),
            "simulators": "latency 0, failure rate 0: we measure the engine, not the simulated registries",
        },
        "scenarios": {sid: results[sid].to_json() for sid in sorted(results)},
    }
    for sid in sorted(SCENARIOS):
        if sid not in results:
            doc["scenarios"][sid] = {
                "id": sid,
                "title": SCENARIOS[sid][1],
                "status": "skipped" if SCENARIOS[sid][0] else "not_implemented",
                "rows": [],
            }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(doc, indent=1, ensure_ascii=False)
    for name in (f"{stamp}-{mode}.json", "latest.json", f"latest-{mode}.json"):
        tmp = args.out / f"{name}.tmp"
        tmp.write_text(text + "\n")
        tmp.replace(args.out / name)
    log(f"results: {args.out / f'{stamp}-{mode}.json'} ({wall:.0f}s)")
    if args.out.resolve() == DEFAULT_OUT:
        from bench.report import write_report

        write_report(args.out)
        log("BENCHMARKS.md tables rewritten")
    bad = [sid for sid, r in results.items() if r.status == "error"]
    return 1 if bad else 0


async def _guarded(args: argparse.Namespace) -> int:
    """SIGTERM and SIGINT cancel the run, so the stack is still shut down cleanly."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)  # once: a second signal must not cut the shutdown
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, interrupt)
    try:
        return await main_async(args)
    except asyncio.CancelledError:
        log("interrupted: the stack was stopped")
        return 130


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    code = asyncio.run(_guarded(args))
    # A process that used the Temporal SDK can crash at interpreter exit after a clean
    # shutdown (native threads during finalisation): leave without finalisation so that a
    # clean run never reads as a failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
