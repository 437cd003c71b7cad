"""Prometheus metrics, defined once. Exposed at GET /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("ovms_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
REQUEST_LATENCY = Histogram(
    "ovms_http_request_duration_seconds", "Time to answer an HTTP request (to the last byte)", ["method", "route"]
)
VERSION_STATE = Gauge("ovms_model_version_state", "1 for the state each model version is in", ["model", "version", "state"])
MODEL_LOADS = Counter("ovms_model_loads_total", "Model version load attempts", ["model", "outcome"])
LOAD_SECONDS = Histogram(
    "ovms_model_load_duration_seconds", "Time to load one model version", ["model"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
)
GENERATION_ACTIVE = Gauge("ovms_generation_requests_active", "Sequences the generation engine is running", ["model", "version"])
GENERATED_TOKENS = Counter("ovms_generated_tokens_total", "Tokens generated", ["model", "version"])
BATCH_SIZE = Histogram("ovms_batch_size", "Items per micro-batched pipeline call (embeddings, rerank)", ["model"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
