"""One settings object for the API, the worker and the CLI (environment prefix CASEWORK_)."""

import os
from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASEWORK_", env_file=".env", extra="ignore")

    data_dir: Path = Path("data")
    database_url: str = ""  # empty: SQLite file under data_dir
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "casework"
    document_dir: Path | None = None  # default: data_dir / "documents"
    ruleset_override_dir: Path | None = None  # operator override rule sets (drills)
    jwt_secret: str = "dev-only-secret-change-me-in-production-0123456789"
    jwt_issuer: str = "kz-casework"
    public_base_url: str = "http://127.0.0.1:8000"
    gateway_secret: str = "dev-gateway-secret"
    dev_mode: bool = True  # development helpers (payment simulator); off in production
    # Signed webhook notifications of clock events (at risk, breached, suspended, ...).
    webhook_urls: list[str] = []
    webhook_secret: str = "dev-webhook-secret"
    # Admission control: requests that call Temporal (case starts, task actions, party
    # updates, payments) beyond this many at once in one API process wait at most
    # `api_admission_wait` seconds for a slot, then get 429 with Retry-After.
    api_max_in_flight: int = 48
    api_admission_wait: float = 0.25
    # Worker processes `casework up` runs on the task queue (0: one per CPU). A Python
    # worker is bound by its interpreter lock to about one core; a second process uses
    # the rest of the machine (sticky execution keeps each case on one of them).
    worker_processes: int = 0
    # Concurrent workflow-task polls per worker process: a burst of due timers (200 clocks
    # in one second) is taken up by this many polls at a time.
    worker_workflow_polls: int = 16
    # Workers run workflows in the SDK's sandbox. False runs them without it, to measure what
    # it costs (bench experiment `unsandboxed`); with the workflow modules passed through
    # (below) the sandbox no longer checks their calls, and what keeps them deterministic
    # is the lint rule (TID251), the workflow tests' fully sandboxed workers and the
    # sandboxed replays (audit, CI), which this setting does not change.
    worker_sandbox: bool = True
    # The workflow sandbox imports a workflow's module afresh for every case it starts or
    # takes back into its cache (about 5 ms of one core for work_permit.py). The engine's
    # workflow modules hold no per-case state, so the worker passes them through; True
    # gives the SDK's default (each case reloads them and every call they make is checked),
    # for comparison and diagnosis; the workflow tests run so. Replays (audit, CI) always
    # reload them, under every sandbox restriction.
    worker_sandbox_reload_workflow_modules: bool = False
    # The sandbox's bookkeeping calls (a serialization context for each payload, the
    # compiled entry code) are made without re-entering the sandbox (`casework.sandbox`);
    # False gives the SDK's own instance, for comparison and diagnosis.
    worker_sandbox_direct_calls: bool = True
    # The SDK's walks over every payload of every activation and completion (for a payload
    # codec and external storage) are skipped while neither is configured
    # (`casework.payload_walks`); False lets them run, for comparison and diagnosis.
    worker_skip_idle_payload_walks: bool = True
    worker_metrics_address: str = ""  # e.g. 127.0.0.1:9464: the Temporal SDK's Prometheus metrics
    # Simulated registries: latency (seconds) and share of transient failures.
    simulator_latency: float = 0.05
    simulator_failure_rate: float = 0.1
    simulator_seed: int | None = None

    @property
    def effective_worker_processes(self) -> int:
        return self.worker_processes or max(1, os.cpu_count() or 1)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'casework.db').resolve()}"

    @property
    def effective_document_dir(self) -> Path:
        return self.document_dir or (self.data_dir / "documents")


@lru_cache
def get_settings() -> Settings:
    return Settings()
