"""Under overload the API sheds load with 429 at once instead of queueing every caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.api.conftest import Stack, _settings, _stack
from tests.api.flows import start_case
from tests.api.test_bad_input_changes_nothing import counts, workflow_count


@pytest.fixture
async def small_stack(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Stack]:
    settings = _settings(tmp_path, api_max_in_flight=2, api_admission_wait=0.05)
    async for s in _stack(dev_env, settings):
        yield s


async def test_a_full_engine_answers_429_with_retry_after_and_changes_nothing(
    small_stack: Stack,
) -> None:
    admission = small_stack.app.state.admission
    # Two requests are in flight (held here): the engine is at its limit.
    await admission.acquire("held")
    await admission.acquire("held")
    before = counts(small_stack)

    refused = await start_case(small_stack)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("/overloaded")
    assert counts(small_stack) == before
    assert await workflow_count(small_stack, 0) == 0

    # Reads of the read model are never refused.
    cases = await small_stack.http.get(
        "/api/v1/cases", headers=small_stack.token("employer", party="123456789012")
    )
    assert cases.status_code == 200

    # A slot frees up: the same request now files the case.
    admission.release()
    accepted = await start_case(small_stack)
    assert accepted.status_code == 201, accepted.text
    assert await workflow_count(small_stack, 1) == 1
    admission.release()
    assert admission.in_flight == 0
