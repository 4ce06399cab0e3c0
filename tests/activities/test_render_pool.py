"""Decision PDFs are written in a render process pool, off the worker's GIL.

A render process that dies must not lose a document: the pool is replaced, the render
fails retryably, and the retried decision step issues the same decision.
"""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from activities import documents
from activities.decisions import DecisionActivities
from activities.documents import (
    DocumentContext,
    DocumentRenderer,
    IncompleteDecisionError,
    RenderProcessCrashed,
)
from casework.db import DecisionRow
from tests.activities.test_decision_pdf import NUMBER, context, granted, pdf_text, refused


def crash_a_render_process() -> None:
    """Kill a render process mid-task, as a segfault in Pango would."""
    pool = documents.render_pool()
    with pytest.raises(BrokenProcessPool):
        pool.submit(os._exit, 70).result(timeout=60)


@pytest.fixture(scope="module")
def granted_ctx() -> DocumentContext:
    return context(granted())


def test_render_goes_through_the_low_priority_pool_and_yields_a_valid_pdf(
    granted_ctx: DocumentContext,
) -> None:
    pdf = DocumentRenderer().render_pdf(granted_ctx)

    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf)
    assert NUMBER in text
    assert "ШЕШІМ" in text.upper() or "РЕШЕНИЕ" in text.upper()
    pool = documents.render_pool()
    children = pool.submit(os.getpid).result(timeout=60)
    assert children != os.getpid()
    assert os.getpriority(os.PRIO_PROCESS, children) == os.getpriority(os.PRIO_PROCESS, 0) + 10
    assert pool._max_workers == max(1, (os.cpu_count() or 2) - 1)  # type: ignore[attr-defined]
    # The same document as the in-thread render (the switch for it).
    assert text == pdf_text(DocumentRenderer(process_pool=False).render_pdf(granted_ctx))


class CapturingRenderer(DocumentRenderer):
    last_html = ""

    def render_html(self, ctx: DocumentContext) -> str:
        self.last_html = super().render_html(ctx)
        return self.last_html


def test_a_subclass_renders_its_html_here_and_only_the_pdf_in_the_pool(
    granted_ctx: DocumentContext,
) -> None:
    renderer = CapturingRenderer()
    pdf = renderer.render_pdf(granted_ctx)

    assert NUMBER in renderer.last_html
    assert pdf_text(pdf) == pdf_text(DocumentRenderer().render_pdf(granted_ctx))


def test_an_incomplete_decision_fails_before_reaching_the_pool() -> None:
    ctx = context(refused().model_copy(update={"grounds": []}))

    with pytest.raises(IncompleteDecisionError, match="grounds"):
        DocumentRenderer().render_pdf(ctx)


def test_pool_is_created_once_per_process_and_shared() -> None:
    assert documents.render_pool() is documents.render_pool()


def test_broken_pool_is_replaced_and_the_render_fails_retryably(
    granted_ctx: DocumentContext,
) -> None:
    renderer = DocumentRenderer()
    renderer.render_pdf(granted_ctx)
    before = documents.render_pool()

    crash_a_render_process()
    with pytest.raises(RenderProcessCrashed):
        renderer.render_pdf(granted_ctx)

    after = documents.render_pool()
    assert after is not before
    assert NUMBER in pdf_text(renderer.render_pdf(granted_ctx))
    assert documents.render_pool() is after


class CrashingOnceRenderer(DocumentRenderer):
    """A render process dies during the first render."""

    crashed = False

    def render_pdf(self, ctx: DocumentContext) -> bytes:
        if not self.crashed:
            self.crashed = True
            crash_a_render_process()
        return super().render_pdf(ctx)


def test_a_crashed_render_loses_no_decision_the_retry_issues_it(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    step = DecisionActivities(
        sqlite_engine, tmp_path / "documents", "https://e.gov.example", CrashingOnceRenderer()
    )
    req = granted()

    with pytest.raises(RenderProcessCrashed):
        step.issue(req)  # the activity attempt fails; Temporal retries it
    record = step.issue(req)

    with Session(sqlite_engine) as s:
        rows = s.exec(select(DecisionRow)).all()
    assert [(r.number, r.status) for r in rows] == [(record.number, "issued")]
    pdf = Path(rows[0].document_path).read_bytes()
    assert record.number in pdf_text(pdf)
    assert record.verification_code is not None
    assert record.verification_code in pdf_text(pdf)
