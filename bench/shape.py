"""The shape of a workflow history: what a bare workflow must do to be "the same shape"."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HISTORIES = REPO / "tests" / "workflows" / "histories"
# The newest recorded generation of the approved path (today's code: bookkeeping as
# local activities in batched steps, local quota steps, the rule set in the start input,
# the first steps written together, one change marker per case, registry queries asked as
# local steps first); older generations are kept for replay only.
APPROVED = HISTORIES / "work_permit_approved.v9.json"


def load_history_json(path: Path = APPROVED) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _type(event: dict[str, Any]) -> str:
    return str(event["eventType"]).removeprefix("EVENT_TYPE_")


def _local_activity(event: dict[str, Any]) -> bool:
    attrs = event.get("markerRecordedEventAttributes") or {}
    return bool(attrs.get("markerName") == "core_local_activity")


def ops_from_history(history: dict[str, Any]) -> list[str]:
    """Activities ("a"), local activities ("l"), upserts ("u"), timers started ("t+") and
    cancelled ("t-") and updates ("U"), in history order."""
    ops: list[str] = []
    for ev in history["events"]:
        t = _type(ev)
        if t == "ACTIVITY_TASK_SCHEDULED":
            ops.append("a")
        elif _local_activity(ev):
            ops.append("l")
        elif t == "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES":
            ops.append("u")
        elif t == "TIMER_STARTED":
            ops.append("t+")
        elif t == "TIMER_CANCELED":
            ops.append("t-")
        elif t == "WORKFLOW_EXECUTION_UPDATE_ACCEPTED":
            ops.append("U")
    return ops


def shape_counts(history: dict[str, Any]) -> dict[str, Any]:
    """Counts of what makes a history's shape, and the activities and updates by name."""
    types = Counter(_type(ev) for ev in history["events"])
    activities: Counter[str] = Counter()
    updates: Counter[str] = Counter()
    for ev in history["events"]:
        t = _type(ev)
        if t == "ACTIVITY_TASK_SCHEDULED":
            activities[ev["activityTaskScheduledEventAttributes"]["activityType"]["name"]] += 1
        elif t == "WORKFLOW_EXECUTION_UPDATE_ACCEPTED":
            attrs = ev["workflowExecutionUpdateAcceptedEventAttributes"]
            updates[attrs["acceptedRequest"]["input"]["name"]] += 1
    return {
        "events": len(history["events"]),
        "activities": types["ACTIVITY_TASK_SCHEDULED"],
        "local_activities": sum(1 for ev in history["events"] if _local_activity(ev)),
        "updates": types["WORKFLOW_EXECUTION_UPDATE_ACCEPTED"],
        "timers_started": types["TIMER_STARTED"],
        "timers_fired": types["TIMER_FIRED"],
        "timers_cancelled": types["TIMER_CANCELED"],
        "upserts": types["UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"],
        "workflow_tasks": types["WORKFLOW_TASK_COMPLETED"],
        "activities_by_name": dict(sorted(activities.items())),
        "updates_by_name": dict(sorted(updates.items())),
    }
