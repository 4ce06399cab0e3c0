"""`casework` command line: run the stack, the worker, the API; mint tokens; drive the
simulated payment gateway; load demo data; compute deadlines."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from casework.settings import Settings, get_settings

log = logging.getLogger("casework")


def _hard_exit(code: int) -> None:
    # A process that used the Temporal SDK can crash at interpreter exit after a clean
    # shutdown (native threads during finalisation); leave without finalisation so that
    # never turns a clean run into a failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --------------------------------------------------------------------------- worker / api


def cmd_worker(args: argparse.Namespace) -> None:
    from casework.runtime import build_worker, connect

    settings = get_settings()

    async def run() -> None:
        client = await connect(settings, metrics=True)
        worker, pool = build_worker(client, settings)
        # Decision PDFs render in a process pool: start it now, not in the first decision.
        from activities.documents import warm_render_pool

        await asyncio.to_thread(warm_render_pool)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with worker:
            log.info(
                "worker polling task queue %s on %s", settings.task_queue, settings.temporal_address
            )
            await stop.wait()
        pool.shutdown(wait=True)

    asyncio.run(run())
    _hard_exit(0)


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    from api.main import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")
    _hard_exit(0)


# --------------------------------------------------------------------------- the stack


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _wait_port(host: str, port: int, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _port_open(host, port):
            return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start on {host}:{port} within {timeout:.0f}s")


def temporal_dev_server_args(settings: Settings, port: int, ui_port: int) -> list[str]:
    from casework.binaries import DEV_SERVER_TUNING, temporal_cli
    from workflows.search_attributes import cli_flags

    db = (settings.data_dir / "temporal.db").resolve()
    return [
        temporal_cli(), "server", "start-dev",
        "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(ui_port),
        "--db-filename", str(db),
        *DEV_SERVER_TUNING,
        "--log-level", "warn", "--ui-disable-news-fetch",
        *cli_flags(),
    ]  # fmt: skip


def _keep_histories(settings: Settings) -> None:
    """Closed case histories are the legal record: keep them for ten years, not the dev
    server's default 24 hours, so auditors can still replay them."""
    from casework.binaries import temporal_cli

    for _ in range(20):
        done = subprocess.run(
            [temporal_cli(), "operator", "namespace", "update", "--namespace", settings.temporal_namespace,
             "--retention", "87600h", "--address", settings.temporal_address],
            capture_output=True,
        )  # fmt: skip
        if done.returncode == 0:
            return
        time.sleep(0.5)
    print(
        "warning: could not set the namespace retention:",
        done.stderr.decode()[-300:],
        file=sys.stderr,
    )


def load_demo_data(settings: Settings) -> str:
    from activities.quota import quota_view
    from casework.calendar import DEMO_DECREES_2026
    from casework.db import CalendarDayRow, create_all, get_engine, session
    from casework.demo import load_demo_quotas

    engine = get_engine(settings.effective_database_url)
    create_all(engine)
    pools = load_demo_quotas(engine, 2026)
    with session(engine) as s:
        for day, kind, reason in DEMO_DECREES_2026:
            if s.get(CalendarDayRow, day) is None:
                s.add(
                    CalendarDayRow(day=day, kind=kind, reason=reason, updated_at=datetime.now(UTC))
                )
        s.commit()
    total = sum(p["limit"] for p in quota_view(engine, kind="work_permit"))
    return f"{pools} quota pools ({total} work-permit units for 2026), {len(DEMO_DECREES_2026)} decree days"


def cmd_up(args: argparse.Namespace) -> None:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    host, port = settings.temporal_address.split(":")
    env = {
        **os.environ,
        "CASEWORK_DATA_DIR": str(settings.data_dir.resolve()),
    }
    procs: list[subprocess.Popen[bytes]] = []
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and `kill` both stop the stack cleanly (a background job ignores SIGINT).
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def spawn(name: str, cmd: list[str], **extra_env: str) -> None:
        out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        procs.append(
            subprocess.Popen(
                cmd, env={**env, **extra_env}, stdout=out, stderr=subprocess.STDOUT
            )
        )

    try:
        if _port_open(host, int(port)):
            print(f"Temporal already answers on {settings.temporal_address}: using it")
        else:
            spawn("temporal", temporal_dev_server_args(settings, int(port), args.ui_port))
            _wait_port(host, int(port), "Temporal dev server")
            _keep_histories(settings)
        print("Demo data:", load_demo_data(settings))
        workers = settings.effective_worker_processes
        for i in range(1, workers + 1):
            # Each worker serves the SDK's metrics on its own port: 9464, 9465, ...
            metrics = f"127.0.0.1:{args.metrics_port + i - 1}" if args.metrics_port else ""
            spawn(
                "worker" if i == 1 else f"worker{i}",
                [sys.executable, "-m", "casework.cli", "worker"],
                CASEWORK_WORKER_METRICS_ADDRESS=metrics,
            )
        spawn(
            "api",
            [
                sys.executable,
                "-m",
                "casework.cli",
                "api",
                "--host",
                args.host,
                "--port",
                str(args.port),
            ],
        )
        _wait_port(args.host, args.port, "API")
        base = f"http://{args.host}:{args.port}"
        sdk_metrics = (
            f"http://127.0.0.1:{args.metrics_port}/metrics (Temporal SDK, worker 1; "
            f"{args.metrics_port + 1}... the others)"
            if args.metrics_port
            else "(Temporal SDK metrics off: --metrics-port 0)"
        )
        print(
            f"""
Kazakhstan migration casework engine is running (data in {settings.data_dir.resolve()}, logs in {logs.resolve()}).
  API            {base}/api/v1
  OpenAPI (docs) {base}/api/v1/docs
  Temporal UI    http://127.0.0.1:{args.ui_port}
  Metrics        {base}/metrics (cases, SLA)   {sdk_metrics}
Tokens (development):
  .venv/bin/casework token --role caseworker --region astana
  .venv/bin/casework token --role employer --party 123456789012
  .venv/bin/casework token --role supervisor            (national)
Press Ctrl-C to stop; cases survive a restart."""
        )
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        dead = [p.args for p in procs if p.poll() is not None]
        print(f"a process stopped: {dead}; see {logs}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    _hard_exit(0)


# --------------------------------------------------------------------------- tools


def cmd_token(args: argparse.Namespace) -> None:
    from api.auth import mint_token
    from casework.contracts import Actor

    actor = Actor(
        user_id=args.user
        or f"{args.role}-{args.region or args.party or args.consulate or 'national'}",
        role=args.role,
        region=args.region,
        party=args.party,
        consulate=args.consulate,
        name=args.name,
    )
    print(mint_token(actor, get_settings(), ttl=timedelta(hours=args.hours)))


def cmd_pay(args: argparse.Namespace) -> None:
    """The applicant pays through the simulated gateway, which calls the running API back."""
    from activities.registries import SimulatedPaymentGateway

    settings = get_settings()
    gw = SimulatedPaymentGateway(
        callback_url=f"{args.api.rstrip('/')}/api/v1/payments/callback",
        secret=settings.gateway_secret,
        latency=0,
    )
    print(json.dumps(asyncio.run(gw.pay(args.case_id, args.amount)), indent=2, ensure_ascii=False))
    _hard_exit(0)


def cmd_demo_data(args: argparse.Namespace) -> None:
    print(load_demo_data(get_settings()))


def cmd_deadline(args: argparse.Namespace) -> None:
    from casework.calendar import compute_deadline, load_calendar
    from casework.contracts import KZ_TZ, DeadlineRequest, Term
    from casework.db import create_all, get_engine, session

    engine = get_engine(get_settings().effective_database_url)
    create_all(engine)
    start = datetime.fromisoformat(args.start)
    if start.tzinfo is None:
        start = start.replace(tzinfo=KZ_TZ)
    with session(engine) as s:
        cal = load_calendar(s)
    d = compute_deadline(
        DeadlineRequest(start=start, term=Term(amount=args.term, unit=args.unit)), cal
    )
    print(d.explanation)


def cmd_verify_timeline(args: argparse.Namespace) -> None:
    """Check the hash chain of one case's timeline (exit 1 if broken)."""
    from casework.db import get_engine, session
    from casework.timeline import verify_chain

    with session(get_engine(get_settings().effective_database_url)) as s:
        report = verify_chain(s, args.case_id)
    print(report.model_dump_json(indent=2))
    sys.exit(0 if report.intact else 1)


def cmd_replay(args: argparse.Namespace) -> None:
    """Replay every case closed in a period against today's code; write a report (read-only)."""
    from casework.audit import replay_period
    from casework.db import get_engine
    from casework.runtime import connect

    settings = get_settings()
    engine = get_engine(settings.effective_database_url)

    async def run() -> dict[str, Any]:
        client = await connect(settings)
        return await replay_period(client, engine, args.since, args.until, args.procedure)

    summary = asyncio.run(run())
    Path(args.out).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    bad = len(summary["problems"])
    print(
        f"replayed {summary['replayed']} cases: {summary['replayed'] - bad} ok, {bad} with problems; report in {args.out}"
    )
    _hard_exit(1 if bad else 0)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    p = argparse.ArgumentParser(prog="casework", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("up", help="run Temporal dev server, worker and API (embedded default)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--ui-port", type=int, default=8233)
    up.add_argument(
        "--metrics-port",
        type=int,
        default=9464,
        help="first worker's Temporal SDK metrics port (the next ones follow; 0: off)",
    )
    up.set_defaults(fn=cmd_up)

    w = sub.add_parser("worker", help="run a worker (workflows and activities)")
    w.set_defaults(fn=cmd_worker)

    a = sub.add_parser("api", help="run the API")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8000)
    a.set_defaults(fn=cmd_api)

    t = sub.add_parser("token", help="mint a development bearer token")
    t.add_argument(
        "--role",
        required=True,
        choices=["caseworker", "supervisor", "auditor", "consulate_officer", "employer"],
    )
    t.add_argument("--region", help="region code, e.g. astana (caseworker, regional supervisor)")
    t.add_argument("--party", help="employer BIN (12 digits)")
    t.add_argument("--consulate", help="foreign mission code, e.g. KZ-CN-URUMQI")
    t.add_argument("--user", help="user id (default derived from role and scope)")
    t.add_argument("--name")
    t.add_argument("--hours", type=int, default=12)
    t.set_defaults(fn=cmd_token)

    pay = sub.add_parser("pay", help="pay a case's fee through the simulated gateway")
    pay.add_argument("case_id")
    pay.add_argument("amount", type=int, help="amount in KZT (the fee notice says how much)")
    pay.add_argument("--api", default="http://127.0.0.1:8000")
    pay.set_defaults(fn=cmd_pay)

    d = sub.add_parser("demo-data", help="load the 2026 quotas and decree days (idempotent)")
    d.set_defaults(fn=cmd_demo_data)

    dl = sub.add_parser("deadline", help="compute a legal deadline with its explanation")
    dl.add_argument(
        "--start", required=True, help="ISO date or datetime (Astana time if no offset)"
    )
    dl.add_argument("--term", type=int, required=True)
    dl.add_argument(
        "--unit",
        default="working_days",
        choices=["working_days", "calendar_days", "hours", "minutes"],
    )
    dl.set_defaults(fn=cmd_deadline)

    v = sub.add_parser("verify-timeline", help="check the hash chain of a case's timeline")
    v.add_argument("case_id")
    v.set_defaults(fn=cmd_verify_timeline)

    rp = sub.add_parser(
        "replay", help="replay every case closed in a period; write a report (read-only)"
    )
    rp.add_argument("--since", required=True, help="closed on or after this date (YYYY-MM-DD, UTC)")
    rp.add_argument("--until", required=True, help="closed before this date (YYYY-MM-DD, UTC)")
    rp.add_argument("--procedure", choices=["work_permit", "kandas_status"])
    rp.add_argument("--out", default="replay-report.json")
    rp.set_defaults(fn=cmd_replay)

    args = p.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
