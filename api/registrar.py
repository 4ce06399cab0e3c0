"""Registration rows of newly started cases, written with group commit.

Each new case's registration row (rev 0, see `api/routes/cases.py`) must be in the read
model before the start request answers. Written one transaction per request, concurrent
starts queue for the database's write lock (on SQLite, one writer at a time); here the
rows of all requests waiting at that moment go into one transaction
(`casework.writer.GroupCommit`), so a burst of starts costs a few commits instead of one
each. A request answers once the commit that holds its row is done; if that commit
fails, each row is tried again on its own and a request that still fails gets the
database's error.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection, Engine

from casework.db import CaseRow
from casework.readmodel_sql import insert_once
from casework.writer import GroupCommit


class Registrar:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.group = GroupCommit(engine)

    async def register(self, values: dict[str, Any]) -> None:
        """Insert the row unless the case's own projection wrote it first (that one is newer)."""

        def insert(conn: Connection) -> None:
            insert_once(conn, CaseRow, values, ("case_id",))

        await self.group.write(insert)

    async def close(self) -> None:
        await self.group.close()
