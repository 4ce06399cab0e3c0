"""A read model created by an earlier version gets the indexes added since, at start-up."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from casework.db import create_all, get_engine


def test_create_all_adds_missing_indexes_to_existing_tables(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path}/old.db")
    create_all(engine)
    with engine.begin() as conn:  # as if the database predates the SLA board's indexes
        conn.execute(text("DROP INDEX ix_task_sla_due"))
        conn.execute(text("DROP INDEX ix_case_file_open_sla"))
        conn.execute(text("INSERT INTO counter (name, value) VALUES ('kept', 7)"))

    create_all(engine)

    names = {ix["name"] for t in ("task", "case_file") for ix in inspect(engine).get_indexes(t)}
    assert {"ix_task_sla_due", "ix_case_file_open_sla"} <= names
    with engine.connect() as conn:  # and nothing else was touched
        assert conn.execute(text("SELECT value FROM counter WHERE name = 'kept'")).scalar() == 7
