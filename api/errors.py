"""RFC 9457 problem details, with field-level `errors`, mapped in one place."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

PROBLEM_BASE = "https://casework.example.kz/problems/"

# Business failure types raised by workflows and activities → HTTP status.
STATUS_FOR_TYPE = {
    "InvalidForm": 422,
    "InvalidPayment": 422,
    "Forbidden": 403,
    "TaskNotFound": 404,
    "TaskClosed": 409,
    "TaskClaimed": 409,
    "CaseState": 409,
    "HearingRequired": 409,
}


class Problem(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        kind: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind or title.lower().replace(" ", "-")
        self.errors = errors or []
        self.headers = headers
        self.extra = extra


def problem_body(p: Problem, instance: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + p.kind,
        "title": p.title,
        "status": p.status,
        "detail": p.detail,
        "instance": instance,
    }
    if p.errors:
        body["errors"] = p.errors
    body.update(p.extra)
    return body


def respond(p: Problem, request: Request) -> JSONResponse:
    return JSONResponse(
        problem_body(p, request.url.path),
        status_code=p.status,
        media_type="application/problem+json",
        headers=p.headers,
    )


def from_temporal(exc: BaseException) -> Problem:
    """A rejected update or a failed call, as the caller should see it."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else {}
        errors = details.get("errors", []) if isinstance(details, dict) else []
        kind = cause.type or "ApplicationError"
        status = STATUS_FOR_TYPE.get(kind, 422)
        return Problem(status, _title(kind), cause.message, kind=_slug(kind), errors=errors)
    if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
        return Problem(404, "Not found", "no such case workflow", kind="not-found")
    return Problem(503, "Engine unavailable", str(exc), kind="engine-unavailable")


def _slug(kind: str) -> str:
    out = "".join("-" + c.lower() if c.isupper() else c for c in kind).lstrip("-")
    return out


def _title(kind: str) -> str:
    return _slug(kind).replace("-", " ").capitalize()


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return respond(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            loc = [str(p) for p in e["loc"]]
            if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
                loc = loc[1:]
            errors.append({"name": ".".join(loc) or "body", "reason": e["msg"]})
        return respond(
            Problem(
                422,
                "Invalid request",
                "the request has invalid fields",
                kind="invalid-request",
                errors=errors,
            ),
            request,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return respond(
            Problem(
                exc.status_code,
                str(exc.detail),
                str(exc.detail),
                headers=getattr(exc, "headers", None),
            ),
            request,
        )

    @app.exception_handler(WorkflowUpdateFailedError)
    async def _update_failed(request: Request, exc: WorkflowUpdateFailedError) -> JSONResponse:
        return respond(from_temporal(exc), request)
