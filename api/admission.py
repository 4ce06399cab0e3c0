"""Admission control: a bounded number of Temporal-bound requests per API process.

Under overload, queueing every request makes everyone wait longer than anyone would;
a request that cannot get a slot within a short wait is answered at once with 429 and
`Retry-After`, and nothing has been changed. Reads of the read model are not limited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, Request

from api.errors import Problem

log = logging.getLogger("casework.api")


class Admission:
    def __init__(self, limit: int, wait: float) -> None:
        self.limit = limit
        self.wait = wait
        self.in_flight = 0
        self._slots = asyncio.Semaphore(limit)

    async def acquire(self, route: str) -> None:
        try:
            if self._slots.locked():
                await asyncio.wait_for(self._slots.acquire(), timeout=self.wait)
            else:
                await self._slots.acquire()  # a free slot is taken without waiting
        except TimeoutError:
            log.warning("admission: %s refused, %d requests in flight", route, self.limit)
            raise Problem(
                429,
                "Too many requests",
                f"the engine is at capacity ({self.limit} requests in flight); "
                "nothing was changed, retry after the indicated delay",
                kind="overloaded",
                headers={"Retry-After": "1"},
            ) from None
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.release()


async def admit(request: Request) -> AsyncIterator[None]:
    admission: Admission = request.app.state.admission
    route = request.scope.get("route")
    await admission.acquire(getattr(route, "path", request.url.path))
    try:
        yield
    finally:
        admission.release()


ADMITTED = Depends(admit)  # for `dependencies=[ADMITTED]` on routes that call Temporal
