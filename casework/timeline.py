"""The case timeline as auditors read it: hash-chained entries and their text in kk, ru, en.

Each timeline entry (a `case_event` row written by the projection) is sealed with
`hash = sha256(prev_hash | canonical(entry))`, in the order of the workflow's own event
counter. Altering, deleting or reordering stored entries breaks the chain, and
`verify_chain` names the entry and what happened to it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC
from typing import Any

from pydantic import BaseModel
from sqlalchemy import bindparam, update
from sqlalchemy import select as sql_select
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from casework.db import CaseEventRow

GENESIS = "0" * 64


def _canonical(row: Any, seq: int | None = None) -> str:
    """`row`: a `CaseEventRow` or a SQL row with the same columns."""
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return json.dumps(
        {
            "case_id": row.case_id,
            "seq": row.seq if seq is None else seq,
            "kind": row.kind,
            "at": at.astimezone(UTC).isoformat(),
            "actor": row.actor,
            "data": row.data,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )


def entry_hash(prev_hash: str, row: Any, seq: int | None = None) -> str:
    return hashlib.sha256(f"{prev_hash}|{_canonical(row, seq)}".encode()).hexdigest()


_T = CaseEventRow.__table__  # type: ignore[attr-defined]
_LAST_SEALED = (
    sql_select(_T.c.seq, _T.c.hash)
    .where(_T.c.case_id == bindparam("cid"), _T.c.hash.is_not(None))
    .order_by(_T.c.seq.desc())
    .limit(1)
)
_UNSEALED = (
    sql_select(_T.c.id, _T.c.case_id, _T.c.seq, _T.c.kind, _T.c.at, _T.c.actor, _T.c.data)
    .where(_T.c.case_id == bindparam("cid"), _T.c.hash.is_(None))
    .order_by(_T.c.seq)
)
_SEAL = (
    update(_T)
    .where(_T.c.id == bindparam("row_id"))
    .values(prev_hash=bindparam("new_prev"), hash=bindparam("new_hash"))
)


def seal(conn: Connection | Session, case_id: str) -> None:
    """Seal every entry that directly follows the sealed part of the chain.

    Entries may arrive out of order (a clock fires while a task is being completed); an
    entry after a gap waits until the gap is filled. Sealing is deterministic, so two
    writers sealing the same entries write the same hashes. Prepared SQL, no ORM: this
    runs inside every projection's write transaction.
    """
    last = conn.execute(_LAST_SEALED, {"cid": case_id}).first()
    pending = conn.execute(_UNSEALED, {"cid": case_id}).all()
    prev, expected = (last.hash, last.seq + 1) if last is not None else (GENESIS, 1)
    sealed: list[dict[str, Any]] = []
    for row in pending:
        if row.seq != expected:
            break
        h = entry_hash(prev, row)
        sealed.append({"row_id": row.id, "new_prev": prev, "new_hash": h})
        prev, expected = h, expected + 1
    if sealed:
        conn.execute(_SEAL, sealed)


# Cases whose new entries wait for the end of a `sealed_together` block (None: outside one).
_unsealed: ContextVar[dict[str, None] | None] = ContextVar("casework_unsealed", default=None)


def seal_after_write(conn: Connection | Session, case_id: str) -> None:
    """Seal a case's new entries now, or once at the end of the enclosing
    `sealed_together` block."""
    pending = _unsealed.get()
    if pending is None:
        seal(conn, case_id)
    else:
        pending[case_id] = None


@contextmanager
def sealed_together(conn: Connection | Session) -> Iterator[None]:
    """Entries written inside the block are sealed when it ends, once per case.

    A batch writes several entries of one case (a breach: the clock event, the escalated
    tasks, the supervisors' notice); sealing them one by one reads the chain again for each.
    Sealing is deterministic, so the hashes are the same either way. Nothing is sealed if
    the block fails: its transaction is rolled back."""
    cases: dict[str, None] = {}
    token = _unsealed.set(cases)
    try:
        yield
    finally:
        _unsealed.reset(token)
    for case_id in cases:
        seal(conn, case_id)


class ChainProblem(BaseModel):
    seq: int
    problem: str  # altered | missing | reordered | unsealed
    detail: str


class ChainReport(BaseModel):
    case_id: str
    entries: int
    intact: bool
    head: str | None
    problems: list[ChainProblem]


def verify_chain(s: Session, case_id: str) -> ChainReport:
    rows = s.exec(
        select(CaseEventRow).where(CaseEventRow.case_id == case_id).order_by(col(CaseEventRow.id))
    ).all()
    by_seq = sorted(rows, key=lambda r: r.seq)
    problems: list[ChainProblem] = []
    prev, expected = GENESIS, 1
    for row in by_seq:
        while row.seq > expected:
            problems.append(
                ChainProblem(
                    seq=expected, problem="missing", detail=f"entry {expected} was deleted"
                )
            )
            expected += 1
        expected = row.seq + 1
        if not row.hash:
            problems.append(
                ChainProblem(seq=row.seq, problem="unsealed", detail="entry not sealed yet")
            )
            continue
        content_ok = entry_hash(row.prev_hash or "", row) == row.hash
        if not content_ok:
            # Sealed content that is intact but sits at another position was moved.
            origin = next(
                (
                    o.seq
                    for o in rows
                    if o.seq != row.seq and entry_hash(row.prev_hash or "", row, o.seq) == row.hash
                ),
                None,
            )
            if origin is not None:
                problems.append(
                    ChainProblem(
                        seq=row.seq,
                        problem="reordered",
                        detail=f"entry {row.seq} holds entry {origin}'s content",
                    )
                )
            else:
                problems.append(
                    ChainProblem(
                        seq=row.seq,
                        problem="altered",
                        detail=f"entry {row.seq} ({row.kind}) was changed after sealing",
                    )
                )
        elif row.prev_hash != prev and not any(
            p.problem == "missing" and p.seq == row.seq - 1 for p in problems
        ):
            problems.append(
                ChainProblem(
                    seq=row.seq,
                    problem="reordered",
                    detail=f"entry {row.seq} does not follow entry {row.seq - 1}",
                )
            )
        prev = row.hash
    return ChainReport(
        case_id=case_id,
        entries=len(rows),
        intact=not problems,
        head=by_seq[-1].hash if by_seq else None,
        problems=problems,
    )


# --------------------------------------------------------------------------- human text

TEXTS: dict[str, dict[str, str]] = {
    "case_started": {
        "en": "Case started by {actor} ({role}) through {channel}, rules {ruleset_version}",
        "ru": "Дело начато: {actor} ({role}), канал {channel}, правила {ruleset_version}",
        "kk": "Іс басталды: {actor} ({role}), арна {channel}, қағидалар {ruleset_version}",
    },
    "status": {"en": "Status: {status}", "ru": "Статус: {status}", "kk": "Мәртебе: {status}"},
    "task_opened": {
        "en": "Task {task} opened for {role}",
        "ru": "Открыта задача {task} для роли {role}",
        "kk": "{role} үшін {task} тапсырмасы ашылды",
    },
    "task_claimed": {
        "en": "{actor} claimed task {task_id}",
        "ru": "{actor} взял(а) задачу {task_id}",
        "kk": "{actor} {task_id} тапсырмасын алды",
    },
    "task_released": {
        "en": "{actor} released task {task_id}",
        "ru": "{actor} вернул(а) задачу {task_id} в очередь",
        "kk": "{actor} {task_id} тапсырмасын кезекке қайтарды",
    },
    "task_reassigned": {
        "en": "{actor} reassigned task {task_id} from {from_user} to {to_user} ({reason})",
        "ru": "{actor} передал(а) задачу {task_id} от {from_user} к {to_user} ({reason})",
        "kk": "{actor} {task_id} тапсырмасын {from_user} қызметкерден {to_user} қызметкерге берді ({reason})",
    },
    "task_completed": {
        "en": "{actor} completed task {task_id} with {form}",
        "ru": "{actor} выполнил(а) задачу {task_id}: {form}",
        "kk": "{actor} {task_id} тапсырмасын орындады: {form}",
    },
    "task_escalated": {
        "en": "Task {task_id} escalated ({action}) after the {clock} deadline",
        "ru": "Задача {task_id} эскалирована ({action}) после срока {clock}",
        "kk": "{clock} мерзімінен кейін {task_id} тапсырмасы жоғарыға жіберілді ({action})",
    },
    "task_cancelled": {
        "en": "Task {task_id} cancelled: {reason}",
        "ru": "Задача {task_id} отменена: {reason}",
        "kk": "{task_id} тапсырмасы тоқтатылды: {reason}",
    },
    "notification": {
        "en": "Notice '{notice}' sent to {to}",
        "ru": "Уведомление «{notice}» направлено: {to}",
        "kk": "«{notice}» хабарламасы жіберілді: {to}",
    },
    "decision_issued": {
        "en": "Decision {number} issued: {outcome}; grounds {grounds}; document SHA-256 {sha256}",
        "ru": "Выдано решение {number}: {outcome}; основания {grounds}; SHA-256 документа {sha256}",
        "kk": "{number} шешімі шығарылды: {outcome}; негіздер {grounds}; құжаттың SHA-256 {sha256}",
    },
    "hearing_closed": {
        "en": "Hearing closed",
        "ru": "Заслушивание завершено",
        "kk": "Тыңдау аяқталды",
    },
    "objection_received": {
        "en": "Objection received from {actor}: {text}",
        "ru": "Получено возражение от {actor}: {text}",
        "kk": "{actor} қарсылық берді: {text}",
    },
    "fee_paid": {
        "en": "Fee paid: {amount_kzt} KZT ({payment_id})",
        "ru": "Сбор оплачен: {amount_kzt} тенге ({payment_id})",
        "kk": "Алым төленді: {amount_kzt} теңге ({payment_id})",
    },
}

CLOCK_TEXTS = {
    "en": "Clock '{clock}' ({step}): {what}; deadline {deadline}. {explanation}",
    "ru": "Срок «{clock}» ({step}): {what}; срок истекает {deadline}. {explanation}",
    "kk": "«{clock}» мерзімі ({step}): {what}; мерзім {deadline}. {explanation}",
}
CLOCK_WHAT = {
    "started": {"en": "started", "ru": "начат", "kk": "басталды"},
    "at_risk": {"en": "at risk", "ru": "под угрозой", "kk": "қауіп төнді"},
    "breached": {"en": "breached", "ru": "нарушен", "kk": "бұзылды"},
    "suspended": {"en": "suspended", "ru": "приостановлен", "kk": "тоқтатыла тұрды"},
    "resumed": {"en": "resumed", "ru": "возобновлён", "kk": "жалғастырылды"},
    "extended": {"en": "extended", "ru": "продлён", "kk": "ұзартылды"},
    "stopped": {"en": "stopped", "ru": "остановлен", "kk": "тоқтатылды"},
}


class _Safe(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "—"


def describe(row: CaseEventRow, lang: str) -> str:
    data = _Safe(
        {
            k: (json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v)
            for k, v in row.data.items()
        }
    )
    data.setdefault("actor", row.actor)
    if row.kind.startswith("clock_"):
        what = CLOCK_WHAT.get(row.kind.removeprefix("clock_"), {}).get(lang, row.kind)
        return CLOCK_TEXTS[lang].format_map(_Safe({**data, "what": what}))
    template = TEXTS.get(row.kind, {}).get(lang)
    if template is None:
        # Procedure-specific entries (quota movements, checks, settlement...) read as data.
        details = ", ".join(f"{k}={v}" for k, v in row.data.items() if k != "application")
        return f"{row.kind}: {details}" if details else row.kind
    return template.format_map(data)


def timeline(s: Session, case_id: str, lang: str) -> list[dict[str, Any]]:
    rows = s.exec(
        select(CaseEventRow).where(CaseEventRow.case_id == case_id).order_by(col(CaseEventRow.seq))
    ).all()
    return [
        {
            "seq": r.seq,
            "at": (r.at if r.at.tzinfo else r.at.replace(tzinfo=UTC)).isoformat(),
            "actor": r.actor,
            "kind": r.kind,
            "text": describe(r, lang),
            "data": r.data,
            "prev_hash": r.prev_hash,
            "hash": r.hash,
        }
        for r in rows
    ]
