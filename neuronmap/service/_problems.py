"""Errors as RFC 9457 ``application/problem+json`` documents, never with a stack trace.

Every error response of the API has ``type``, ``title``, ``status`` and ``detail`` (and
``errors`` for request validation, one entry per bad field). Unexpected exceptions are logged on
the server with their traceback and answered with a generic 500 that names no internals.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from neuronmap.errors import InvalidParameterError, NeuronMapError

__all__ = ["PROBLEM_TYPE", "Problem", "install_handlers", "problem_response"]

PROBLEM_TYPE = "https://neuronmap.dev/problems/"
_log = logging.getLogger("neuronmap.service")


class Problem(NeuronMapError):
    """An error with an HTTP status, raised by route code and rendered as problem+json.

    Args:
        status: HTTP status code.
        detail: What went wrong, what was received and what is allowed.
        slug: The last part of the problem ``type`` URI (default: from the status).
        headers: Extra response headers (``WWW-Authenticate`` for 401).
    """

    def __init__(self, status: int, detail: str, *, slug: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or HTTPStatus(status).phrase.lower().replace(" ", "-")
        self.headers = headers or {}
        self.extra = extra


def problem_response(status: int, detail: str, *, slug: str | None = None, instance: str | None = None,
                     headers: dict[str, str] | None = None, **extra: Any) -> Any:
    from fastapi.responses import JSONResponse

    body = {"type": PROBLEM_TYPE + (slug or HTTPStatus(status).phrase.lower().replace(" ", "-")),
            "title": HTTPStatus(status).phrase, "status": status, "detail": detail, **extra}
    if instance:
        body["instance"] = instance
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def install_handlers(app: Any) -> None:
    """Route every error through :func:`problem_response`."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    async def on_problem(request: Any, exc: Problem) -> Any:
        return problem_response(exc.status, exc.detail, slug=exc.slug, instance=request.url.path,
                                headers=exc.headers, **exc.extra)

    async def on_http(request: Any, exc: StarletteHTTPException) -> Any:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route {request.method} {request.url.path}; the API is described at /api/v1/openapi.json."
        return problem_response(exc.status_code, detail, instance=request.url.path,
                                headers=getattr(exc, "headers", None))

    async def on_validation(request: Any, exc: RequestValidationError) -> Any:
        errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", ""),
                   "received": _short(e.get("input"))} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']} (got {e['received']})" for e in errors)
        return problem_response(422, f"Invalid request: {detail}.", slug="invalid-request",
                                instance=request.url.path, errors=errors)

    async def on_invalid(request: Any, exc: InvalidParameterError) -> Any:
        return problem_response(422, str(exc), slug="invalid-parameter", instance=request.url.path)

    async def on_neuronmap(request: Any, exc: NeuronMapError) -> Any:
        return problem_response(422, str(exc), slug="neuronmap-error", instance=request.url.path)

    async def on_unexpected(request: Any, exc: Exception) -> Any:
        _log.exception("Unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "The server could not answer this request; the error is in its log.",
                                instance=request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(InvalidParameterError, on_invalid)
    app.add_exception_handler(NeuronMapError, on_neuronmap)
    app.add_exception_handler(Exception, on_unexpected)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
