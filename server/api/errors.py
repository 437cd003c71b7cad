"""Error rendering: one handler, one envelope per route family, no library internals leaked.

- OpenAI routes (/v3/...):   {"error": {"message", "type", "param", "code"}}
- Cohere routes:            {"message": ...}
- TF Serving / KServe:      {"error": "..."}

Every error answered here is counted in ovms_requests_rejected_total{route, reason}: one place, so no
refusal (429, 400, 413, 404, 503, 504, ...) escapes the count. Errors inside a stream that already
started (server/api/sse.py) are part of a 200 response, not refusals.
"""

from __future__ import annotations

from typing import Callable

import structlog
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, json

from server import metrics
from server.api.observability import route_label
from server.errors import ServerError

log = structlog.get_logger("server.api")

COHERE_PATHS = ("/v3/rerank", "/v3/v1/rerank", "/v3/v2/rerank", "/v3/v1/embed", "/v3/v2/embed")

_SANIC_MESSAGES = {
    400: "The request could not be parsed: check that the body is valid JSON",
    404: "No such route",
    405: "This route does not accept that method",
    408: "The request took too long to arrive",
    413: "The request body is too large (see --max-body-bytes)",
}


def openai_envelope(error: ServerError) -> dict:
    return {"error": {"message": error.message, "type": error.error_type, "param": error.param, "code": error.code}}


def cohere_envelope(error: ServerError) -> dict:
    return {"message": error.message}


def plain_envelope(error: ServerError) -> dict:
    return {"error": error.message}


def envelope_for(path: str) -> Callable[[ServerError], dict]:
    if path.rstrip("/") in COHERE_PATHS:
        return cohere_envelope
    if path.startswith("/v3"):
        return openai_envelope
    return plain_envelope


def as_server_error(exc: Exception) -> ServerError:
    """Translate anything raised while serving into our taxonomy, with our own wording."""
    if isinstance(exc, ServerError):
        return exc
    if isinstance(exc, SanicException) and exc.status_code == 413 and "header" in str(exc).lower():
        # Sanic refuses oversized headers (8 KiB in all) with the same exception as oversized bodies
        error = ServerError("The request headers are too large (8 KiB in all at most)")
        error.status, error.error_type, error.code = 431, "invalid_request_error", "headers_too_large"
        return error
    if isinstance(exc, SanicException) and exc.status_code < 500:
        error = ServerError(_SANIC_MESSAGES.get(exc.status_code, "The request was rejected"))
        error.status = exc.status_code
        error.error_type = "invalid_request_error" if exc.status_code != 404 else "not_found_error"
        return error
    return ServerError("The server failed to process the request; the error was logged")


def rejection_reason(error: ServerError) -> str:
    """The error's code (a fixed word from our taxonomy, never client text), else its HTTP status."""
    return error.code or str(error.status)


async def handle_exception(request: Request, exc: Exception) -> HTTPResponse:
    error = as_server_error(exc)
    if error.status >= 500 and not isinstance(exc, ServerError):
        log.error("unhandled_error", path=request.path, request_id=getattr(request.ctx, "request_id", None),
                  exc_info=exc)
    metrics.REJECTED.labels(route_label(request), rejection_reason(error)).inc()
    headers = {**error.headers, **({"Retry-After": "1"} if error.status in (429, 503) else {})}
    return json(envelope_for(request.path)(error), status=error.status, headers=headers)


def install(app: Sanic) -> None:
    app.error_handler.add(Exception, handle_exception)
