"""One writer at a time per SQLite database.

SQLite allows one write transaction at a time. A writer that finds the database locked
sleeps in SQLite's busy handler with growing pauses (1, 2, 5, 10 … 100 ms) however soon
the lock is free, which under concurrent writers turns a 1 ms transaction into tens of
milliseconds. Threads of one process therefore queue on a Python lock, and processes on
this machine (the worker processes and the API) on an exclusive `flock` of a file beside
the database: the kernel wakes the next writer the moment the previous one lets go, with
no polling (polling for the lock cost the workers a quarter of their CPU in a burst of
breaches). A process that dies lets go at once: the kernel closes its files. Writers that
do not take the file lock are still arbitrated by `BEGIN IMMEDIATE` and a short poll.
PostgreSQL writers run concurrently: no lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

# How long a SQLite writer waits for another process's write lock (also every
# connection's busy_timeout, set in casework.db.get_engine).
BUSY_TIMEOUT_MS = 30_000

_LOCKS: dict[str, threading.Lock] = {}
_LOCK_FILES: dict[tuple[int, str], int | None] = {}  # (process, database file) -> open lock file
_GUARD = threading.Lock()
log = logging.getLogger("casework.writer")


def _database_file(engine: Engine) -> str | None:
    db = engine.url.database
    if not db or db == ":memory:" or db.startswith("file:") or "mode=memory" in str(engine.url):
        return None
    return os.path.abspath(db)


def _lock_file(path: str) -> int | None:
    """This process's open lock file for a database file (None: it cannot be opened)."""
    key = (os.getpid(), path)  # a forked child opens its own: flock is per open file
    if key not in _LOCK_FILES:
        try:
            _LOCK_FILES[key] = os.open(f"{path}.write-lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            log.warning("no write lock file beside %s (%s): writers poll instead", path, exc)
            _LOCK_FILES[key] = None
    return _LOCK_FILES[key]


@contextmanager
def serialized_writes(engine: Engine) -> Iterator[None]:
    if engine.dialect.name != "sqlite":
        yield
        return
    path = _database_file(engine)
    with _GUARD:
        lock = _LOCKS.setdefault(path or str(engine.url), threading.Lock())
        fd = _lock_file(path) if path else None
    with lock:
        if fd is not None and path is not None and not _flock(path, fd):
            fd = None
        try:
            yield
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)


def _flock(path: str, fd: int) -> bool:
    """Take the file lock; on a file system without locks, say so once and leave the
    arbitration to SQLite from then on (the file stays open: another thread may hold it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    except OSError as exc:
        log.warning("no file lock on %s (%s): writers poll instead", path, exc)
        with _GUARD:
            _LOCK_FILES[(os.getpid(), path)] = None
        return False


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction that commits on success and rolls back on error.

    On SQLite it starts, inside `serialized_writes`, with `BEGIN IMMEDIATE`, so the write
    lock is taken before any work is done. A writer outside the file lock (another tool)
    is waited for by polling every 0.1-2 ms (for up to 30 s) instead of in SQLite's busy
    handler, whose next step would be 5, 10 or 25 ms however soon the lock is free.
    """
    with serialized_writes(engine):
        if engine.dialect.name != "sqlite":
            with engine.begin() as conn:
                yield conn
            return
        with engine.connect() as conn:
            _begin_immediate(conn)
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        delay, give_up = 0.0001, time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
                    raise
                if time.monotonic() > give_up:
                    raise
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.002)
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


class GroupCommit:
    """Writes of concurrent callers committed together, one transaction per group.

    A caller's write (a function of the connection) waits in a queue; a single writer
    task takes everything waiting at that moment and runs it in one write transaction,
    off the event loop. Under a burst, many writes cost a few commits and one lock
    acquisition each, instead of a thread and a lock hand-off each (on SQLite every
    hand-off is also a wait for the interpreter lock while holding the database's).
    A caller returns once the commit that holds its write is done. If a group fails,
    its writes are run again one by one, so a failing write fails only its own caller.
    """

    def __init__(self, engine: Engine, max_group: int = 256) -> None:
        self.engine = engine
        self.max_group = max_group
        self._waiting: list[tuple[Callable[[Connection], None], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def write(self, fn: Callable[[Connection], None]) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): start afresh
            self._loop, self._waiting, self._writer = loop, [], None
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.append((fn, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        await done

    async def _write_all(self) -> None:
        while self._waiting:
            group = self._waiting[: self.max_group]
            del self._waiting[: self.max_group]
            outcomes = await asyncio.to_thread(self._commit, [fn for fn, _ in group])
            for (_, done), error in zip(group, outcomes, strict=True):
                if done.done():
                    continue
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)

    def _commit(self, fns: list[Callable[[Connection], None]]) -> list[BaseException | None]:
        try:
            with write_transaction(self.engine) as conn:
                for fn in fns:
                    fn(conn)
            return [None] * len(fns)
        except Exception as exc:  # noqa: BLE001 - each write is tried again on its own
            if len(fns) == 1:
                return [exc]
        return [self._commit([fn])[0] for fn in fns]

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
