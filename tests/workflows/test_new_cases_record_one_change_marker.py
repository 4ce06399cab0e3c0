"""A case started by today's code records one change marker (`GENERATION`) instead of one
per change it takes: every patch marker comes with an upsert of `TemporalChangeVersion`,
an event and a visibility write each. Older histories keep their own markers and replay
(`test_replay_recorded_histories.py`)."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.client import WorkflowHistory

from casework.contracts import TaskKind
from tests.workflows.conftest import CaseRunner
from tests.workflows.helpers import complete, settled_history, wait_task
from workflows.case_base import GENERATION, GENERATION_CHANGES, GENERATIONS

PATCH_MARKER = "core_patch"
HISTORIES = Path(__file__).parent / "histories"


def change_markers(history: WorkflowHistory) -> list[str]:
    """The change (patch) ids a history recorded, in order."""
    ids = []
    for ev in history.events:
        m = ev.marker_recorded_event_attributes
        if ev.HasField("marker_recorded_event_attributes") and m.marker_name == PATCH_MARKER:
            ids.append(json.loads(m.details["patch-data"].payloads[0].data)["id"])
    return ids


def version_upserts(history: WorkflowHistory) -> int:
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
    history = await settled_history(handle)

    assert change_markers(history) == [GENERATION]
    assert version_upserts(history) == 1


def test_the_generation_names_every_change_a_new_case_used_to_mark() -> None:
    # The changes marked in the v5 and v6 histories (the last before the generation): a
    # case of today's code takes each of them.
    marked = {
        change
        for path in HISTORIES.glob("*.v[56].json")
        for change in change_markers(
            WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
        )
    }
    assert marked and marked <= GENERATION_CHANGES


def test_each_generation_takes_every_change_of_the_one_before() -> None:
    # A case of a newer generation must not lose a change an older one took: its code
    # paths are the older generation's plus the new changes.
    sets = list(GENERATIONS.values())  # newest first
    assert sets[0] == GENERATION_CHANGES
    for newer, older in zip(sets, sets[1:], strict=False):
        assert older < newer


def test_a_history_of_an_older_generation_records_its_own_marker() -> None:
    # The v7 histories recorded generation-7; today's code replays them with its changes
    # only (test_replay_recorded_histories.py), asking nothing more of them.
    for path in HISTORIES.glob("*.v7.json"):
        history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
        assert change_markers(history) == ["generation-7"]
