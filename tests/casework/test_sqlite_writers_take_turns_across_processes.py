"""Processes writing to one SQLite read model (the worker processes, the API) take turns on
a file lock: a writer waits for the one before it without spinning, and every write lands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from casework.db import get_engine
from casework.writer import serialized_writes

# A second process: one write through the engine's write path; it reports how long it
# waited and how much CPU it used meanwhile.
CHILD = """
import json, sys, time
from sqlalchemy import text
from casework.db import get_engine
from casework.writer import write_transaction
engine = get_engine(sys.argv[1])
with engine.connect():
    pass
print("ready", flush=True)
t0, c0 = time.monotonic(), time.process_time()
with write_transaction(engine) as conn:
    conn.execute(text("INSERT INTO t (k, v) VALUES (1, 'child')"))
print(json.dumps({"waited_s": time.monotonic() - t0, "cpu_s": time.process_time() - c0}))
"""


def test_a_writer_in_another_process_waits_for_the_lock_without_spinning(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rm.db"
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    with serialized_writes(engine):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, url],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert child.stdout is not None
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(1.0)
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
        except BaseException:
            child.kill()
            raise
    try:
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    report = json.loads(out.strip().splitlines()[-1])
    assert child.returncode == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM t WHERE k = 1")).scalar() == "child"
    # It waited for the lock to be let go ...
    assert report["waited_s"] >= 0.9
    # ... asleep: polling for the lock every few milliseconds costs tens of ms a second.
    assert report["cpu_s"] < 0.03


def test_without_file_locks_the_writes_still_land(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import fcntl

    from casework import writer

    engine = get_engine(f"sqlite:///{tmp_path}/rm.db")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    calls = 0

    def no_locks(fd: int, op: int) -> None:
        nonlocal calls
        calls += 1
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    for k in (1, 2):
        with writer.write_transaction(engine) as conn:
            conn.execute(text("INSERT INTO t (k, v) VALUES (:k, 'x')"), {"k": k})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 2
    assert calls == 1  # tried once, then the database is written without the file lock
