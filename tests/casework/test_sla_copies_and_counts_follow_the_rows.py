"""The SLA board's copies and counts stay equal to a recount of the rows, whoever writes.

Tasks and clock-breach events carry a copy of their case's region (`case_region`), on
PostgreSQL a done task carries its hours in step, and the open tasks and open cases are
counted (`board_open_tasks`, `board_open_cases`); database triggers keep all of them in the
writer's own transaction. Every writer is used as the engine uses it: the projection's
rev-guarded upsert (including a stale write that changes nothing), the ORM, bulk inserts
and PostgreSQL's COPY, the clock projection's update of open tasks, tasks completed
(open → done), consular tasks without a region, cases written after their tasks, a kandas
case moving to another region, a deleted case. After each step the copies are checked
against a recount joined from the case rows, and the counts against a plain count.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, create_engine, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from casework.contracts import CLOSED_STATUSES
from casework.db import (
    CASE_EVENT,
    DONE_DAY_SQL,
    TASK,
    CaseEventRow,
    CaseRow,
    TaskRow,
    create_all,
    fold_board_shards,
)
from casework.readmodel_sql import insert_once, upsert

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
REGIONS = ["astana", "almaty_city", "pavlodar"]
CLOSED = ", ".join(f"'{s.value}'" for s in sorted(CLOSED_STATUSES))


def case_values(
    case_id: str, region: str, rev: int, status: str = "decision", sla_state: str = "on_track"
) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "procedure": "kandas_status" if case_id.startswith("KS") else "work_permit",
        "ruleset_version": "2026.01",
        "region": region,
        "status": status,
        "sla_state": sla_state,
        "deadline": None,
        "applicant_party": "123456789012",
        "applicant_name": "Applicant",
        "summary": {},
        "filed_at": T0,
        "filed_by": "employer",
        "request_hash": "h",
        "consulate": None,
        "updated_at": T0,
        "rev": rev,
    }


def task_values(
    task_id: str,
    case_id: str,
    region: str | None,
    rev: int,
    *,
    done_after_h: float | None = None,
    sla_state: str = "on_track",
) -> dict[str, Any]:
    opened = T0 + timedelta(hours=rev, microseconds=137 * rev)
    completed = None if done_after_h is None else opened + timedelta(hours=done_after_h)
    done = completed is not None
    return {
        "task_id": task_id,
        "case_id": case_id,
        "procedure": "kandas_status" if case_id.startswith("KS") else "work_permit",
        "kind": "consular_check" if region is None else "decision",
        "title": "t",
        "role": "consulate_officer" if region is None else "caseworker",
        "region": region,
        "consulate": "KZ-CN-URUMQI" if region is None else None,
        "status": "done" if done else "open",
        "assignee": None,
        "priority": 0,
        "due_at": opened + timedelta(days=3),
        "sla_state": "stopped" if done else sla_state,
        "opened_at": opened,
        "context": {},
        "form_data": None,
        "completed_by": "cw" if done else None,
        "completed_at": completed,
        "rev": rev,
    }


def event_values(case_id: str, seq: int, kind: str) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "seq": seq,
        "kind": kind,
        "at": T0 + timedelta(hours=seq),
        "actor": "system",
        "data": {},
    }


def write(engine: Engine, fn: Any) -> None:
    with engine.begin() as conn:
        fn(conn)


def assert_equal_to_a_recount(engine: Engine) -> None:
    with engine.connect() as conn:
        tasks = conn.execute(
            text(
                "SELECT t.task_id, t.case_region, c.region FROM task t"
                " LEFT JOIN case_file c ON c.case_id = t.case_id"
            )
        ).all()
        assert [(tid, copy) for tid, copy, _ in tasks] == [(tid, reg) for tid, _, reg in tasks]
        events = conn.execute(
            text(
                "SELECT e.id, e.kind, e.case_region, c.region FROM case_event e"
                " LEFT JOIN case_file c ON c.case_id = e.case_id"
            )
        ).all()
        assert [(i, copy) for i, _, copy, _ in events] == [
            (i, reg if kind == "clock_breached" else None) for i, kind, _, reg in events
        ]
        for counts, table, key, open_rows in (
            ("board_open_tasks", "task", "region, case_region, consulate, procedure, kind, sla_state",
             "status IN ('open', 'claimed')"),
            ("board_open_cases", "case_file", "procedure, region, sla_state",
             f"status NOT IN ({CLOSED})"),
        ):  # fmt: skip
            keys = ", ".join(f"coalesce({k}, '')" for k in key.split(", "))
            counted = conn.execute(
                text(f"SELECT {key}, sum(n) FROM {counts} GROUP BY {key} HAVING sum(n) <> 0")  # noqa: S608
            ).all()
            recount = conn.execute(
                text(f"SELECT {keys}, count(*) FROM {table} WHERE {open_rows} GROUP BY {keys}")  # noqa: S608
            ).all()
            assert sorted(map(tuple, counted)) == sorted(map(tuple, recount)), counts
        if conn.dialect.name == "postgresql":
            # The days' hours: what was added less what was removed (all of which had been
            # added) is the hours of the tasks done, per key and day.
            net = "SELECT procedure, kind, region, case_region, day, unnest(added) AS h"
            gone = "SELECT procedure, kind, region, case_region, day, unnest(removed)"
            net, gone = net + " FROM board_done_hours", gone + " FROM board_done_hours"
            assert not conn.execute(text(f"{gone} EXCEPT ALL {net}")).all()
            digested = conn.execute(text(f"{net} EXCEPT ALL {gone}")).all()
            done = conn.execute(
                text(
                    "SELECT procedure, kind, coalesce(region, ''), coalesce(case_region, ''),"  # noqa: S608
                    f" {DONE_DAY_SQL}, hours_in_step FROM task"
                    " WHERE status = 'done' AND completed_at IS NOT NULL"
                )
            ).all()
            assert sorted(map(tuple, digested)) == sorted(map(tuple, done))
            # The generated hours in step are the very values the query used to compute.
            hours = conn.execute(
                text(
                    "SELECT task_id, hours_in_step, CAST(EXTRACT(epoch FROM completed_at"
                    " - opened_at) AS double precision) / CAST(3600.0 AS double precision)"
                    " FROM task"
                )
            ).all()
            assert [(tid, h) for tid, h, _ in hours] == [(tid, want) for tid, _, want in hours]


_OPEN_TASKS_SLA = (
    update(TaskRow)
    .where(
        TaskRow.case_id == bindparam("cid"),  # type: ignore[arg-type]
        TaskRow.status.in_(["open", "claimed"]),  # type: ignore[attr-defined]
    )
    .values(sla_state=bindparam("state"))
)


def test_every_writer_leaves_copies_and_counts_equal_to_a_recount(engine: Engine) -> None:
    # The projection's upserts: a case, its caseworker task and its consular task.
    write(engine, lambda c: upsert(c, CaseRow, case_values("KS-1", "astana", 1), ("case_id",)))
    write(engine, lambda c: upsert(c, TaskRow, task_values("KS-1-T1", "KS-1", "astana", 2), ("task_id",)))  # fmt: skip
    write(engine, lambda c: upsert(c, TaskRow, task_values("KS-1-C1", "KS-1", None, 3), ("task_id",)))  # fmt: skip
    assert_equal_to_a_recount(engine)

    # Completed (open → done) by a newer revision; a stale revision afterwards changes nothing.
    done = task_values("KS-1-C1", "KS-1", None, 5, done_after_h=7.25)
    write(engine, lambda c: upsert(c, TaskRow, done, ("task_id",)))
    stale = task_values("KS-1-C1", "KS-1", None, 4)
    write(engine, lambda c: upsert(c, TaskRow, stale, ("task_id",)))
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, case_region FROM task WHERE task_id = 'KS-1-C1'")
        ).one()
    assert tuple(row) == ("done", "astana")
    assert_equal_to_a_recount(engine)

    # The clock projection moves the open tasks' SLA state in one statement.
    write(engine, lambda c: c.execute(_OPEN_TASKS_SLA, {"cid": "KS-1", "state": "at_risk"}))
    # Timeline entries through the projection's insert-once: only a breach gets the copy.
    for seq, kind in enumerate(["case_started", "clock_breached", "status"], start=1):
        ev = event_values("KS-1", seq, kind)
        write(engine, lambda c, ev=ev: insert_once(c, CaseEventRow, ev, ("case_id", "seq")))
    assert_equal_to_a_recount(engine)

    # A task, and a breach, written before their case exists: the case brings its region.
    write(engine, lambda c: c.execute(TASK.insert(), [task_values("WP-2-T1", "WP-2", "almaty_city", 1)]))  # fmt: skip
    write(engine, lambda c: c.execute(CASE_EVENT.insert(), [event_values("WP-2", 1, "clock_breached")]))  # fmt: skip
    assert_equal_to_a_recount(engine)
    with Session(engine) as s:  # the ORM, as the tests and the API write
        s.add(CaseRow.model_validate(case_values("WP-2", "almaty_city", 1)))
        s.add(TaskRow.model_validate(task_values("WP-2-T2", "WP-2", "almaty_city", 2)))
        s.commit()
    assert_equal_to_a_recount(engine)

    # The settlement moves the kandas case: its tasks (done or open, consular or not) and
    # its breaches follow; a stale case write does not move them back.
    write(engine, lambda c: upsert(c, CaseRow, case_values("KS-1", "pavlodar", 9), ("case_id",)))
    write(engine, lambda c: upsert(c, CaseRow, case_values("KS-1", "astana", 8), ("case_id",)))
    with engine.connect() as conn:
        copies = set(
            conn.execute(text("SELECT case_region FROM task WHERE case_id = 'KS-1'")).scalars()
        )
    assert copies == {"pavlodar"}
    assert_equal_to_a_recount(engine)

    # A writer that sets the copy itself cannot make it wrong.
    write(engine, lambda c: c.execute(text("UPDATE task SET case_region = 'shymkent'")))
    write(engine, lambda c: c.execute(CASE_EVENT.update().values(case_region="shymkent")))
    assert_equal_to_a_recount(engine)

    # A case row removed (never done by the engine): no copy of it is left behind.
    write(engine, lambda c: c.execute(text("DELETE FROM case_file WHERE case_id = 'WP-2'")))
    assert_equal_to_a_recount(engine)


def test_copies_and_counts_survive_a_random_mix_of_writes(engine: Engine) -> None:
    rng = random.Random(4)
    revs: dict[str, int] = {}
    seqs: dict[str, int] = {}
    cases = [f"{'KS' if i % 2 else 'WP'}-{i}" for i in range(12)]
    tasks: dict[str, tuple[str, str | None]] = {}

    def next_rev(key: str) -> int:
        revs[key] = revs.get(key, 0) + rng.randint(1, 3)
        return revs[key]

    def step(conn: Connection) -> None:
        op = rng.choice(["case", "case", "task", "task", "done", "stale", "sla", "event"])
        case_id = rng.choice(cases)
        if op == "case":  # moved, advanced, closed; or a stale write (lower rev)
            rev = next_rev(case_id) if rng.random() < 0.8 else max(0, revs.get(case_id, 0) - 1)
            status = rng.choice(["document_check", "decision", "issued", "refused"])
            state = rng.choice(["on_track", "at_risk", "breached", "suspended"])
            values = case_values(case_id, rng.choice(REGIONS), rev, status, state)
            upsert(conn, CaseRow, values, ("case_id",))
        elif op == "task":
            task_id = f"{case_id}-T{rng.randrange(4)}"
            region = tasks.get(task_id, (case_id, rng.choice([*REGIONS, None])))[1]
            tasks[task_id] = (case_id, region)
            upsert(conn, TaskRow, task_values(task_id, case_id, region, next_rev(task_id)), ("task_id",))  # fmt: skip
        elif op in ("done", "stale") and tasks:
            task_id = rng.choice(sorted(tasks))
            cid, region = tasks[task_id]
            rev = next_rev(task_id) if op == "done" else max(0, revs[task_id] - 1)
            took = rng.uniform(0.01, 90)
            values = task_values(task_id, cid, region, rev, done_after_h=took)
            upsert(conn, TaskRow, values, ("task_id",))
        elif op == "sla":
            state = rng.choice(["at_risk", "breached", "suspended", "on_track"])
            conn.execute(_OPEN_TASKS_SLA, {"cid": case_id, "state": state})
        elif op == "event":
            seqs[case_id] = seqs.get(case_id, 0) + 1
            kind = rng.choice(["clock_breached", "clock_at_risk", "status"])
            insert_once(conn, CaseEventRow, event_values(case_id, seqs[case_id], kind), ("case_id", "seq"))  # fmt: skip

    for _ in range(40):
        with engine.begin() as conn:
            for _ in range(rng.randint(1, 6)):
                step(conn)
        assert_equal_to_a_recount(engine)


def test_postgres_copy_fills_the_copies_and_counts(pg_engine: Engine) -> None:
    """The benchmark's loader writes with COPY: row triggers run for it too."""
    write(pg_engine, lambda c: upsert(c, CaseRow, case_values("WP-9", "astana", 1), ("case_id",)))
    with pg_engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        with (
            raw.cursor() as cur,
            cur.copy(
                "COPY task (task_id, case_id, procedure, kind, title, role, region, status,"
                " priority, sla_state, opened_at, completed_at, rev) FROM STDIN"
            ) as cp,
        ):
            cp.write_row(("WP-9-T1", "WP-9", "work_permit", "decision", "t", "consulate_officer",
                          None, "done", 0, "stopped", T0, T0 + timedelta(hours=3.5), 1))  # fmt: skip
    assert_equal_to_a_recount(pg_engine)
    with pg_engine.connect() as conn:
        row = conn.execute(text("SELECT case_region, hours_in_step FROM task")).one()
    assert tuple(row) == ("astana", 3.5)


def test_postgres_a_task_written_while_its_case_moves_gets_the_new_region(
    pg_engine: Engine,
) -> None:
    """Two writers at once, in either order: a new task and the move of its case."""
    write(pg_engine, lambda c: upsert(c, CaseRow, case_values("KS-7", "astana", 1), ("case_id",)))

    def move(rev: int, region: str) -> threading.Thread:
        mover = threading.Thread(
            target=write,
            args=(pg_engine, lambda c: upsert(c, CaseRow, case_values("KS-7", region, rev), ("case_id",))),
        )  # fmt: skip
        mover.start()
        mover.join(timeout=0.5)  # it waits for the other writer, or is done
        return mover

    # The task first: the move waits for it, then hands it the new region.
    with pg_engine.begin() as conn:
        upsert(conn, TaskRow, task_values("KS-7-T1", "KS-7", None, 1), ("task_id",))
        mover = move(2, "pavlodar")
    mover.join()
    assert_equal_to_a_recount(pg_engine)

    # The move first: the task waits for it, then reads the new region.
    with pg_engine.connect() as first:
        first.execute(text("UPDATE case_file SET region = 'abai', rev = 3 WHERE case_id = 'KS-7'"))
        writer = threading.Thread(
            target=write,
            args=(pg_engine, lambda c: upsert(c, TaskRow, task_values("KS-7-T2", "KS-7", None, 2), ("task_id",))),
        )  # fmt: skip
        writer.start()
        writer.join(timeout=0.5)
        first.commit()
    writer.join()
    assert_equal_to_a_recount(pg_engine)


def test_postgres_counts_of_a_closed_connection_are_merged_at_start_up(pg_engine: Engine) -> None:
    """Each connection counts (and lists the hours of the tasks it completes) in rows of its
    own; a start-up folds those of connections that are gone into one row per key, and
    what the board reads stays the same."""
    gone = create_engine(pg_engine.url, poolclass=NullPool)
    with gone.begin() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        upsert(conn, CaseRow, case_values("WP-5", "astana", 1), ("case_id",))
        upsert(conn, TaskRow, task_values("WP-5-T1", "WP-5", "astana", 1), ("task_id",))
        upsert(conn, CaseRow, case_values("WP-6", "abai", 1, sla_state="at_risk"), ("case_id",))
        done = task_values("WP-6-T1", "WP-6", "abai", 1, done_after_h=2.5)
        upsert(conn, TaskRow, done, ("task_id",))
    gone.dispose()  # the backend ends
    write(pg_engine, lambda c: upsert(c, TaskRow, task_values("WP-5-T2", "WP-5", "astana", 2), ("task_id",)))  # fmt: skip
    assert_equal_to_a_recount(pg_engine)

    create_all(pg_engine)

    with pg_engine.connect() as conn:
        shards = set()
        for table in ("board_open_tasks", "board_open_cases", "board_done_hours"):
            shards |= set(conn.execute(text(f"SELECT shard FROM {table}")).scalars())  # noqa: S608
    assert pid not in shards and 0 in shards
    assert_equal_to_a_recount(pg_engine)


def test_postgres_folding_never_waits_for_a_writer(pg_engine: Engine) -> None:
    """The board folds every connection's rows into shard 0 while a writer is in the middle
    of a transaction: the rows that writer holds are left for later, nothing waits, and
    what the board reads stays the same."""
    write(pg_engine, lambda c: upsert(c, CaseRow, case_values("WP-8", "astana", 1), ("case_id",)))
    for i, took in enumerate((1.5, 7.25, 30.0), start=1):
        done = task_values(f"WP-8-T{i}", "WP-8", "astana", i, done_after_h=took)
        write(pg_engine, lambda c, done=done: upsert(c, TaskRow, done, ("task_id",)))
    writer = pg_engine.connect()
    try:
        # In flight: a task opened and one completed, their count and hours rows locked.
        upsert(writer, TaskRow, task_values("WP-8-T9", "WP-8", "astana", 9), ("task_id",))
        upsert(writer, TaskRow, task_values("WP-8-T2", "WP-8", "astana", 10, done_after_h=3.0), ("task_id",))  # fmt: skip
        folder = threading.Thread(target=write, args=(pg_engine, fold_board_shards))
        folder.start()
        folder.join(timeout=10)
        assert not folder.is_alive()  # it did not wait for the writer
        writer.commit()
    finally:
        writer.close()
    assert_equal_to_a_recount(pg_engine)
    write(pg_engine, fold_board_shards)  # now nothing holds them: all in shard 0
    with pg_engine.connect() as conn:
        for table in ("board_open_tasks", "board_open_cases", "board_done_hours"):
            assert set(conn.execute(text(f"SELECT shard FROM {table}")).scalars()) <= {0}  # noqa: S608
    assert_equal_to_a_recount(pg_engine)
