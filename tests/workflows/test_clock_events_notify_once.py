"""Clock events reach webhook subscribers once each, in order, signed (time-skipping)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from activities.webhooks import EVENT_HEADER, SIGNATURE_HEADER, verify
from casework.contracts import TaskKind
from casework.settings import Settings
from tests.workflows.conftest import CaseRunner
from tests.workflows.helpers import complete, event_kinds, wait_task, wait_until


class Receiver:
    """A subscriber's endpoint that is down for its first request."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                if receiver.requests == 1:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.received.append(
                    {
                        "body": json.loads(body),
                        "raw": body,
                        "sig": self.headers[SIGNATURE_HEADER],
                        "id": self.headers[EVENT_HEADER],
                    }
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def wf_settings(wf_settings: Settings, receiver: Receiver) -> Settings:
    return wf_settings.model_copy(
        update={"webhook_urls": [receiver.url], "webhook_secret": "s3cret"}
    )


async def test_warning_and_breach_arrive_once_in_order_on_the_webhook(
    cases: CaseRunner, receiver: Receiver
) -> None:
    handle = await cases.start()
    await complete(handle, TaskKind.document_check, {"outcome": "complete"})
    await wait_task(handle, TaskKind.decision)
    await cases.env.sleep(timedelta(days=16))  # past the warning point and the 7-WD deadline
    await wait_until(
        lambda: [r["body"]["kind"] for r in receiver.received] == ["at_risk", "breached"],
        timeout=60,
    )

    kinds = [r["body"]["kind"] for r in receiver.received]
    assert kinds == ["at_risk", "breached"]  # the failed first attempt was retried, not doubled
    assert receiver.requests == 3
    assert len({r["id"] for r in receiver.received}) == 2
    for r in receiver.received:
        assert verify(r["raw"], r["sig"], "s3cret")
        assert r["body"]["case_id"] == handle.id and r["body"]["step"] == "consideration"
        assert "working days" in r["body"]["explanation"]
    history = event_kinds(cases.engine, handle.id)
    assert history.count("clock_at_risk") == 1 and history.count("clock_breached") == 1

    # The supervisors' live stream shows the same events, once each, in order.
    stream = await sse_events(cases.settings, {"max_events": 3, "timeout": 10})
    assert [e["event"] for e in stream] == ["clock_at_risk", "clock_breached", "task_escalated"]
    assert len({e["id"] for e in stream}) == 3
    again = await sse_events(cases.settings, {"timeout": 2}, last_event_id=stream[1]["id"])
    assert [e["event"] for e in again] == [
        "task_escalated"
    ]  # resumed after the breach, nothing repeated


async def sse_events(
    settings: Settings, params: dict[str, Any], last_event_id: str | None = None
) -> list[dict[str, str]]:
    import httpx

    from api.auth import mint_token
    from api.main import create_app
    from casework.contracts import Actor, Role

    app = create_app(settings, client=object())  # type: ignore[arg-type]
    headers = {
        "Authorization": f"Bearer {mint_token(Actor(user_id='sup', role=Role.supervisor), settings)}"
    }
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    events: list[dict[str, str]] = []
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as http:
            async with http.stream(
                "GET", "/api/v1/sla/events", params=params, headers=headers
            ) as r:
                assert r.status_code == 200
                current: dict[str, str] = {}
                async for line in r.aiter_lines():
                    if not line:
                        if "event" in current:
                            events.append(current)
                        current = {}
                    elif not line.startswith(":"):
                        key, _, value = line.partition(": ")
                        current[key] = value
    return events
