"""The benchmark's own stack: a Temporal dev server (SQLite WAL, the project's search
attributes), the engine worker and the API as the production commands run them
(`python -m casework.cli worker|api`, uvicorn), and the bare baseline's worker; every
process on free ports, with its data in a temporary folder.

Simulated registries run with latency 0 and failure rate 0: we measure the engine, not the
simulated registries.

Or a running stack (`--target`, `TargetStack`): its Temporal server, API, workers and
read model are taken as they are, configured by the same `CASEWORK_*` environment the
stack was started with; the bench starts only the bare baseline's worker beside it, on the
same Temporal server, and never stops the target's processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from casework.binaries import DEV_SERVER_TUNING, temporal_cli
from casework.settings import Settings
from workflows.search_attributes import cli_flags

REPO = Path(__file__).resolve().parent.parent
ENGINE_QUEUE = "casework-bench"
BARE_QUEUE = "bare-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    """Children are killed when the bench process dies (Linux prctl PR_SET_PDEATHSIG): a
    wedged API does not answer SIGTERM."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- /proc


def rss_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in MB."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def stack_processes(data_dir: Path) -> dict[str, int]:
    """The processes of a stack that `casework up` runs on this machine with this data
    folder (it gives each of them `CASEWORK_DATA_DIR`): its Temporal dev server, its API
    and its workers, named as the bench names its own (`worker`, `worker2`, ...)."""
    wanted = str(data_dir.resolve())
    found: list[tuple[str, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if _environ(pid).get("CASEWORK_DATA_DIR") != wanted:
            continue
        args = _cmdline(pid)
        if "start-dev" in args:
            found.append(("temporal", pid))
        elif "casework.cli" in args and "worker" in args:
            found.append(("worker", pid))
        elif "casework.cli" in args and "api" in args:
            found.append(("api", pid))
    names: dict[str, int] = {}
    for kind, pid in sorted(found, key=lambda f: f[1]):  # the first worker started is `worker`
        n = sum(1 for name in names if name.startswith(kind))
        names[kind if n == 0 else f"{kind}{n + 1}"] = pid
    return names


def descendants(pids: set[int]) -> set[int]:
    """Every living process below these (the worker's forkserver and render processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# --------------------------------------------------------------------------- the stack


def compile_bytecode() -> None:
    """Compile the project's bytecode, as `./stack` does before it runs anything.

    The workflow sandbox imports a workflow's module afresh for every new case; where
    PYTHONDONTWRITEBYTECODE is set (as on these machines) and nothing compiled the source
    beforehand, every one of those imports compiles it again."""
    import compileall

    for package in ("casework", "workflows", "activities", "api", "bench"):
        compileall.compile_dir(REPO / package, quiet=1)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class BenchStack:
    data_dir: Path  # the bench's own files (a target keeps its data where it is)
    temporal_port: int
    api_port: int
    settings: Settings
    override_dir: Path | None  # drill rule sets (scenario 7); None: the target has none
    procs: dict[str, Proc] = field(default_factory=dict)
    client: Client | None = None
    keep: bool = False
    # Experiments (bench/experiments): a module run instead of `casework.cli api|worker`.
    api_module: str | None = None
    worker_module: str | None = None
    # Engine worker processes on the task queue: as `casework up` runs them (one per CPU;
    # experiment one-worker: 1). The bare baseline has its own single worker process.
    workers: int = field(default_factory=lambda: Settings().effective_worker_processes)
    extra_env: dict[str, str] = field(default_factory=dict)  # experiments: settings changed
    pg_admin: str = ""
    pg_database: str = ""  # set when the read model is on PostgreSQL (--read-model postgres)
    engine_queue: str = ENGINE_QUEUE
    # A target's processes found on this machine: measured (CPU, memory), never started,
    # signalled or stopped by the bench.
    observed: dict[str, int] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def engine(self) -> Engine:
        from casework.db import get_engine

        return get_engine(self.settings.effective_database_url)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASEWORK_")}
        env.update(
            {
                "CASEWORK_DATA_DIR": str(self.data_dir),
                "CASEWORK_DATABASE_URL": self.settings.database_url,
                "CASEWORK_TEMPORAL_ADDRESS": self.settings.temporal_address,
                "CASEWORK_TASK_QUEUE": ENGINE_QUEUE,
                "CASEWORK_PUBLIC_BASE_URL": self.api_url,
                "CASEWORK_RULESET_OVERRIDE_DIR": str(self.override_dir),
                "CASEWORK_JWT_SECRET": self.settings.jwt_secret,
                "CASEWORK_SIMULATOR_LATENCY": "0",
                "CASEWORK_SIMULATOR_FAILURE_RATE": "0",
                "CASEWORK_WORKER_METRICS_ADDRESS": "",
                "PYTHONPATH": str(REPO),
            }
        )
        env.update(self.extra_env)
        env.update(extra)
        return env

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.data_dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - lives as long as the child
        popen = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env or self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads started yet matter here
        )
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def pids(self) -> dict[str, int]:
        return {**self.observed, **{name: p.pid for name, p in self.procs.items()}}

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each stack process and by the bench process."""
        out = {name: cpu_seconds(pid) for name, pid in self.pids().items()}
        out["bench"] = cpu_seconds(os.getpid())
        # The decision render processes (children of the workers' forkservers) are not in
        # their worker's own figure. A render process replaced meanwhile takes its time away.
        workers = {pid for name, pid in self.pids().items() if name.startswith("worker")}
        out["worker_children"] = sum(cpu_seconds(pid) for pid in descendants(workers))
        return out

    def cores(
        self, before: dict[str, float], wall: float, after: dict[str, float] | None = None
    ) -> dict[str, float]:
        """Average cores each process used between `before` and `after` (`cpu()`
        snapshots; `after` defaults to now)."""
        after = after if after is not None else self.cpu()
        return {n: round((after[n] - before.get(n, 0.0)) / wall, 2) for n in after if wall > 0}

    def check_alive(self) -> None:
        for p in self.procs.values():
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited ({p.popen.returncode}):\n{p.tail()}")
        for name, pid in self.observed.items():
            if not Path(f"/proc/{pid}").exists():
                raise RuntimeError(f"the target's {name} (pid {pid}) is gone")

    async def settle(self, names: tuple[str, ...] | None = None, timeout: float = 20) -> float:
        """Wait until the stack is idle (its processes, all of them unless `names`, use
        < 10 % of a core together over half a second), so one measurement does not run
        into the tail of the last one: the bare worker's and every engine worker's."""
        start = time.monotonic()
        pids = [pid for n, pid in self.pids().items() if names is None or n in names]
        while time.monotonic() - start < timeout:
            before = sum(cpu_seconds(p) for p in pids)
            await asyncio.sleep(0.5)
            used = sum(cpu_seconds(p) for p in pids) - before
            if used / 0.5 < 0.10:
                break
        return round(time.monotonic() - start, 2)

    async def start(self) -> None:
        assert self.override_dir is not None
        self.override_dir.joinpath("work_permit").mkdir(parents=True, exist_ok=True)
        self.spawn(
            "temporal",
            [
                temporal_cli(), "server", "start-dev",
                "--ip", "127.0.0.1", "--port", str(self.temporal_port), "--headless",
                "--db-filename", str(self.data_dir / "temporal.db"),
                *DEV_SERVER_TUNING,
                "--log-level", "warn",
                *cli_flags(),
            ],
        )  # fmt: skip
        await self._wait(lambda: port_open(self.temporal_port), "Temporal dev server", 60)
        from casework.runtime import connect

        end = time.monotonic() + 60
        while True:
            try:
                self.client = await connect(self.settings)
                await self.client.count_workflows()
                break
            except Exception:
                if time.monotonic() > end:
                    raise
                await asyncio.sleep(0.3)
        self.reference_data()
        compile_bytecode()
        py = sys.executable
        worker = [self.worker_module] if self.worker_module else ["casework.cli", "worker"]
        api = [self.api_module] if self.api_module else ["casework.cli", "api"]
        self.spawn("worker", [py, "-m", *worker])
        for i in range(2, self.workers + 1):
            self.spawn(f"worker{i}", [py, "-m", *worker])
        self.spawn("api", [py, "-m", *api, "--host", "127.0.0.1", "--port", str(self.api_port)])
        self.spawn_bare_worker()
        await self._wait(self._api_up, "API", 60)
        await self._wait_pollers(self.engine_queue)
        await self._wait_pollers(BARE_QUEUE)

    def reference_data(self) -> None:
        """Reference data as `casework up` loads it, and quota big enough for every run."""
        from activities.quota import ensure_quota
        from casework.cli import load_demo_data
        from casework.db import create_all

        create_all(self.engine)
        load_demo_data(self.settings)
        for region in QUOTA_REGIONS:
            ensure_quota(self.engine, "work_permit", region, "3", 2026, 10_000_000)

    def spawn_bare_worker(self) -> None:
        self.spawn(
            "bare_worker",
            [
                sys.executable, "-m", "bench.bare_worker",
                "--address", self.settings.temporal_address,
                "--namespace", self.settings.temporal_namespace,
                "--task-queue", BARE_QUEUE,
            ],
        )  # fmt: skip

    def _api_up(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    async def _wait(self, ready: Any, what: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not ready():
            self.check_alive()
            if time.monotonic() > end:
                raise RuntimeError(f"{what} did not start within {timeout:.0f}s")
            await asyncio.sleep(0.2)

    async def _wait_pollers(self, queue: str, timeout: float = 60) -> None:
        assert self.client is not None
        end = time.monotonic() + timeout
        while True:
            self.check_alive()
            resp = await self.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.client.namespace,
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
            if resp.pollers:
                return
            if time.monotonic() > end:
                raise RuntimeError(f"no worker polls {queue} within {timeout:.0f}s")
            await asyncio.sleep(0.2)

    def use_postgres(self, server_url: str) -> None:
        """Put the read model in a fresh database on this PostgreSQL server."""
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(server_url)
        name = f"casework_bench_rm_{int(time.time())}"
        admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.pg_admin, self.pg_database = admin, name
        self.settings = self.settings.model_copy(
            update={"database_url": url.set(database=name).render_as_string(hide_password=False)}
        )

    def _drop_postgres(self) -> None:
        if not self.pg_database:
            return
        import psycopg

        from casework.db import get_engine

        get_engine(self.settings.effective_database_url).dispose()
        with psycopg.connect(self.pg_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')

    async def stop(self) -> None:
        names = [n for n in self.procs if n.startswith("worker")]
        for name in ("api", *names, "bare_worker", "temporal"):
            p = self.procs.get(name)
            if p and p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                await asyncio.to_thread(p.popen.wait, 20)
            except subprocess.TimeoutExpired:
                p.popen.kill()
        if not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._drop_postgres()


@dataclass
class TargetStack(BenchStack):
    """A running stack (`python -m bench --target`): the bench files its cases through the
    target's API, reads the target's read model, and runs the bare baseline's worker on the
    target's Temporal server. Its processes, when they run on this machine under
    `casework up`, are found by their data folder and measured; otherwise the results say
    that the CPU and memory figures could not be taken."""

    target_api_url: str = ""

    @property
    def api_url(self) -> str:
        return self.target_api_url

    def env(self, **extra: str) -> dict[str, str]:
        # The target's configuration, as the stack was started with it (the bare worker
        # takes the same sandbox settings as the target's workers); the bench's own files
        # (a second API's data, say) in the bench's folder.
        env = dict(os.environ)
        env.update({"CASEWORK_DATA_DIR": str(self.data_dir), "PYTHONPATH": str(REPO)})
        env.update(extra)
        return env

    async def start(self) -> None:
        from casework.runtime import connect

        try:
            self.client = await connect(self.settings)
            await self.client.count_workflows()
        except Exception as exc:
            raise RuntimeError(
                f"no Temporal server answers at {self.settings.temporal_address} "
                f"(namespace {self.settings.temporal_namespace}): {exc}"
            ) from exc
        if not self._api_up():
            raise RuntimeError(f"no casework API answers at {self.api_url}/healthz")
        self.reference_data()
        self.observed = stack_processes(self.settings.data_dir)
        compile_bytecode()
        self.spawn_bare_worker()
        await self._wait_pollers(self.engine_queue, timeout=30)
        await self._wait_pollers(BARE_QUEUE)

    async def stop(self) -> None:
        for p in self.procs.values():  # the bench's own processes only
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                await asyncio.to_thread(p.popen.wait, 20)
            except subprocess.TimeoutExpired:
                p.popen.kill()
        if not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        """What the results file says about the target."""
        found = sorted(self.observed)
        return {
            "target": "a running stack (--target)",
            "api": self.api_url,
            "temporal": f"{self.settings.temporal_address} "
            f"(namespace {self.settings.temporal_namespace}, task queue {self.engine_queue})",
            "read_model": self.engine.url.render_as_string(hide_password=True),
            "processes_measured": found
            or "none: no process of the target runs on this machine under `casework up` "
            f"with data folder {self.settings.data_dir.resolve()}; CPU and memory figures "
            "cover the bench and its bare worker only",
            "simulators": f"as the target runs them (this environment says latency "
            f"{self.settings.simulator_latency} s, failure rate "
            f"{self.settings.simulator_failure_rate})",
            "bare_worker": "python -m bench.bare_worker on this machine, on the target's "
            "Temporal server (same SDK, converter and sandbox settings as this environment)",
        }


def new_target_stack(api_url: str, keep: bool = False) -> TargetStack:
    """The running stack the environment describes (`CASEWORK_*`, `.env`), with its API at
    `api_url` (default: `CASEWORK_PUBLIC_BASE_URL`)."""
    settings = Settings()
    if not settings.dev_mode:
        raise SystemExit(
            "the bench files thousands of cases, pays them through the simulated gateway "
            "and tops up quota pools: its target must be a development or staging stack "
            "(CASEWORK_DEV_MODE=true), never production"
        )
    settings = settings.model_copy(
        update={
            "data_dir": settings.data_dir.resolve(),
            "ruleset_override_dir": settings.ruleset_override_dir.resolve()
            if settings.ruleset_override_dir
            else None,
        }
    )
    url = (api_url or settings.public_base_url).rstrip("/")
    return TargetStack(
        data_dir=Path(tempfile.mkdtemp(prefix="casework-bench-target-")),
        temporal_port=0,
        api_port=0,
        settings=settings,
        override_dir=settings.ruleset_override_dir,
        keep=keep,
        engine_queue=settings.task_queue,
        target_api_url=url,
    )


QUOTA_REGIONS = ["astana", "karaganda", "kostanay", "pavlodar", "aktobe", "atyrau", "mangystau"]


def new_stack(keep: bool = False) -> BenchStack:
    data_dir = Path(tempfile.mkdtemp(prefix="casework-bench-"))
    temporal_port = free_port()
    api_port = free_port()
    settings = Settings(
        data_dir=data_dir,
        database_url="",
        temporal_address=f"127.0.0.1:{temporal_port}",
        task_queue=ENGINE_QUEUE,
        public_base_url=f"http://127.0.0.1:{api_port}",
        ruleset_override_dir=data_dir / "overrides",
        simulator_latency=0,
        simulator_failure_rate=0,
        jwt_secret="bench-secret-" + uuid.uuid4().hex,
    )
    return BenchStack(
        data_dir=data_dir,
        temporal_port=temporal_port,
        api_port=api_port,
        settings=settings,
        override_dir=data_dir / "overrides",
        keep=keep,
    )


@contextlib.asynccontextmanager
async def running_stack(keep: bool = False) -> Any:
    stack = new_stack(keep)
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()
