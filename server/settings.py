"""Server settings: one object built from the command line (and environment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """Bounds checked at the edge, before a request reaches a model (each answers 400 naming the field,
    413 for the body size). See the README's "Limits and errors"."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_json_depth: int = 64
    max_list_items: int = 4096  # any JSON array in a request body (messages, inputs, documents, ...)
    max_string_chars: int = 1_000_000  # any JSON string in a request body
    max_key_chars: int = 256  # any object key
    max_total_values: int = 300_000  # every value in a body together (OpenAI: 300,000 tokens per embeddings call)
    max_stop_chars: int = 256  # one stop string
    max_schema_bytes: int = 32 * 1024  # response_format.json_schema.schema, serialized
    max_schema_depth: int = 16  # nesting of that schema's sub-schemas


@dataclass(frozen=True)
class Settings:
    model_repository: Path
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: str = "auto"  # json | console | auto (json unless stderr is a TTY)
    log_level: str = "info"
    # A change is acted on once the repository has been quiet this long, so that a model being
    # copied in is not loaded half-written.
    settle_seconds: float = 1.0
    # Ceiling of settling: under a steady stream of writes a change is still applied this long after
    # it (what is still being written is held back).
    settle_max_seconds: float = 10.0
    # Full rescan period: covers filesystems that deliver no events (NFS, some bind mounts).
    rescan_seconds: float = 10.0
    # Model versions loaded at once (threads of their own; scanning and releasing have separate ones).
    load_workers: int = 2
    # Deadline of one request (None: none); config.json's request_timeout_s overrides it per model.
    request_timeout_s: float | None = None
    limits: Limits = field(default_factory=Limits)
    # SIGTERM: in-flight requests get this long to finish before their connections are closed.
    shutdown_timeout_s: float = 30.0
    # API keys (see server/api/security.py): a file of keys (one per line, re-read on change) and/or API_KEY.
    api_key_file: Path | None = None
    api_key: str | None = None
    protect_metrics: bool = False  # /metrics needs a key too
    # CORS is off unless origins are listed ("*": any); other origins get 403.
    allowed_origins: tuple[str, ...] = ()
    allowed_methods: tuple[str, ...] = ("GET", "POST", "OPTIONS")
    allowed_headers: tuple[str, ...] = ("Authorization", "Content-Type", "X-Request-Id")
    # Per-task defaults for config.json fields that have no schema default (admission control, stalls).
    model_defaults: dict[str, dict] = field(default_factory=lambda: model_defaults())


def model_defaults(*, max_queued_requests: int = 64, stall_timeout_s: float = 120.0,
                   max_queued_items: int = 8192) -> dict[str, dict]:
    return {
        "text_generation": {"max_queued_requests": max_queued_requests, "stall_timeout_s": stall_timeout_s},
        "embeddings": {"max_queued_items": max_queued_items},
        "rerank": {"max_queued_items": max_queued_items},
    }
