"""text_generation: one ContinuousBatchingPipeline per loaded version, driven by one engine thread.

The engine thread owns the pipeline: it adds requests, calls step() (which releases the GIL), reads
each request's new tokens, detokenizes them incrementally (TextStreamer holds back partial UTF-8)
and applies stop strings, then hands updates to the event loop with call_soon_threadsafe. Request
ids are unique for the pipeline's life: a duplicate id breaks a ContinuousBatchingPipeline for good.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import numpy as np
import openvino as ov
import openvino_genai as ov_genai
import structlog

from server import metrics
from server.pipelines.base import ModelMetadata
from server.pipelines.stops import StopStringFilter
from server.repository.config import ModelConfig

log = structlog.get_logger("server.generation")

DEFAULT_CONTEXT_LENGTH = 2048

_FINISH_REASONS = {
    ov_genai.GenerationFinishReason.STOP: "stop",
    ov_genai.GenerationFinishReason.LENGTH: "length",
}


def scheduler_config(settings: dict) -> ov_genai.SchedulerConfig:
    scheduler = ov_genai.SchedulerConfig()
    scheduler.max_num_seqs = settings["max_num_seqs"]
    scheduler.max_num_batched_tokens = settings["max_num_batched_tokens"]
    scheduler.cache_size = int(settings["cache_size"])
    scheduler.enable_prefix_caching = settings["enable_prefix_caching"]
    scheduler.dynamic_split_fuse = settings["dynamic_split_fuse"]
    return scheduler


def context_length(path: Path, settings: dict) -> int:
    """Configured max_context_length, else the HF config's max_position_embeddings, else a default."""
    if settings.get("max_context_length"):
        return int(settings["max_context_length"])
    try:
        return int(json.loads((path / "config.json").read_text())["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_CONTEXT_LENGTH


@dataclass
class TokenUpdate:
    """New output of one request since the previous update."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None  # set on the last update: "stop" | "length"
    error: str | None = None


@dataclass(eq=False)
class _Request:
    request_id: int
    prompt_ids: list[int]
    config: ov_genai.GenerationConfig
    stops: StopStringFilter
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    handle: object | None = None
    streamer: ov_genai.TextStreamer | None = None
    chunks: list[str] = field(default_factory=list)
    cancelled: bool = False
    done: bool = False

    def post(self, update: TokenUpdate) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, update)


class GenerationEngine:
    def __init__(self, pipeline: ov_genai.ContinuousBatchingPipeline, tokenizer: ov_genai.Tokenizer,
                 model_id: str, version: str) -> None:
        self._active_gauge = metrics.GENERATION_ACTIVE.labels(model_id, version)
        self._tokens_counter = metrics.GENERATED_TOKENS.labels(model_id, version)
        self._pipeline = pipeline
        self._tokenizer = tokenizer
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._inbox: list[_Request] = []
        self._cancels: list[_Request] = []
        self._active: dict[int, _Request] = {}
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{model_id}:{version}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ event-loop side

    async def generate(self, prompt_ids: list[int], config: ov_genai.GenerationConfig, *,
                       stop: list[str] | None = None, include_stop: bool = False) -> AsyncIterator[TokenUpdate]:
        """Stream the updates of one sequence. Closing the iterator early (client gone) cancels the request."""
        request = _Request(next(self._ids), prompt_ids, config, StopStringFilter(stop or [], include_stop=include_stop),
                           asyncio.get_running_loop(), asyncio.Queue())
        with self._cond:
            if self._closing:
                raise RuntimeError("engine is closed")
            self._inbox.append(request)
            self._cond.notify()
        try:
            while True:
                update = await request.queue.get()
                yield update
                if update.finish_reason or update.error:
                    return
        finally:
            if not request.done:
                with self._cond:
                    request.cancelled = True
                    self._cancels.append(request)
                    self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            for request in self._active.values():
                self._cancels.append(request)
            self._cond.notify()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------ engine thread

    def _run(self) -> None:
        busy = False  # the pipeline still holds requests (running, or cancelled/stopped and not yet freed)
        while True:
            with self._cond:
                while not (self._inbox or self._cancels or busy or self._closing):
                    self._cond.wait()
                inbox, self._inbox = self._inbox, []
                cancels, self._cancels = self._cancels, []
                if self._closing and not (self._active or inbox or busy):
                    return
            try:
                for request in inbox:
                    self._start(request)
                for request in cancels:
                    self._cancel(request)
                if self._active or self._pipeline.has_non_finished_requests():
                    self._pipeline.step()  # also frees the KV cache of cancelled and stopped requests
                    for request in list(self._active.values()):
                        self._collect(request)
                busy = bool(self._active) or self._pipeline.has_non_finished_requests()
                self._active_gauge.set(len(self._active))
            except Exception as exc:  # a failed step fails the requests in it, not the server
                log.exception("engine_step_failed")
                for request in list(self._active.values()):
                    self._finish(request, TokenUpdate(error=f"generation failed: {type(exc).__name__}"))
                busy = False
                if self._closing:
                    return

    def _start(self, request: _Request) -> None:
        if request.cancelled:
            return
        request.streamer = ov_genai.TextStreamer(self._tokenizer, self._on_text(request))
        input_ids = ov.Tensor(np.array([request.prompt_ids], dtype=np.int64))
        request.handle = self._pipeline.add_request(request.request_id, input_ids, request.config)
        self._active[request.request_id] = request

    @staticmethod
    def _on_text(request: _Request):
        def callback(text: str) -> ov_genai.StreamingStatus:
            request.chunks.append(text)
            return ov_genai.StreamingStatus.RUNNING

        return callback

    def _cancel(self, request: _Request) -> None:
        if request.handle is not None and not request.done:
            request.handle.cancel()  # frees its KV-cache blocks at the next step
        self._active.pop(request.request_id, None)
        request.done = True

    def _collect(self, request: _Request) -> None:
        handle = request.handle
        update = TokenUpdate()
        finish = None
        if handle.can_read():
            for output in handle.read().values():
                update.token_ids.extend(output.generated_ids)
                update.logprobs.extend(output.generated_log_probs)
                finish = _FINISH_REASONS.get(output.finish_reason, finish)
        self._tokens_counter.inc(len(update.token_ids))
        for token in update.token_ids:
            request.streamer.write(token)
        status = handle.get_status()
        if finish is None and status not in (ov_genai.GenerationStatus.RUNNING,):
            finish = "stop" if status is not ov_genai.GenerationStatus.IGNORED else None
            if status is ov_genai.GenerationStatus.IGNORED:
                update.error = "the request was dropped: not enough KV-cache memory"
        if finish is not None:
            request.streamer.end()
        text = "".join(request.chunks)
        request.chunks.clear()
        update.text = request.stops.feed(text)
        if request.stops.stopped:
            handle.stop()
            finish = "stop"
        elif finish is not None:
            update.text += request.stops.flush()
        if finish is not None or update.error:
            update.finish_reason = finish
            self._finish(request, update)
        elif update.text or update.token_ids:
            request.post(update)

    def _finish(self, request: _Request, update: TokenUpdate) -> None:
        self._active.pop(request.request_id, None)
        request.done = True
        request.post(update)


class GenerationModel:
    task = "text_generation"

    def __init__(self, path: Path, config: ModelConfig, metadata: ModelMetadata, model_id: str = "") -> None:
        self.metadata = metadata
        self.settings = config.task_settings
        self.context_length = context_length(path, self.settings)
        pipeline = ov_genai.ContinuousBatchingPipeline(
            str(path), scheduler_config(self.settings), config.device, dict(config.plugin_config)
        )
        self.tokenizer = pipeline.get_tokenizer()
        self.default_config = pipeline.get_config()  # the model's own eos / stop token ids
        self.engine = GenerationEngine(pipeline, self.tokenizer, model_id, path.name)

    def close(self) -> None:
        self.engine.close()
        self.engine = None
        self.tokenizer = None
        self.default_config = None
