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


class Overloaded(ServerError):
    status = 503
    error_type = "service_unavailable"
    code = "overloaded"
