"""What every scenario shares: the context, the API client with tokens, result rows and
the closed-loop load generator."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from api.auth import mint_token
from bench.stack import BenchStack
from bench.stats import median, ratio, rnd
from casework.contracts import Actor, Role
from tests.factories import application_data


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Ctx:
    stack: BenchStack
    quick: bool
    runs: int
    postgres_url: str | None
    shared: dict[str, Any] = field(default_factory=dict)

    def n(self, quick: int, full: int) -> int:
        return quick if self.quick else full


def new_bin(rng: random.Random | None = None) -> str:
    """A fresh employer BIN (12 digits) that no simulated registry answers negatively for."""
    r = rng or random
    while True:
        b = "7" + "".join(str(r.randint(0, 9)) for _ in range(11))
        if b[-2:] not in ("13", "66", "99"):
            return b


def cpu_ms_per(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """CPU each process spent between two `stack.cpu()` snapshots, per item (ms)."""
    return {name: rnd((after[name] - before.get(name, 0.0)) * 1000 / max(1, n)) for name in after}


class HttpError(Exception):
    """The API could not be reached or did not answer in time (no HTTP status)."""


@dataclass
class Reply:
    """One HTTP answer, read in full."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Http:
    """The simulated users' HTTP client: aiohttp (its parser is in C).

    The load generator shares the two cores with the stack it measures, so it must cost
    as little as it can: at 10-200 connections httpx spent 1.2-3.4 ms of CPU per request
    here, aiohttp 0.12-0.19 ms (the bare side's Temporal client is Rust). Until session 6
    the bench used httpx; see BENCHMARKS.md for what that changed."""

    def __init__(self, base_url: str, connections: int = 64, timeout: float = 120.0) -> None:
        self.base_url = base_url
        self.connections = connections
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use: a session belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                self.base_url,
                connector=aiohttp.TCPConnector(limit=self.connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        query = {k: str(v) for k, v in params.items()} if params else None
        try:
            async with self._open().request(
                method, path, params=query, json=json, headers=headers
            ) as r:
                return Reply(r.status, r.headers, await r.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HttpError(f"{method} {path}: {exc!r}") from exc

    async def get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        return await self.request("GET", path, params=params, headers=headers)

    async def post(
        self, path: str, json: Any = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        return await self.request("POST", path, json=json, headers=headers)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class Api:
    """An HTTP client of the running API with development tokens."""

    def __init__(self, stack: BenchStack, connections: int = 64) -> None:
        self.stack = stack
        self.http = Http(stack.api_url, connections)

    def token(self, role: str, **scope: Any) -> dict[str, str]:
        actor = Actor(
            user_id=scope.pop("user", f"{role}-{uuid.uuid4().hex[:6]}"), role=Role(role), **scope
        )
        return {"Authorization": f"Bearer {mint_token(actor, self.stack.settings)}"}

    async def start_case(
        self,
        employer: dict[str, str],
        bin_: str,
        region: str,
        ruleset: str | None = None,
    ) -> Reply:
        headers = {**employer, "Idempotency-Key": str(uuid.uuid4())}
        if ruleset:
            headers["X-Ruleset-Version"] = ruleset
        body = application_data(region=region, employer={"bin": bin_, "name": "Bench LLP"})
        return await self.http.post("/api/v1/cases/work_permit", json=body, headers=headers)

    async def close(self) -> None:
        await self.http.aclose()


def bare_payload(region: str = "almaty_city") -> dict[str, Any]:
    """The same application body the API receives, as the bare start's input."""
    return application_data(region=region)


async def closed_loop(
    n: int,
    concurrency: int,
    job: Callable[[int], Awaitable[Any]],
    time_limit: float | None = None,
    stop: asyncio.Event | None = None,
) -> tuple[list[float], float, list[str]]:
    """Run `n` jobs with `concurrency` clients, each starting the next job when its last
    one is answered. Returns latencies (s) of the successful jobs, the wall time (s) and
    the errors. Jobs still running after `time_limit`, or when `stop` is set (a stall
    watchdog), are cancelled and counted as errors."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(n))

    async def client() -> None:
        for i in counter:
            t0 = time.perf_counter()
            try:
                await job(i)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    work = asyncio.ensure_future(asyncio.gather(*(client() for _ in range(concurrency))))
    waiters: set[asyncio.Future[Any]] = {work}
    if stop is not None:
        waiters.add(asyncio.ensure_future(stop.wait()))
    done, pending = await asyncio.wait(
        waiters, timeout=time_limit, return_when=asyncio.FIRST_COMPLETED
    )
    for p in pending:
        if p is not work:
            p.cancel()
    if work not in done:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        why = "stalled: no progress" if stop is not None and stop.is_set() else "time limit"
        unfinished = n - len(latencies) - len(errors)
        errors.extend([f"{why}: not finished after {time.perf_counter() - t0:.0f} s"] * unfinished)
    else:
        work.result()
    return latencies, time.perf_counter() - t0, errors


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One measured figure beside its baseline, with its target."""

    key: str
    label: str
    unit: str
    value: float | None
    baseline: float | None
    target: str
    met: bool | None
    baseline_label: str = ""
    ratio: float | None = None
    runs: list[float | None] = field(default_factory=list)
    baseline_runs: list[float | None] = field(default_factory=list)
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None:
            self.ratio = ratio(self.value, self.baseline)
        self.value = rnd(self.value, 3)
        self.baseline = rnd(self.baseline, 3)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def row_from_runs(
    key: str,
    label: str,
    unit: str,
    runs: list[float | None],
    baseline_runs: list[float | None],
    target: str,
    check: Callable[[float, float], bool] | None,
    baseline_label: str = "",
    note: str = "",
) -> Row:
    """A row whose figure and baseline are the medians of the runs; `check(value, baseline)`
    decides whether the target is met (None: reported only)."""
    value = median(runs)
    base = median(baseline_runs)
    met = None
    if check is not None and value is not None and base is not None:
        met = bool(check(value, base))
    return Row(
        key=key,
        label=label,
        unit=unit,
        value=value,
        baseline=base,
        target=target,
        met=met,
        baseline_label=baseline_label,
        runs=[rnd(v, 3) for v in runs],
        baseline_runs=[rnd(v, 3) for v in baseline_runs],
        note=note,
    )


@dataclass
class ScenarioResult:
    id: str
    title: str
    baseline: str
    target: str
    status: str = "ok"  # ok | not_implemented | error | skipped
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "baseline": self.baseline,
            "target": self.target,
            "status": self.status,
            "met": self.met,
            "rows": [r.to_json() for r in self.rows],
            "details": self.details,
            "notes": self.notes,
            "duration_s": round(self.duration_s, 1),
        }

    @property
    def met(self) -> bool | None:
        verdicts = [r.met for r in self.rows if r.met is not None]
        if self.status != "ok" or not verdicts:
            return None
        return all(verdicts)
