"""The bilingual (Kazakh + Russian) decision document: HTML from Jinja2, PDF from WeasyPrint.

The decision step renders the PDF, hashes it, stores it and registers it; this module only
turns a `DecisionRequest` plus its register data into a document, and derives the
verification code printed on it.

Subject lines (`DecisionRequest.subject`) are printed in both language sections. A label
written as "kk label / ru label" is split, so each section shows its own language; any
other label is printed as given.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import segno
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel

from casework.contracts import DecisionOutcome, DecisionRequest
from casework.regions import REGION_NAMES

DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "document_templates"
TEMPLATE_NAME = "decision.html"

# Kazakhstan has kept one time zone, UTC+5, since 1 March 2024. A fixed offset keeps the
# printed dates independent of the tz database installed on the worker.
KZ_TIME = timezone(timedelta(hours=5), "UTC+5")


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
    """Renders decision documents; one instance per worker, safe to share across threads."""

    def __init__(self, template_dir: Path | None = None) -> None:
        self.template_dir = (template_dir or DEFAULT_TEMPLATE_DIR).resolve()
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
        )

    def render_pdf(self, ctx: DocumentContext) -> bytes:
        """Blocking (0.2-0.3 s of CPU warm): call it from a sync activity on a thread pool."""
        # Imported here so that code needing only the context or the digest (API, tests,
        # workflow sandbox pass-through) does not load WeasyPrint, Pango and fontconfig.
        from weasyprint import HTML

        html = self.render_html(ctx)
        pdf = HTML(string=html, base_url=str(self.template_dir)).write_pdf()
        if pdf is None:  # only when a target file is given, which we never do
            raise RuntimeError("WeasyPrint returned no PDF bytes")
        return bytes(pdf)
