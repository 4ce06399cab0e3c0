"""`Server-Timing` (W3C): how long a request took inside the API (`app`, on every
response) and, on the routes that start cases, each phase of it (`prepare`, `temporal`,
`register`), so an operator (or the benchmark) sees from any response where its time
went without a profiler. Durations only: nothing about the case or the caller."""

from __future__ import annotations

import time

from fastapi import Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ServerTiming:
    """Phases measured one after another from the moment this object is made."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self._phases: list[tuple[str, float]] = []

    def mark(self, phase: str) -> None:
        """The phase named here ended now (it began where the previous one ended)."""
        now = time.perf_counter()
        self._phases.append((phase, (now - self._last) * 1000))
        self._last = now

    def write(self, response: Response) -> None:
        response.headers["Server-Timing"] = ", ".join(
            f"{phase};dur={ms:.1f}" for phase, ms in self._phases
        )


def parse(header: str) -> dict[str, float]:
    """Phase -> milliseconds from a `Server-Timing` header written by `ServerTiming`."""
    out: dict[str, float] = {}
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip() == "dur":
                out[name] = out.get(name, 0.0) + float(value)
    return out


class ServerTimingMiddleware:
    """Adds `app;dur=…` to every HTTP response's `Server-Timing`: the time from the
    request reaching the application to its response starting (dependencies,
    validation, the route, serialization), beside any phases the route wrote itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                app = f"app;dur={(time.perf_counter() - began) * 1000:.1f}"
                phases = headers.get("server-timing")
                headers["server-timing"] = f"{phases}, {app}" if phases else app
            await send(message)

        await self.app(scope, receive, send_timed)
