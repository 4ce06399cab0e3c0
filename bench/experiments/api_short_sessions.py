"""Experiment `short-sessions`: the API as `casework.cli api` runs it, except that the
request's database session gives its connection back to the pool after each
primary-key read, so no connection is held while a route awaits Temporal.

Recommended change in the engine: in the async routes (`api/routes/cases.py`,
`tasks.py`, `payments.py`) read what the policy needs in a short session (off the event
loop) and close it before `execute_update` / `execute_update_with_start_workflow`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import Request
from sqlmodel import Session

from api.deps import get_session
from api.main import create_app


class ReleasingSession(Session):
    """A session that returns its connection to the pool after each `get`."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        obj = super().get(*args, **kwargs)
        self.close()  # the loaded object stays usable (detached, attributes loaded)
        return obj


def short_session(request: Request) -> Iterator[Session]:
    with ReleasingSession(request.app.state.engine) as s:
        yield s


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    app = create_app()
    app.dependency_overrides[get_session] = short_session
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    sys.stdout.flush()
    os._exit(0)  # the Temporal SDK can crash at interpreter exit


if __name__ == "__main__":
    main()
