"""Wiring shared by the worker, the API and the tests: Temporal client and worker."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities.case import CaseActivities
from activities.decisions import DecisionActivities
from activities.kandas import KandasActivities, KandasRegistries, simulated_kandas_registries
from activities.registries import Registries, SimulatedPaymentGateway, simulated_registries
from activities.webhooks import WebhookActivities
from casework.db import create_all, get_engine
from casework.sandbox import worker_sandbox
from casework.settings import Settings
from workflows.kandas_status import KandasStatusWorkflow
from workflows.work_permit import WorkPermitWorkflow

WORKFLOWS: Sequence[type] = [WorkPermitWorkflow, KandasStatusWorkflow]


async def connect(settings: Settings, *, metrics: bool = False) -> Client:
    """The Temporal client; with `metrics`, the SDK's own worker metrics are served in
    Prometheus format on `CASEWORK_WORKER_METRICS_ADDRESS` (the API's /metrics has the
    engine's case and SLA metrics)."""
    runtime = None
    if metrics and settings.worker_metrics_address:
        runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=settings.worker_metrics_address)
            )
        )
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


def build_worker(
    client: Client,
    settings: Settings,
    *,
    task_queue: str | None = None,
    registries: Registries | None = None,
    kandas_registries: KandasRegistries | None = None,
    extra_activities: Sequence[Any] = (),
) -> tuple[Worker, concurrent.futures.ThreadPoolExecutor]:
    """A worker with every workflow and activity; the caller runs and shuts it down."""
    engine = get_engine(settings.effective_database_url)
    create_all(engine)
    registries = registries or simulated_registries(
        latency=settings.simulator_latency,
        failure_rate=settings.simulator_failure_rate,
        seed=settings.simulator_seed,
    )
    gateway = SimulatedPaymentGateway(
        callback_url=f"{settings.public_base_url.rstrip('/')}/api/v1/payments/callback",
        secret=settings.gateway_secret,
        latency=settings.simulator_latency,
    )
    case = CaseActivities(
        engine,
        registries,
        gateway,
        settings.ruleset_override_dir,
        webhook_endpoints=len(settings.webhook_urls),
    )
    decisions = DecisionActivities(
        engine,
        Path(settings.effective_document_dir),
        settings.public_base_url,
        ruleset_override_dir=settings.ruleset_override_dir,
    )
    kandas = KandasActivities(
        engine,
        kandas_registries
        or simulated_kandas_registries(
            latency=settings.simulator_latency,
            failure_rate=settings.simulator_failure_rate,
            seed=settings.simulator_seed,
        ),
    )
    webhooks = WebhookActivities(engine, list(settings.webhook_urls), settings.webhook_secret)
    # Sync activities (the decision step) run on this pool; async ones on the event loop.
    # Slots are cheap: an activity mostly waits (registries, the database, the render
    # processes), and a slot held by a decision waiting for its PDF must not keep a
    # registry check or a webhook of another case in the queue.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=64)
    worker = Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=list(WORKFLOWS),
        workflow_runner=worker_sandbox(settings, "workflows"),
        activities=[
            *case.all(),
            *kandas.all(),
            decisions.issue_decision,
            webhooks.deliver_webhooks,
            *extra_activities,
        ],
        activity_executor=pool,
        max_concurrent_activities=64,
        max_concurrent_workflow_task_polls=settings.worker_workflow_polls,
    )
    return worker, pool
