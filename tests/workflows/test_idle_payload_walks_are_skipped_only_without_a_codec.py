"""The workers skip the SDK's payload walks while no payload codec and no external storage
is configured (`casework.payload_walks`): a deployment that adds a codec (encryption,
compression) still gets every payload encoded and decoded, and without one the histories
are the same as with the walks."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import temporalio.bridge.worker as bridge_worker
from google.protobuf.json_format import MessageToDict
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadCodec
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from casework import payload_walks
from casework.sandbox import sandbox_runner, worker_sandbox
from casework.settings import Settings
from tests.workflows import two_steps
from tests.workflows.two_steps import TwoSteps, stamp

ENCODING = b"binary/casework-test-xor"


class XorCodec(PayloadCodec):
    """Stands in for an encrypting codec: a payload it did not encode is unreadable."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload(
                metadata={"encoding": ENCODING},
                data=bytes(b ^ 0x5A for b in p.SerializeToString()),
            )
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            assert p.metadata["encoding"] == ENCODING, "a payload reached the codec unencoded"
            out.append(Payload.FromString(bytes(b ^ 0x5A for b in p.data)))
        return out


@pytest.fixture
def walks_counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many payload walks the SDK starts (each builds one `_Visitor`)."""
    walks: list[int] = []
    visitor = bridge_worker._Visitor

    class Counted(visitor):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any) -> None:
            walks.append(1)
            super().__init__(*args)

    monkeypatch.setattr(bridge_worker, "_Visitor", Counted)
    return walks


async def _run(env: WorkflowEnvironment, codec: PayloadCodec | None) -> tuple[str, list[Any]]:
    """TwoSteps' result and the payloads of its history, as stored on the server."""
    converter = dataclasses.replace(pydantic_data_converter, payload_codec=codec)
    client = Client(**{**env.client.config(), "data_converter": converter})
    queue = f"tq-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[TwoSteps],
        activities=[stamp],
        workflow_runner=sandbox_runner(two_steps.__name__),
    ):
        handle = await client.start_workflow(
            TwoSteps.run, "case", id=f"walks-{uuid.uuid4()}", task_queue=queue
        )
        # A worker that cannot read its payloads retries its workflow task for ever.
        result = await asyncio.wait_for(handle.result(), timeout=30)
    history = await handle.fetch_history()
    payloads: list[Any] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if "metadata" in node and "data" in node:
                payloads.append(node)
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for event in history.events:
        collect(MessageToDict(event))
    return result, sorted(_comparable(p) for p in payloads)


def _comparable(payload: dict[str, Any]) -> tuple[str, str]:
    """A stored payload without what differs from run to run (the local activity marker's
    own clock readings)."""
    encoding = base64.b64decode(payload["metadata"]["encoding"]).decode()
    data = base64.b64decode(payload.get("data", ""))
    if encoding != "json/plain":
        return encoding, data.hex()
    value = json.loads(data)
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if not k.endswith("_time")}
    return encoding, json.dumps(value, sort_keys=True)


async def test_a_payload_codec_still_encodes_every_payload(
    ts_env: WorkflowEnvironment, walks_counted: list[int]
) -> None:
    payload_walks.restore_sdk_payload_walks()
    sdk_result, sdk = await _run(ts_env, XorCodec())
    assert payload_walks.skip_idle_payload_walks()
    walks_counted.clear()
    result, payloads = await _run(ts_env, XorCodec())
    assert result == sdk_result == "case!!"
    assert walks_counted, "with a codec the SDK walks every activation and completion"
    assert payloads == sdk
    # The input, the local activity's result (in its marker), the activity's input and
    # result, and the workflow's result went through the codec; what is stored in plain
    # JSON is the marker's own record (attempt, times), which the SDK never encodes.
    assert sum(encoding == ENCODING.decode() for encoding, _ in payloads) == 5
    plain = " ".join(data for encoding, data in payloads if encoding == "json/plain")
    assert '"case' not in plain


async def test_without_a_codec_the_walks_are_skipped_and_the_history_is_the_same(
    ts_env: WorkflowEnvironment, walks_counted: list[int]
) -> None:
    payload_walks.restore_sdk_payload_walks()
    walked_result, walked = await _run(ts_env, None)
    assert walks_counted, "the SDK's own entry points walk even without a codec"
    walks_counted.clear()
    assert payload_walks.skip_idle_payload_walks()
    skipped_result, skipped = await _run(ts_env, None)
    assert walks_counted == []
    assert skipped_result == walked_result == "case!!"
    assert skipped == walked


def test_the_worker_setting_decides(tmp_path: Path) -> None:
    payload_walks.restore_sdk_payload_walks()
    worker_sandbox(Settings(data_dir=tmp_path, worker_skip_idle_payload_walks=False), "workflows")
    assert not payload_walks.installed()
    worker_sandbox(Settings(data_dir=tmp_path), "workflows")
    assert payload_walks.installed()
