"""One writer at a time per SQLite database within a process.

SQLite allows one write transaction at a time. A writer that finds the database locked
sleeps in SQLite's busy handler with growing pauses (1, 2, 5, 10 … 100 ms) however soon
the lock is free, which under concurrent writers turns a 1 ms transaction into tens of
milliseconds. Threads of one process therefore queue on a Python lock instead, and are
woken the moment the previous write commits; the busy handler only arbitrates between
processes (worker and API). PostgreSQL writers run concurrently: no lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Engine

_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


@contextmanager
def serialized_writes(engine: Engine) -> Iterator[None]:
    if engine.dialect.name != "sqlite":
        yield
        return
    key = str(engine.url)
    with _GUARD:
        lock = _LOCKS.setdefault(key, threading.Lock())
    with lock:
        yield
