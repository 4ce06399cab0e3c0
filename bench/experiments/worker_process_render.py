"""Experiment `process-render`: the engine worker as `casework.cli worker` runs it, except
that the decision step renders its PDF (WeasyPrint) in a process pool of `nproc - 1`
processes at a lower CPU priority (nice 10; one core stays for the worker's event
loop) instead of on the worker's activity threads, so rendering no longer holds the
worker's GIL while workflow tasks wait.

Recommended change in the engine: `activities/documents.py` `DocumentRenderer.render_pdf`
(or `DecisionActivities`) hands the HTML to a `ProcessPoolExecutor` (forkserver context,
warmed at worker start) and waits for the bytes.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading

from activities import decisions
from activities.documents import DocumentContext, DocumentRenderer

_pool: concurrent.futures.ProcessPoolExecutor | None = None
_lock = threading.Lock()


def render(html: str, base_url: str) -> bytes:
    from weasyprint import HTML

    pdf = HTML(string=html, base_url=base_url).write_pdf()
    assert pdf is not None
    return bytes(pdf)


def _lower_priority() -> None:
    os.nice(10)  # the worker's event loop and the Temporal server come first


def _warm() -> bool:
    from weasyprint import HTML

    HTML(string="<p>Қазақстан</p>").write_pdf()
    return True


def pool() -> concurrent.futures.ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            n = max(1, (os.cpu_count() or 2) - 1)
            _pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=n,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=_lower_priority,
            )
            for f in [_pool.submit(_warm) for _ in range(n)]:
                f.result()
        return _pool


class ProcessPoolRenderer(DocumentRenderer):
    def render_pdf(self, ctx: DocumentContext) -> bytes:
        html = self.render_html(ctx)
        return pool().submit(render, html, str(self.template_dir)).result()


def main() -> None:
    # By its package name, so the pool's processes unpickle `render` from this module
    # rather than from `__main__`.
    from bench.experiments import worker_process_render as this

    decisions.DocumentRenderer = this.ProcessPoolRenderer  # type: ignore[misc]
    this.pool()  # warm before the worker polls
    from casework.cli import cmd_worker

    cmd_worker(None)  # type: ignore[arg-type]  # ends with os._exit


if __name__ == "__main__":
    main()
