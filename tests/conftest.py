"""Shared fixtures: databases (SQLite always, PostgreSQL when reachable) and Temporal."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from casework.db import create_all, get_engine

PG_ADMIN_URL = os.environ.get(
    "CASEWORK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# In CI (CI=true, or CASEWORK_REQUIRE_POSTGRES=1) a missing PostgreSQL is a failure;
# elsewhere its tests are skipped with a message saying so.
REQUIRE_PG = (
    os.environ.get("CASEWORK_REQUIRE_POSTGRES") == "1" or os.environ.get("CI", "").lower() == "true"
)


def _pg_available() -> str | None:
    try:
        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any connection problem means "not here"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    problem = _pg_available()
    if problem:
        if REQUIRE_PG:
            pytest.fail(
                f"PostgreSQL is required (CASEWORK_REQUIRE_POSTGRES=1) but not reachable at {PG_ADMIN_URL}: {problem}"
            )
        pytest.skip(
            f"PostgreSQL not reachable at {PG_ADMIN_URL} ({problem}); PostgreSQL tests skipped"
        )
    name = f"casework_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        get_engine.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path / 'casework.db'}")
    create_all(engine)
    return engine


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """PostgreSQL engine with empty tables for one test."""
    engine = get_engine(pg_url)
    create_all(engine)
    yield engine
    from casework.db import SQLModel

    with engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Both databases: the test runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    return request.getfixturevalue(name)


_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # A process that used the Temporal SDK can crash at interpreter exit after a clean
    # shutdown (native threads during finalisation). The summary is printed by now: leave
    # with pytest's own status so that crash can never turn a green run red.
    if os.environ.get("CASEWORK_NO_HARD_EXIT") != "1":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)
