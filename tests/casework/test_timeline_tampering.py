"""The case timeline is hash-chained: altering, deleting or reordering entries is detected and named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from activities.case import add_event
from casework.contracts import CaseEventIn
from casework.db import CaseEventRow
from casework.timeline import describe, sealed_together, timeline, verify_chain

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def entry(case_id: str, seq: int) -> CaseEventIn:
    return CaseEventIn(
        case_id=case_id,
        seq=seq,
        kind="task_completed",
        at=T0 + timedelta(minutes=seq),
        actor=f"cw-{seq}",
        data={"task_id": f"T{seq}", "form": {"outcome": "complete", "n": seq}},
    )


def write(engine: Engine, case_id: str, seqs: list[int]) -> None:
    for seq in seqs:
        with Session(engine) as s:
            add_event(s, entry(case_id, seq))
            s.commit()


def rows(engine: Engine, case_id: str) -> list[CaseEventRow]:
    with Session(engine) as s:
        return list(
            s.exec(
                select(CaseEventRow)
                .where(CaseEventRow.case_id == case_id)
                .order_by(CaseEventRow.seq)
            )
        )


def test_entries_arriving_out_of_order_are_sealed_once_the_gap_fills(engine: Engine) -> None:
    write(engine, "C1", [1, 2, 4, 5])
    assert [r.hash is not None for r in rows(engine, "C1")] == [True, True, False, False]
    write(engine, "C1", [3])
    with Session(engine) as s:
        report = verify_chain(s, "C1")
    assert report.intact and report.entries == 5 and report.head == rows(engine, "C1")[-1].hash


def test_a_batch_seals_its_entries_once_at_its_end_with_the_same_hashes(engine: Engine) -> None:
    write(engine, "C7", [1, 2, 3, 4])
    one_by_one = [(r.seq, r.prev_hash, r.hash) for r in rows(engine, "C7")]
    with Session(engine) as s:
        for r in s.exec(select(CaseEventRow).where(CaseEventRow.case_id == "C7")):
            s.delete(r)
        s.commit()
    with Session(engine) as s:
        with sealed_together(s):
            for seq in (1, 2, 3, 4):
                add_event(s, entry("C7", seq))
            inside = s.exec(select(CaseEventRow.hash).where(CaseEventRow.case_id == "C7")).all()
        s.commit()
    assert inside == [None, None, None, None]
    assert [(r.seq, r.prev_hash, r.hash) for r in rows(engine, "C7")] == one_by_one
    with Session(engine) as s:
        assert verify_chain(s, "C7").intact


def test_an_altered_entry_is_named(engine: Engine) -> None:
    write(engine, "C2", [1, 2, 3, 4])
    with Session(engine) as s:
        row = s.exec(
            select(CaseEventRow).where(CaseEventRow.case_id == "C2", CaseEventRow.seq == 3)
        ).one()
        row.data = {**row.data, "form": {"outcome": "incomplete"}}
        s.add(row)
        s.commit()
        report = verify_chain(s, "C2")
    assert not report.intact
    assert [(p.seq, p.problem) for p in report.problems] == [(3, "altered")]


def test_a_deleted_entry_is_named(engine: Engine) -> None:
    write(engine, "C3", [1, 2, 3, 4])
    with Session(engine) as s:
        s.delete(
            s.exec(
                select(CaseEventRow).where(CaseEventRow.case_id == "C3", CaseEventRow.seq == 2)
            ).one()
        )
        s.commit()
        report = verify_chain(s, "C3")
    assert ("missing", 2) in [(p.problem, p.seq) for p in report.problems]


def test_two_swapped_entries_are_named(engine: Engine) -> None:
    write(engine, "C4", [1, 2, 3, 4])
    with Session(engine) as s:
        a = s.exec(
            select(CaseEventRow).where(CaseEventRow.case_id == "C4", CaseEventRow.seq == 2)
        ).one()
        b = s.exec(
            select(CaseEventRow).where(CaseEventRow.case_id == "C4", CaseEventRow.seq == 3)
        ).one()
        # Swap what the two rows say (content and seals), keeping their positions.
        for field in ("kind", "at", "actor", "data", "prev_hash", "hash"):
            va, vb = getattr(a, field), getattr(b, field)
            setattr(a, field, vb)
            setattr(b, field, va)
        s.add(a)
        s.add(b)
        s.commit()
        report = verify_chain(s, "C4")
    assert not report.intact
    assert {(p.seq, p.problem) for p in report.problems} >= {(2, "reordered"), (3, "reordered")}


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
def test_timeline_reads_in_three_languages(engine: Engine, lang: str) -> None:
    write(engine, "C5", [1])
    with Session(engine) as s:
        entries = timeline(s, "C5", lang)
        text = describe(s.exec(select(CaseEventRow)).first(), lang)  # type: ignore[arg-type]
    assert entries[0]["text"] == text and "cw-1" in text and "T1" in text
    assert {"en": "completed", "ru": "выполнил", "kk": "орындады"}[lang] in text
