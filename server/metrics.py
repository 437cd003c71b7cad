"""Prometheus metrics, defined once. Exposed at GET /metrics.

Generation metrics carry `model` and `version` labels and mirror vLLM's (time_to_first_token_seconds,
inter_token_latency_seconds, time_per_output_token_seconds, e2e_request_latency_seconds, prompt_tokens_total,
generation_tokens_total, num_requests_running/waiting, kv_cache_usage_perc) with the `ovms_` prefix; latencies
are measured from the request's admission to the engine. The batcher metrics (embeddings, rerank) carry one
`model` label, "<model id>:<version>". The README's "Logs and metrics" section lists them all.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_MODEL_VERSION = ["model", "version"]

REQUESTS = Counter("ovms_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
REQUEST_LATENCY = Histogram(
    "ovms_http_request_duration_seconds", "Time to answer an HTTP request (to the last byte)", ["method", "route"]
)
REJECTED = Counter("ovms_requests_rejected_total",
                   "Requests answered with an error status by the error handler, by route and reason "
                   "(the error's code, else its HTTP status)", ["route", "reason"])
VERSION_STATE = Gauge("ovms_model_version_state", "1 for the state each model version is in", ["model", "version", "state"])
MODEL_LOADS = Counter("ovms_model_loads_total", "Model version load attempts", ["model", "outcome"])
LOAD_SECONDS = Histogram(
    "ovms_model_load_duration_seconds", "Time to load one model version", ["model"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
)

# ---- generation (per model version; one sequence per choice)
GENERATION_ACTIVE = Gauge("ovms_generation_requests_active", "Sequences the generation engine is running", _MODEL_VERSION)
RUNNING = Gauge("ovms_num_requests_running", "Sequences the pipeline scheduled in its latest step and still open",
                _MODEL_VERSION)
WAITING = Gauge("ovms_num_requests_waiting", "Sequences admitted to the engine but not scheduled by the pipeline",
                _MODEL_VERSION)
GENERATED_TOKENS = Counter("ovms_generated_tokens_total", "Completion tokens generated", _MODEL_VERSION)
PROMPT_TOKENS = Counter("ovms_prompt_tokens_total",
                        "Prompt tokens of requests whose prefill completed (once per request, as usage reports them)",
                        _MODEL_VERSION)
TIME_TO_FIRST_TOKEN = Histogram(
    "ovms_time_to_first_token_seconds", "From admission to the engine to a sequence's first token", _MODEL_VERSION,
    buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
             80.0, 160.0, 640.0, 2560.0))
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                  7.5, 10.0, 20.0, 40.0, 80.0)
INTER_TOKEN_LATENCY = Histogram(
    "ovms_inter_token_latency_seconds", "Time between two consecutive outputs of a sequence (one per engine step)",
    _MODEL_VERSION, buckets=_TOKEN_BUCKETS)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "ovms_time_per_output_token_seconds", "Per finished sequence: (last token - first token) / (tokens - 1)",
    _MODEL_VERSION, buckets=_TOKEN_BUCKETS)
E2E_LATENCY = Histogram(
    "ovms_e2e_request_latency_seconds", "From admission to the engine to a sequence's last token (finished sequences)",
    _MODEL_VERSION,
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
             240.0, 480.0, 960.0, 1920.0, 7680.0))
# Timed by the worker process around each ContinuousBatchingPipeline.step() and sent with its step messages.
ENGINE_STEP = Histogram(
    "ovms_engine_step_duration_seconds", "Time of one pipeline step in the generation worker (the next token of "
    "every scheduled sequence, or a chunk of prompts)", _MODEL_VERSION,
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5,
             1.0, 2.5, 5.0, 10.0))
ENGINE_STEP_GAP = Histogram(
    "ovms_engine_step_gap_seconds", "The generation worker's own time between two steps while sequences run, "
    "from one step's end to the next one's start (reading the outputs, detokenizing, stop strings, messages)", _MODEL_VERSION,
    buckets=(0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0))
ENGINE_REQUEST_WAIT = Histogram(
    "ovms_engine_request_wait_seconds", "Time a generated sequence waited for the engine to take it, from the "
    "server handing it to the worker until the worker passed it to the pipeline between two steps (one that "
    "arrives while a step runs waits for that step's end; the pipeline's own scheduler queue is not counted)",
    _MODEL_VERSION,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
# From ContinuousBatchingPipeline.get_metrics(), sent by the worker process with its step messages.
KV_CACHE_USAGE = Gauge("ovms_kv_cache_usage_perc", "Fraction of the KV cache in use (0 to 1) at the latest engine step",
                       _MODEL_VERSION)
KV_CACHE_MAX_USAGE = Gauge("ovms_kv_cache_max_usage_perc", "Peak fraction of the KV cache used (0 to 1) by the "
                           "current pipeline", _MODEL_VERSION)
KV_CACHE_BYTES = Gauge("ovms_kv_cache_size_bytes", "Size of the KV cache the pipeline allocated", _MODEL_VERSION)
ENGINE_REQUESTS = Gauge("ovms_engine_requests", "Requests the pipeline holds at its latest step", _MODEL_VERSION)
ENGINE_SCHEDULED = Gauge("ovms_engine_scheduled_requests", "Requests the pipeline scheduled in its latest step",
                         _MODEL_VERSION)

# ---- micro-batched pipelines (embeddings, rerank); model = "<model id>:<version>"
BATCH_SIZE = Histogram("ovms_batch_size", "Items per micro-batched pipeline call (embeddings, rerank)", ["model"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
BATCH_QUEUE_WAIT = Histogram(
    "ovms_batch_queue_wait_seconds", "Time an item waited in the micro-batcher before its batch ran (one per item)",
    ["model"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
