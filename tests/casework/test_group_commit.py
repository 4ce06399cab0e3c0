"""Concurrent read-model writes are committed in groups: each lands once, and a write
that fails fails only its own caller."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from casework.db import get_engine
from casework.writer import GroupCommit


def _engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = get_engine(f"sqlite:///{tmp_path}/rm.db")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    return engine


def _insert(k: int, v: str = "x"):  # type: ignore[no-untyped-def]
    def write(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t (k, v) VALUES (:k, :v)"), {"k": k, "v": v})

    return write


async def test_a_burst_of_writes_lands_once_each_in_fewer_commits(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    group = GroupCommit(engine)
    commits = 0
    real_commit = group._commit

    def counting(fns):  # type: ignore[no-untyped-def]
        nonlocal commits
        commits += 1
        return real_commit(fns)

    group._commit = counting  # type: ignore[method-assign]
    await asyncio.gather(*(group.write(_insert(k)) for k in range(200)))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*), count(DISTINCT k) FROM t").one() == (200, 200)
    assert commits < 50  # grouped: not one transaction per write
    await group.close()


async def test_a_failing_write_fails_only_its_caller(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    group = GroupCommit(engine)
    await group.write(_insert(7, "first"))
    results = await asyncio.gather(
        *(group.write(_insert(k, "new")) for k in (1, 2, 7, 3, 4)), return_exceptions=True
    )
    assert [isinstance(r, IntegrityError) for r in results] == [False, False, True, False, False]
    with engine.connect() as conn:
        rows = dict(conn.exec_driver_sql("SELECT k, v FROM t").all())  # type: ignore[arg-type]
    assert rows == {1: "new", 2: "new", 3: "new", 4: "new", 7: "first"}
    with pytest.raises(IntegrityError):
        await group.write(_insert(7))
    await group.close()
