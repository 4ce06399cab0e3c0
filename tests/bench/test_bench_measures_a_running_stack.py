"""The benchmark against a stack that already runs (`python -m bench --target`), as an
operator measures a staging deployment: the bench files its cases through that stack's
API, measures that stack's processes, starts only its own bare worker beside it, and
leaves the stack running. No timing assertions: figures belong in results files."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _bench(
    env: dict[str, str], *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`casework up` on free ports with its own data folder; yields its environment."""
    home = tmp_path_factory.mktemp("target")
    api_port, temporal_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEWORK_")}
    env.update(
        {
            "CASEWORK_DATA_DIR": str(home / "data"),
            "CASEWORK_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
            "CASEWORK_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
            "CASEWORK_RULESET_OVERRIDE_DIR": str(home / "overrides"),
            "CASEWORK_JWT_SECRET": "target-stack-secret-0123456789abcdef",
            "CASEWORK_SIMULATOR_LATENCY": "0",
            "CASEWORK_SIMULATOR_FAILURE_RATE": "0",
            "CASEWORK_WORKER_PROCESSES": "1",
        }
    )
    log = open(home / "up.log", "wb")  # noqa: SIM115 - closed below
    up = subprocess.Popen(
        [sys.executable, "-m", "casework.cli", "up", "--port", str(api_port),
         "--ui-port", str(_free_port()), "--metrics-port", str(_free_port())],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        end = time.monotonic() + 120
        while True:
            assert up.poll() is None, (home / "up.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < end, "the stack did not come up"
            time.sleep(0.3)
        yield {**env, "_UP_PID": str(up.pid)}
        assert up.poll() is None, "the bench must not stop the stack it measures"
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        log.close()


def test_the_bench_measures_a_running_stack_and_leaves_it_running(
    running_stack: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in running_stack.items() if not k.startswith("_")}
    api = env["CASEWORK_PUBLIC_BASE_URL"]
    done = _bench(env, "--target", "--quick", "--scenarios", "1,3", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]

    files = [p for p in tmp_path.glob("2*-quick-target.json")]
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["mode"] == "quick-target"
    # The results say what was measured: the target's API, server, read model, and the
    # processes of it that run on this machine.
    stack = doc["stack"]
    assert stack["api"] == api
    assert env["CASEWORK_TEMPORAL_ADDRESS"] in stack["temporal"]
    assert stack["read_model"].endswith("casework.db")
    assert set(stack["processes_measured"]) == {"api", "temporal", "worker"}
    for sid in ("1", "3"):
        sc = doc["scenarios"][sid]
        assert sc["status"] == "ok", (sid, sc.get("notes"))
        for row in (r for r in sc["rows"] if r["target"] != "informative"):
            assert _number(row["value"]) and _number(row["baseline"]), (sid, row)
    # The target's own worker did the engine's work, and its CPU was measured.
    engine = doc["scenarios"]["3"]["details"]["runs"][0]["engine"]
    assert engine["cpu_ms_per_completion"]["worker"] > 0, engine

    # The cases went through the target: its read model lists them.
    from api.auth import mint_token
    from casework.contracts import Actor, Role
    from casework.settings import Settings

    settings = Settings(jwt_secret=env["CASEWORK_JWT_SECRET"])
    token = mint_token(Actor(user_id="sup", role=Role.supervisor), settings)
    cases = httpx.get(
        f"{api}/api/v1/cases", params={"limit": 5}, headers={"Authorization": f"Bearer {token}"}
    )
    assert cases.status_code == 200
    assert cases.json()["total"] > 0
    # ...and it still runs; the bench's bare worker is gone.
    assert httpx.get(f"{api}/healthz").is_success
    assert os.path.exists(f"/proc/{running_stack['_UP_PID']}")
    bare = [
        p.name
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and b"bench.bare_worker" in _read(p / "cmdline")
        and env["CASEWORK_TEMPORAL_ADDRESS"].encode() in _read(p / "cmdline")
    ]
    assert bare == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_a_production_stack_is_never_a_target(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEWORK_")}
    env.update({"CASEWORK_DEV_MODE": "false", "CASEWORK_DATA_DIR": str(tmp_path / "data")})
    done = _bench(
        env, "--target", "--quick", "--scenarios", "1", "--out", str(tmp_path), timeout=60
    )
    assert done.returncode != 0
    assert "never production" in done.stderr
    assert not list(tmp_path.glob("*.json"))


def test_a_target_is_measured_as_it_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEWORK_")}
    env["CASEWORK_DATA_DIR"] = str(tmp_path / "data")
    done = _bench(env, "--target", "--experiment", "one-worker", "--out", str(tmp_path), timeout=60)
    assert done.returncode != 0
    assert "--target measures the stack as it runs" in done.stderr
    assert not list(tmp_path.glob("*.json"))
