"""Per-request id, JSON log event and Prometheus metrics; GET /metrics."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, raw

from server import metrics

log = structlog.get_logger("server.api")
bp = Blueprint("observability")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def route_label(request: Request) -> str:
    """The route's pattern (bounded label values), not the path a client sent."""
    return request.route.path if request.route else "unmatched"


@bp.get("/metrics")
async def prometheus_metrics(request: Request) -> HTTPResponse:
    return raw(generate_latest(), content_type=CONTENT_TYPE_LATEST)


async def start_request(request: Request) -> None:
    given = request.headers.get("x-request-id", "")
    request.ctx.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    request.ctx.started = time.perf_counter()
    # Every log line of this request (its task, and threads it hands work to) carries its id.
    structlog.contextvars.clear_contextvars()  # keep-alive: one task serves many requests
    structlog.contextvars.bind_contextvars(request_id=request.ctx.request_id)


# Sanic runs any method token a client sends; as a label each would add series for good.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


async def finish_request(request: Request, response: HTTPResponse) -> None:
    started = getattr(request.ctx, "started", None)
    if started is None:
        return
    latency = time.perf_counter() - started
    route = route_label(request)
    response.headers["x-request-id"] = request.ctx.request_id
    method = request.method if request.method in _METHODS else "other"
    metrics.REQUESTS.labels(method, route, str(response.status)).inc()
    metrics.REQUEST_LATENCY.labels(method, route).observe(latency)
    log.info(
        "request",
        method=request.method,
        path=request.path,
        status=response.status,
        latency_ms=round(latency * 1000, 2),
        request_id=request.ctx.request_id,
        **({"user": request.ctx.user} if getattr(request.ctx, "user", None) else {}),
    )


def install(app: Sanic) -> None:
    """Request middleware applies to every route, so it is registered on the app, not the blueprint."""
    app.register_middleware(start_request, "request")
    app.register_middleware(finish_request, "response")
    app.blueprint(bp)
