"""The access log: every view of a case's personal data, with who and when."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request
from sqlmodel import Session

from casework.contracts import Actor
from casework.db import AccessLogRow
from casework.writer import serialized_writes


def record(session: Session, actor: Actor, case_id: str, what: str, request: Request) -> None:
    # Its own transaction: committing the request's session would expire the rows it serves.
    engine = session.get_bind()
    with serialized_writes(engine), Session(engine) as log:  # type: ignore[arg-type]
        log.add(
            AccessLogRow(
                at=datetime.now(UTC),
                user_id=actor.user_id,
                role=actor.role.value,
                case_id=case_id,
                what=what,
                path=request.url.path,
            )
        )
        log.commit()
