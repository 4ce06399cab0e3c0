"""Registration rows of newly started cases, written with group commit.

Each new case's registration row (rev 0, see `api/routes/cases.py`) must be in the read
model before the start request answers. Written one transaction per request, concurrent
starts queue for the database's write lock (on SQLite, one writer at a time); here the
rows of all requests waiting at that moment go into one transaction, so a burst of
starts costs a few commits instead of one each. A request answers once the commit that
holds its row is done; if that commit fails, every request in it gets the error.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from casework.db import CaseRow
from casework.readmodel_sql import insert_once
from casework.writer import write_transaction


class Registrar:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def register(self, values: dict[str, Any]) -> None:
        """Insert the row unless the case's own projection wrote it first (that one is newer)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((values, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        await done

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await run_in_threadpool(self._insert, [values for values, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with write_transaction(self.engine) as conn:
            for values in rows:
                insert_once(conn, CaseRow, values, ("case_id",))

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
