"""The bilingual (Kazakh + Russian) decision document: HTML from Jinja2, PDF from WeasyPrint.

The decision step renders the PDF, hashes it, stores it and registers it; this module only
turns a `DecisionRequest` plus its register data into a document, and derives the
verification code printed on it.

WeasyPrint holds the GIL for the whole render (0.1-0.3 s of CPU), and so would the QR
code (5 ms), so rendering on the worker's activity threads would delay its workflow tasks.
Documents are therefore rendered in a small process pool (one per worker process, created
on first use, `nproc - 1` processes at nice 10, so one core stays for the worker's event
loop): the activity thread hands the context over and waits for the PDF bytes with the GIL
released. A render process that dies breaks the pool; it is replaced and the render fails
with the retryable `RenderProcessCrashed`, so the (idempotent) decision step is retried.

Subject lines (`DecisionRequest.subject`) are printed in both language sections. A label
written as "kk label / ru label" is split, so each section shows its own language; any
other label is printed as given.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, date, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import segno
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel

from casework.contracts import DecisionOutcome, DecisionRequest
from casework.regions import REGION_NAMES

DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "document_templates"
TEMPLATE_NAME = "decision.html"
STYLESHEET_NAME = "decision.css"

# Kazakhstan has kept one time zone, UTC+5, since 1 March 2024. A fixed offset keeps the
# printed dates independent of the tz database installed on the worker.
KZ_TIME = timezone(timedelta(hours=5), "UTC+5")

P = ParamSpec("P")
R = TypeVar("R")


class IncompleteDecisionError(ValueError):
    """The request lacks what the law requires this outcome's document to state.

    Not worth retrying: the caller should fail the activity as non-retryable.
    """


class DocumentContext(BaseModel):
    request: DecisionRequest
    number: str  # register number, e.g. "WP-D-2026-000042"
    issued_at: datetime
    verification_code: str
    verify_url: str  # encoded in the QR code
    procedure_title_kk: str
    procedure_title_ru: str
    authority_kk: str
    authority_ru: str
    appeal_route_kk: str
    appeal_route_ru: str
    appeal_deadline: date | None


# --------------------------------------------------------------------------- code and digest


def _canonical_default(value: Any) -> Any:
    if isinstance(value, datetime):
        # One instant must hash the same whether it travelled as "+05:00" or "Z".
        return (value.astimezone(UTC) if value.tzinfo else value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"not canonicalisable: {type(value).__name__}")


def content_digest(ctx_without_code: DecisionRequest, number: str, issued_at: datetime) -> str:
    """SHA-256 (hex) of a canonical JSON of what the decision says.

    The idempotency key is left out: it identifies the request that asked for the
    document, not the content of the decision.
    """
    content = {
        "number": number,
        "issued_at": issued_at,
        "request": ctx_without_code.model_dump(mode="python", exclude={"idempotency_key"}),
    }
    canonical = json.dumps(
        content,
        default=_canonical_default,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def verification_code_for(number: str, content_digest: str) -> str:
    """Short code printed on the document: 16 hex digits of sha256(number|digest), 4-4-4-4."""
    head = hashlib.sha256(f"{number}|{content_digest}".encode()).hexdigest()[:16].upper()
    return "-".join(head[i : i + 4] for i in range(0, 16, 4))


def qr_svg_data_uri(url: str) -> str:
    """QR code of `url` as an SVG data URI: vector, so it stays sharp and adds no image."""
    return str(segno.make(url, error="m").svg_data_uri(border=4, dark="#000"))


# --------------------------------------------------------------------------- formatting


def _to_kz(value: datetime) -> datetime:
    return value.astimezone(KZ_TIME) if value.tzinfo else value


def format_date(value: date | datetime) -> str:
    if isinstance(value, datetime):
        value = _to_kz(value)
    return value.strftime("%d.%m.%Y")


def format_datetime(value: datetime) -> str:
    return _to_kz(value).strftime("%d.%m.%Y %H:%M")


def format_amount(value: int) -> str:
    # Kazakh and Russian official style: spaces between thousands, no decimals for tenge.
    return f"{value:,}".replace(",", " ")


def label_in(label: str, lang: str) -> str:
    parts = label.split(" / ")
    if len(parts) != 2:
        return label
    return parts[0] if lang == "kk" else parts[1]


# --------------------------------------------------------------------------- render processes


class RenderProcessCrashed(RuntimeError):
    """A render process died mid-render (the pool is replaced already): retry the step."""


@functools.cache
def _parsed_stylesheet(path: Path) -> Any:
    """A stylesheet as `weasyprint.CSS`, parsed once per process."""
    from weasyprint import CSS

    return CSS(filename=str(path))


def write_pdf(html: str, base_url: str, stylesheet: Path | None = None) -> bytes:
    """HTML to PDF with WeasyPrint, in the calling thread (blocking, holds the GIL).

    `stylesheet`: a CSS file applied from its parsed form, kept for the process's next
    documents (parsing it and compiling its selectors took a sixth of a render), for HTML
    rendered without its own link to it."""
    # Imported here so that code needing only the context or the digest (API, tests,
    # workflow sandbox pass-through) does not load WeasyPrint, Pango and fontconfig.
    from weasyprint import HTML

    sheets = [_parsed_stylesheet(stylesheet)] if stylesheet is not None else None
    pdf = HTML(string=html, base_url=base_url).write_pdf(stylesheets=sheets)
    if pdf is None:  # only when a target file is given, which we never do
        raise RuntimeError("WeasyPrint returned no PDF bytes")
    return bytes(pdf)


def render_pool_size() -> int:
    """One process per core but one: that core stays for the worker's event loop."""
    return max(1, (os.cpu_count() or 2) - 1)


def _exit_with_owner() -> None:
    # The worker leaves with os._exit (no atexit, no pool shutdown). Our parent is the
    # forkserver, which outlives the worker while we run: watch the worker itself (its
    # end of the pipe multiprocessing gave us closes when it dies) and leave with it.
    owner = multiprocessing.parent_process()
    if owner is not None:
        owner.join()
        os._exit(0)


def _init_render_process() -> None:
    """Runs once in each render process: low CPU priority, WeasyPrint loaded and warm."""
    os.nice(10)  # the worker's event loop and the Temporal server come first
    threading.Thread(target=_exit_with_owner, name="owner-watch", daemon=True).start()
    try:  # import WeasyPrint and load the fonts now, not during the first decision
        write_pdf("<p>Қазақстан Республикасы / Республика Казахстан</p>", ".")
    except Exception:  # noqa: BLE001 - a failing initializer breaks the pool; let the render say why
        pass


def _ready() -> bool:
    return True


_pool: ProcessPoolExecutor | None = None
_pool_pid = 0  # the process that created _pool: a forked child must not use its parent's
_pool_lock = threading.Lock()
_atexit_registered = False


def _mp_context() -> multiprocessing.context.BaseContext:
    # Never fork: the worker has SDK, gRPC and activity threads running.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _new_pool() -> ProcessPoolExecutor:
    global _atexit_registered
    pool = ProcessPoolExecutor(
        max_workers=render_pool_size(),
        mp_context=_mp_context(),
        initializer=_init_render_process,
    )
    if not _atexit_registered:
        atexit.register(shutdown_render_pool)
        _atexit_registered = True
    return pool


def render_pool() -> ProcessPoolExecutor:
    """This process's render pool, created on first use (thread-safe)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool, _pool_pid = _new_pool(), os.getpid()
        return _pool


def warm_render_pool(wait: bool = True) -> None:
    """Start (and warm) the render processes now rather than at the first decision."""
    pool = render_pool()
    futures = [pool.submit(_ready) for _ in range(render_pool_size())]
    if wait:
        for f in futures:
            f.result()


def _replace_broken_pool(broken: ProcessPoolExecutor) -> None:
    """Put a fresh pool in place of `broken`, unless another thread did so already."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is not broken:
            return
        _pool, _pool_pid = _new_pool(), os.getpid()
        fresh = _pool
    broken.shutdown(wait=False, cancel_futures=True)
    fresh.submit(_ready)  # starts a render process while the activity backs off


def shutdown_render_pool() -> None:
    """Stop the render processes (registered with atexit when the pool is created)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None and _pool_pid == os.getpid():
        pool.shutdown(wait=True, cancel_futures=True)


def in_render_pool(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`fn(*args)` in a render process; this thread waits with the GIL released.

    `fn`, its arguments and its result must pickle. Raises `RenderProcessCrashed` if a
    render process died (the pool is replaced first).
    """
    pool = render_pool()
    try:
        return pool.submit(fn, *args, **kwargs).result()
    except BrokenProcessPool as exc:
        _replace_broken_pool(pool)
        raise RenderProcessCrashed(
            "a render process died; the render pool was replaced, retry the decision step"
        ) from exc


# --------------------------------------------------------------------------- renderer


def _check_complete(ctx: DocumentContext) -> None:
    req = ctx.request
    missing: list[str] = []
    if req.outcome is DecisionOutcome.granted and req.procedure == "work_permit":
        missing += [
            name
            for name, value in (
                ("permit_number", req.permit_number),
                ("valid_from", req.valid_from),
                ("valid_to", req.valid_to),
            )
            if value is None
        ]
    elif req.outcome is DecisionOutcome.refused:
        # A refusal is a reasoned decision with an appeal route (Law No. 88-V, APC).
        if not req.grounds:
            missing.append("grounds")
        if ctx.appeal_deadline is None:
            missing.append("appeal_deadline")
    if missing:
        raise IncompleteDecisionError(
            f"decision {ctx.number} ({req.outcome.value}) lacks: {', '.join(missing)}"
        )


class DocumentRenderer:
    """Renders decision documents; one instance per worker, safe to share across threads.

    `process_pool=False` writes the PDF on the calling thread instead of in this
    process's render pool (holding the GIL meanwhile).
    """

    def __init__(self, template_dir: Path | None = None, *, process_pool: bool = True) -> None:
        self.template_dir = (template_dir or DEFAULT_TEMPLATE_DIR).resolve()
        self.process_pool = process_pool
        # Applicant text (names, reasoning, objections) is data, never markup.
        self.env = Environment(
            loader=FileSystemLoader(self.template_dir),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["d"] = format_date
        self.env.filters["dt"] = format_datetime
        self.env.filters["amount"] = format_amount
        self.env.filters["label_in"] = label_in

    def render_html(self, ctx: DocumentContext) -> str:
        """The decision as a complete HTML document (linking its stylesheet)."""
        return self._html(ctx, STYLESHEET_NAME)

    def _html(self, ctx: DocumentContext, stylesheet: str | None) -> str:
        _check_complete(ctx)
        region_kk, region_ru = REGION_NAMES[ctx.request.region]
        # Each procedure may have its own layout (the kandas one-window package).
        template = f"{ctx.request.template}.html" if ctx.request.template else TEMPLATE_NAME
        return self.env.get_template(template).render(
            ctx=ctx,
            req=ctx.request,
            outcome=ctx.request.outcome.value,
            region={"kk": region_kk, "ru": region_ru},
            qr_src=qr_svg_data_uri(ctx.verify_url),
            stylesheet=stylesheet,
        )

    def render_pdf(self, ctx: DocumentContext) -> bytes:
        """Blocking: call it from a sync activity on a thread pool.

        In the render pool (unless `process_pool` is off), this thread only waits: the
        whole document (HTML with its QR code, 5 ms; PDF, 0.1-0.3 s of CPU) is rendered
        there, its stylesheet applied from the form parsed once per render process. A
        subclass gets its own `render_html` called here, and only the PDF written in the
        pool. Raises `RenderProcessCrashed` (retryable) if a render process died.
        """
        base = str(self.template_dir)
        if type(self) is not DocumentRenderer:
            html = self.render_html(ctx)
            if not self.process_pool:
                return write_pdf(html, base)
            return in_render_pool(write_pdf, html, base)
        if not self.process_pool:
            return write_pdf(self._html(ctx, None), base, self.template_dir / STYLESHEET_NAME)
        _check_complete(ctx)  # fail here, without a round trip
        return in_render_pool(_render_in_child, self.template_dir, ctx)

    def warm(self) -> None:
        """Start the render processes now (e.g. before the worker polls): optional."""
        if self.process_pool:
            warm_render_pool()


_child_renderers: dict[Path, DocumentRenderer] = {}


def _render_in_child(template_dir: Path, ctx: DocumentContext) -> bytes:
    """Runs in a render process: one in-thread renderer per template folder."""
    renderer = _child_renderers.get(template_dir)
    if renderer is None:
        renderer = _child_renderers[template_dir] = DocumentRenderer(
            template_dir, process_pool=False
        )
    return renderer.render_pdf(ctx)
