"""Where a workflow's time goes, read from its history's event times."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

E = EventType


def _t(ev: HistoryEvent) -> float:
    return ev.event_time.ToMicroseconds() / 1e6


def breakdown(events: list[HistoryEvent]) -> dict[str, Any]:
    """Seconds spent, summed over the case: in activities (by type), waiting for an
    activity worker slot, waiting for and running workflow tasks, and idle waiting for
    the outside (an update after the workflow had nothing left to do)."""
    sched: dict[int, tuple[str, float]] = {}
    started: dict[int, float] = {}
    act_run: dict[str, float] = defaultdict(float)
    act_queue = 0.0
    wft_queue = 0.0
    wft_run = 0.0
    wft_sched = 0.0
    wft_start = 0.0
    last_wft_done: float | None = None
    idle_outside = 0.0
    idle_candidate = 0.0
    timers_fired: list[dict[str, float]] = []
    timer_started: dict[int, tuple[float, float]] = {}
    pending_acts = 0
    for ev in events:
        t = _t(ev)
        et = ev.event_type
        if et == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            sched[ev.event_id] = (ev.activity_task_scheduled_event_attributes.activity_type.name, t)
            pending_acts += 1
        elif et == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = ev.activity_task_started_event_attributes
            name, ts = sched.get(a.scheduled_event_id, ("?", t))
            act_queue += t - ts
            started[a.scheduled_event_id] = t
        elif et == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            a = ev.activity_task_completed_event_attributes
            name, _ = sched.get(a.scheduled_event_id, ("?", t))
            act_run[name] += t - started.get(a.scheduled_event_id, t)
            pending_acts -= 1
        elif et == E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            wft_sched = t
            # Nothing was running since the last workflow task: if this task brings an
            # update, the case was waiting for the outside (a person, the gateway).
            idle_candidate = t - last_wft_done if last_wft_done and pending_acts == 0 else 0.0
        elif et == E.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            wft_queue += t - wft_sched
            wft_start = t
        elif et == E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            wft_run += t - wft_start
            last_wft_done = t
        elif et == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            idle_outside += max(0.0, idle_candidate)
            idle_candidate = 0.0
        elif et == E.EVENT_TYPE_TIMER_STARTED:
            a = ev.timer_started_event_attributes
            timer_started[ev.event_id] = (t, a.start_to_fire_timeout.ToTimedelta().total_seconds())
        elif et == E.EVENT_TYPE_TIMER_FIRED:
            a = ev.timer_fired_event_attributes
            st, dur = timer_started.get(a.started_event_id, (t, 0.0))
            timers_fired.append({"started": st, "due": st + dur, "fired": t})
    total = _t(events[-1]) - _t(events[0]) if events else 0.0
    return {
        "total_s": total,
        "activities_s": dict(act_run),
        "activities_total_s": sum(act_run.values()),
        "activity_queue_s": act_queue,
        "workflow_task_queue_s": wft_queue,
        "workflow_task_run_s": wft_run,
        "idle_waiting_outside_s": idle_outside,
        "timers_fired": timers_fired,
    }


def mean_breakdown(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-case means of `breakdown` results (seconds, 3 decimals)."""
    if not items:
        return {}
    n = len(items)
    keys = ["total_s", "activities_total_s", "activity_queue_s", "workflow_task_queue_s",
            "workflow_task_run_s", "idle_waiting_outside_s"]  # fmt: skip
    out: dict[str, Any] = {k: round(sum(i[k] for i in items) / n, 3) for k in keys}
    acts: dict[str, float] = defaultdict(float)
    for i in items:
        for name, s in i["activities_s"].items():
            acts[name] += s
    out["activities_s"] = {
        k: round(v / n, 3) for k, v in sorted(acts.items(), key=lambda kv: -kv[1])
    }
    out["cases"] = n
    return out


def local_activity(ev: Any) -> tuple[str, float] | None:
    """A local activity's type and completion time, from its marker event (else None)."""
    attrs = ev.marker_recorded_event_attributes
    if attrs.marker_name != "core_local_activity" or "data" not in attrs.details:
        return None
    data = json.loads(attrs.details["data"].payloads[0].data)
    done = data.get("complete_time") or {}
    at = float(done.get("seconds", 0)) + float(done.get("nanos", 0)) / 1e9
    return str(data.get("activity_type", "")), at


def local_activity_done(ev: Any, activity_type: str) -> float | None:
    """When a local activity of that type completed, or None."""
    found = local_activity(ev)
    return found[1] if found and found[0] == activity_type else None
