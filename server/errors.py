"""One error taxonomy for the whole server.

Domain code raises these; the API layer maps each class to an HTTP status and renders the
envelope of the route family (OpenAI or Cohere). Messages are written for users: never put a
library's exception text in them.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error a client may see."""

    status: int = 500
    error_type: str = "internal_error"
    code: str | None = None
    headers: dict[str, str] = {}  # extra response headers (Retry-After is added for 429 and 503)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class BadRequest(ServerError):
    status = 400
    error_type = "invalid_request_error"


class Unsupported(BadRequest):
    """A parameter the API defines but this server does not implement."""

    code = "unsupported_parameter"


class ModelNotFound(ServerError):
    status = 404
    error_type = "not_found_error"
    code = "model_not_found"


class NotFound(ServerError):
    status = 404
    error_type = "not_found_error"


class Conflict(ServerError):
    status = 409
    error_type = "conflict_error"


class ModelNotReady(ServerError):
    status = 503
    error_type = "service_unavailable"
    code = "model_not_ready"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "request_too_large"


class Overloaded(ServerError):
    """Bounded waiting work is full: try again later (answered at once, with Retry-After)."""

    status = 429
    error_type = "rate_limit_exceeded"
    code = "queue_full"


class EngineFailure(ServerError):
    """The inference engine failed on a request it had accepted (logged with its traceback)."""

    status = 500
    error_type = "internal_error"
    code = "engine_failure"


class DeadlineExceeded(ServerError):
    """The request ran past its configured deadline; its engine work was cancelled."""

    status = 504
    error_type = "timeout"
    code = "request_timeout"


class Unauthorized(ServerError):
    """No valid API key (the openai and cohere SDKs raise their authentication errors on 401)."""

    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServerError):
    status = 403
    error_type = "permission_error"
    code = "origin_not_allowed"


class UnsupportedMediaType(ServerError):
    status = 415
    error_type = "invalid_request_error"
    code = "unsupported_media_type"
