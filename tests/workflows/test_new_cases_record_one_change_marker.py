"""A case started by today's code records one change marker (`GENERATION`) instead of one
per change it takes: every patch marker comes with an upsert of `TemporalChangeVersion`,
an event and a visibility write each. Older histories keep their own markers and replay
(`test_replay_recorded_histories.py`)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle

from casework.contracts import TaskKind
from tests.workflows.conftest import CaseRunner
from tests.workflows.helpers import complete, wait_task
from workflows.case_base import GENERATION, GENERATION_CHANGES

PATCH_MARKER = "core_patch"


async def change_markers(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The change (patch) ids a case's history recorded, in order."""
    history = await handle.fetch_history()
    ids = []
    for ev in history.events:
        m = ev.marker_recorded_event_attributes
        if ev.HasField("marker_recorded_event_attributes") and m.marker_name == PATCH_MARKER:
            ids.append(json.loads(m.details["patch-data"].payloads[0].data)["id"])
    return ids


async def version_upserts(handle: WorkflowHandle[Any, Any]) -> int:
    history = await handle.fetch_history()
    return sum(
        1
        for ev in history.events
        if ev.HasField("upsert_workflow_search_attributes_event_attributes")
        and "TemporalChangeVersion"
        in ev.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    )


async def test_a_new_case_records_one_change_marker(cases: CaseRunner) -> None:
    handle = await cases.start()
    await complete(handle, TaskKind.document_check, {"outcome": "complete"})
    # Past the registry checks and the quota reservation: every change has been asked.
    await wait_task(handle, TaskKind.decision)

    assert await change_markers(handle) == [GENERATION]
    assert await version_upserts(handle) == 1


def test_the_generation_names_every_change_a_new_case_used_to_mark() -> None:
    # The changes whose markers the v5 and v6 histories (the last before the generation)
    # carry: a case of today's code takes each of them.
    histories = Path(__file__).parent / "histories"
    marked: set[str] = set()
    for path in histories.glob("*.v[56].json"):
        for ev in json.loads(path.read_text())["events"]:
            attrs = ev.get("markerRecordedEventAttributes")
            if attrs and attrs.get("markerName") == PATCH_MARKER:
                data = attrs["details"]["patch-data"]["payloads"][0]["data"]
                marked.add(json.loads(base64.b64decode(data))["id"])
    assert marked and marked <= GENERATION_CHANGES
