"""Read-model writes as prepared SQL statements.

Projection writes run on every step of every case, inside the database's write lock on
SQLite. Building SQLAlchemy statements (and ORM objects) costs far more than executing
them, so each statement here is built once per table, dialect and column set and then
executed with plain parameters, which also hits SQLAlchemy's compiled-statement cache.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlmodel import Session


def _insert(dialect: str) -> Any:
    return sqlite_insert if dialect == "sqlite" else pg_insert


@functools.cache
def _upsert(table: Table, dialect: str, columns: tuple[str, ...], key: tuple[str, ...]) -> Any:
    stmt = _insert(dialect)(table)
    return stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={c: stmt.excluded[c] for c in columns if c not in key},
        where=table.c.rev <= stmt.excluded.rev,
    )


@functools.cache
def _insert_once(table: Table, dialect: str, key: tuple[str, ...]) -> Any:
    return _insert(dialect)(table).on_conflict_do_nothing(index_elements=list(key))


def _dialect(conn: Connection | Session) -> str:
    bind = conn if isinstance(conn, Connection) else conn.get_bind()
    return str(bind.dialect.name)


def upsert(
    conn: Connection | Session, model: Any, values: dict[str, Any], key: tuple[str, ...]
) -> None:
    """Insert the row, or update it unless the stored one is newer (`rev`)."""
    stmt = _upsert(model.__table__, _dialect(conn), tuple(values), key)
    conn.execute(stmt, values)


def insert_once(
    conn: Connection | Session, model: Any, values: dict[str, Any], key: tuple[str, ...]
) -> None:
    """Insert the row unless one with the same key exists (a retried write)."""
    conn.execute(_insert_once(model.__table__, _dialect(conn), key), values)
