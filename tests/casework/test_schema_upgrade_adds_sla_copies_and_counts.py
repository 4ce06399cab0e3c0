"""A read model created before the SLA board's copies and counts is brought up to date at
start-up.

The database is first made to look like one the previous version created (no
`case_region` columns, no `hours_in_step`, no counts, no triggers, the board's indexes
without the copy), with rows in it; `create_all` then adds the columns, fills them from the
cases, counts the open tasks and cases, installs the triggers and rebuilds the indexes,
and leaves every other value as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from casework.db import create_all, get_engine

OLD_INDEXES = {
    "ix_task_sla_due": "due_at, opened_at, task_id, sla_state, region, procedure, kind, case_id",
    "ix_task_open_queue": "procedure, kind, region, consulate, due_at, opened_at, task_id,"
    " sla_state, case_id",
}
OPEN, AT_RISK = "status IN ('open', 'claimed')", "sla_state IN ('at_risk', 'breached')"


def as_before_the_copies(conn: Connection) -> None:
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        triggers = conn.execute(
            text(
                "SELECT tgname, tgrelid::regclass::text FROM pg_trigger"
                " WHERE tgname LIKE 'casework%' AND NOT tgisinternal"
            )
        ).all()
        for trigger, table in triggers:
            conn.execute(text(f"DROP TRIGGER {trigger} ON {table}"))
        conn.execute(text("ALTER TABLE task DROP COLUMN hours_in_step"))  # and its index
    else:
        for name in conn.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        ).scalars():
            conn.execute(text(f"DROP TRIGGER {name}"))
    for table in ("board_open_tasks", "board_open_cases", "board_done_hours"):
        conn.execute(text(f"DROP TABLE {table}"))
    for index in ("ix_task_sla_due", "ix_task_open_queue", "ix_task_open_scope"):
        conn.execute(text(f"DROP INDEX {index}"))
    conn.execute(text("DROP INDEX ix_case_event_breach_scope"))
    conn.execute(text("ALTER TABLE task DROP COLUMN case_region"))
    conn.execute(text("ALTER TABLE case_event DROP COLUMN case_region"))
    conn.execute(
        text(
            f"CREATE INDEX ix_task_sla_due ON task ({OLD_INDEXES['ix_task_sla_due']})"
            f" WHERE {OPEN} AND {AT_RISK}"
        )  # fmt: skip
    )
    conn.execute(
        text(
            f"CREATE INDEX ix_task_open_queue ON task ({OLD_INDEXES['ix_task_open_queue']})"
            f" WHERE {OPEN}"
        )  # fmt: skip
    )


def seed_old_rows(conn: Connection) -> None:
    for cid, case_region in (("KS-1", "pavlodar"), ("WP-2", "astana")):
        conn.execute(
            text(
                "INSERT INTO case_file (case_id, procedure, ruleset_version, region, status,"
                " sla_state, applicant_party, applicant_name, summary, filed_at, filed_by,"
                " request_hash, updated_at, rev) VALUES (:cid, 'kandas_status', '2026.01',"
                " :region, 'decision', 'at_risk', 'p', 'n', '{}', '2026-11-01 08:00:00',"
                " 'e', 'h', '2026-11-01 08:00:00', 3)"
            ),
            {"cid": cid, "region": case_region},
        )
    tasks: list[tuple[str, str, str | None, str, str | None]] = [
        ("KS-1-C1", "KS-1", None, "open", None),
        ("KS-1-T1", "KS-1", "astana", "done", "2026-11-01 14:30:00"),
        ("WP-2-T1", "WP-2", "astana", "claimed", None),
    ]
    for task_id, case_id, region, status, done in tasks:
        conn.execute(
            text(
                "INSERT INTO task (task_id, case_id, procedure, kind, title, role, region,"
                " status, priority, sla_state, opened_at, completed_at, rev) VALUES (:tid,"
                " :cid, 'kandas_status', 'decision', 't', 'caseworker', :region, :status, 0,"
                " 'at_risk', '2026-11-01 09:00:00', :done, 4)"
            ),
            {"tid": task_id, "cid": case_id, "region": region, "status": status, "done": done},
        )
    for seq, kind in enumerate(("clock_at_risk", "clock_breached"), start=1):
        conn.execute(
            text(
                "INSERT INTO case_event (case_id, seq, kind, at, actor, data) VALUES"
                " ('KS-1', :seq, :kind, '2026-11-02 10:00:00', 'system', '{}')"
            ),
            {"seq": seq, "kind": kind},
        )


def check_brought_up_to_date(engine: Engine) -> None:
    with engine.connect() as conn:
        tasks = conn.execute(
            text("SELECT task_id, status, region, case_region FROM task ORDER BY task_id")
        ).all()
        assert [tuple(r) for r in tasks] == [
            ("KS-1-C1", "open", None, "pavlodar"),
            ("KS-1-T1", "done", "astana", "pavlodar"),
            ("WP-2-T1", "claimed", "astana", "astana"),
        ]
        events = conn.execute(text("SELECT kind, case_region FROM case_event ORDER BY seq")).all()
        assert [tuple(r) for r in events] == [
            ("clock_at_risk", None),
            ("clock_breached", "pavlodar"),
        ]
        if conn.dialect.name == "postgresql":
            hours = conn.execute(text("SELECT hours_in_step FROM task ORDER BY task_id")).all()
            assert [h for (h,) in hours] == [None, 5.5, None]
        found = {ix["name"]: ix["column_names"] for ix in inspect(conn).get_indexes("task")}
    for table in SQLModel.metadata.sorted_tables:
        for index in table.indexes:
            if table.name == "task":
                assert found[str(index.name)] == [c.name for c in index.columns]
    assert counts(engine) == (
        {
            ("", "pavlodar", "decision", "at_risk", 1),
            ("astana", "astana", "decision", "at_risk", 1),
        },
        {("pavlodar", "at_risk", 1), ("astana", "at_risk", 1)},
    )
    # The triggers are in place: a case moved by a later write takes its tasks along.
    with engine.begin() as conn:
        conn.execute(text("UPDATE case_file SET region = 'abai' WHERE case_id = 'KS-1'"))
    with engine.connect() as conn:
        moved = set(
            conn.execute(text("SELECT case_region FROM task WHERE case_id = 'KS-1'")).scalars()
        )
    assert moved == {"abai"}
    if engine.dialect.name == "postgresql":  # the done task's hours moved with it
        assert query(
            engine,
            "SELECT region, case_region, unnest(added) FROM board_done_hours EXCEPT ALL"
            " SELECT region, case_region, unnest(removed) FROM board_done_hours",
        ) == {("astana", "abai", 5.5)}
    assert counts(engine) == (
        {("", "abai", "decision", "at_risk", 1), ("astana", "astana", "decision", "at_risk", 1)},
        {("abai", "at_risk", 1), ("astana", "at_risk", 1)},
    )
    # And a second start changes nothing.
    create_all(engine)


def query(engine: Engine, sql: str) -> set[tuple[Any, ...]]:
    with engine.connect() as conn:
        return set(map(tuple, conn.execute(text(sql)).all()))


def counts(engine: Engine) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """The board's counts of open tasks and open cases, summed over the shards."""
    return query(
        engine,
        "SELECT region, case_region, kind, sla_state, sum(n) FROM board_open_tasks"
        " GROUP BY region, case_region, kind, sla_state HAVING sum(n) <> 0",
    ), query(
        engine,
        "SELECT region, sla_state, sum(n) FROM board_open_cases"
        " GROUP BY region, sla_state HAVING sum(n) <> 0",
    )


def upgrade(engine: Engine) -> None:
    create_all(engine)
    with engine.begin() as conn:
        as_before_the_copies(conn)
        seed_old_rows(conn)
    create_all(engine)
    check_brought_up_to_date(engine)


def test_an_old_sqlite_read_model_gets_the_copies(tmp_path: Path) -> None:
    upgrade(get_engine(f"sqlite:///{tmp_path}/old.db"))


@pytest.fixture
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """A database of its own: this test changes the schema."""
    server, _ = pg_url.rsplit("/", 1)
    name = f"casework_test_upgrade_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server}/{name}"
    finally:
        get_engine(f"{server}/{name}").dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_an_old_postgres_read_model_gets_the_copies(fresh_pg_url: str) -> None:
    upgrade(get_engine(fresh_pg_url))
