"""The bare baseline's worker: `python -m bench.bare_worker --address HOST:PORT --task-queue Q`.

Same SDK, data converter, sandbox setting (its own workflow module passed through, as the
engine's worker passes through `workflows`; `CASEWORK_WORKER_SANDBOX_RELOAD_WORKFLOW_MODULES`
switches both back to reloading, `CASEWORK_WORKER_SANDBOX_DIRECT_CALLS` both to the SDK's own
sandbox instance) and activity slots (16) as the engine's worker; only the
workflows and the (empty) activity differ.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bench.bare import ACTIVITIES, WORKFLOWS
from casework.sandbox import worker_sandbox
from casework.settings import Settings


async def run(address: str, namespace: str, task_queue: str) -> None:
    client = await Client.connect(
        address, namespace=namespace, data_converter=pydantic_data_converter
    )
    settings = Settings()
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        workflow_runner=worker_sandbox(settings, "bench.bare"),
        activities=list(ACTIVITIES),
        max_concurrent_activities=16,
        # As many workflow-task polls as an engine worker process.
        max_concurrent_workflow_task_polls=settings.worker_workflow_polls,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        print(f"bare worker polling {task_queue} on {address}", flush=True)
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--address", required=True)
    p.add_argument("--namespace", default="default")
    p.add_argument("--task-queue", required=True)
    args = p.parse_args()
    asyncio.run(run(args.address, args.namespace, args.task_queue))
    # A process that used the Temporal SDK can crash at interpreter exit after a clean
    # shutdown; leave without finalisation so that never reads as a failure.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
