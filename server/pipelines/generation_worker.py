"""The generation worker process: owns one ContinuousBatchingPipeline and its step() loop.

It runs in a process of its own because ContinuousBatchingPipeline.step() in openvino-genai 2026.4
holds the GIL for the whole step: in the server process it stalled the event loop for 20-60 ms per
step, so requests were accepted late and tokens reached clients in bursts.

Started as `python -m server.pipelines.generation_worker FD`, FD being its end of a socketpair wrapped
in a multiprocessing Connection (messages are tuples, pickled):
  parent -> worker  (path, task_settings, device, plugin_config)   once, first
                    ("add", request_id, prompt_ids, params, stops, include_stop) | ("cancel", request_id) | ("close",)
  worker -> parent  ("ready", {"eos_token_id", "stop_token_ids"}) | ("failed", message)   once, after the build
                    ("updates", [(request_id, text, token_ids, logprobs, finish_reason, error), ...])   per step
finish_reason is "stop" or "length" on a request's last update; error ends a request too.
The worker is single-threaded: between steps it drains the pipe without waiting, and while idle it
blocks on the pipe. The parent closing its end (or dying) ends the worker.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import numpy as np
import openvino as ov
import openvino_genai as ov_genai

from server.pipelines.detokenize import IncrementalDetokenizer
from server.pipelines.sampling import build_config
from server.pipelines.stops import StopStringFilter

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


@dataclass(eq=False)
class _Request:
    request_id: int
    handle: object
    text: IncrementalDetokenizer
    stops: StopStringFilter
    finished: bool = field(default=False)


class Worker:
    def __init__(self, pipeline: ov_genai.ContinuousBatchingPipeline, conn: Connection) -> None:
        self._pipeline = pipeline
        self._tokenizer = pipeline.get_tokenizer()
        self._conn = conn
        self._active: dict[int, _Request] = {}
        self._closing = False

    def run(self) -> None:
        while not self._closing:
            busy = bool(self._active) or self._pipeline.has_non_finished_requests()
            try:
                timeout = 0 if busy else None
                while self._conn.poll(timeout):
                    self._handle(self._conn.recv())
                    timeout = 0
            except (EOFError, OSError):  # the server closed its end or died
                return
            if self._closing:
                return
            if self._active or self._pipeline.has_non_finished_requests():
                self._step()

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "add":
            _, request_id, prompt_ids, params, stops, include_stop = message
            self._add(request_id, prompt_ids, params, stops, include_stop)
        elif kind == "cancel":
            request = self._active.pop(message[1], None)
            if request is not None:
                request.handle.cancel()  # its KV-cache blocks are freed at the next step
        elif kind == "close":
            self._closing = True

    def _add(self, request_id: int, prompt_ids: list[int], params: dict, stops: list[str], include_stop: bool) -> None:
        try:
            input_ids = ov.Tensor(np.array([prompt_ids], dtype=np.int64))
            handle = self._pipeline.add_request(request_id, input_ids, build_config(params))
        except Exception as exc:
            self._send([(request_id, "", [], [], None, f"the request was rejected: {type(exc).__name__}")])
            return
        self._active[request_id] = _Request(request_id, handle, IncrementalDetokenizer(self._tokenizer.decode),
                                            StopStringFilter(stops, include_stop=include_stop))

    def _step(self) -> None:
        try:
            self._pipeline.step()  # also frees the KV cache of cancelled and stopped requests
            updates = [self._collect(request) for request in list(self._active.values())]
        except Exception as exc:  # a failed step fails the requests in it, not the worker
            error = f"generation failed: {type(exc).__name__}"
            updates = [(r.request_id, "", [], [], None, error) for r in self._active.values()]
            self._active.clear()
        updates = [u for u in updates if u is not None]
        if updates:
            self._send(updates)

    def _collect(self, request: _Request) -> tuple | None:
        handle = request.handle
        token_ids: list[int] = []
        logprobs: list[float] = []
        finish = None
        error = None
        if handle.can_read():
            for output in handle.read().values():
                token_ids.extend(output.generated_ids)
                logprobs.extend(output.generated_log_probs)
                finish = _FINISH_REASONS.get(output.finish_reason, finish)
        status = handle.get_status()
        if finish is None and status != ov_genai.GenerationStatus.RUNNING:
            if status == ov_genai.GenerationStatus.IGNORED:
                error = "the request was dropped: not enough KV-cache memory"
            else:
                finish = "stop"
        raw = request.text.push(token_ids)
        if finish is not None:
            raw += request.text.flush()
        text = request.stops.feed(raw)
        if request.stops.stopped:
            handle.stop()
            finish = "stop"
        elif finish is not None:
            text += request.stops.flush()
        if finish is not None or error:
            del self._active[request.request_id]
        elif not text and not token_ids:
            return None
        return (request.request_id, text, token_ids, logprobs, finish, error)

    def _send(self, updates: list[tuple]) -> None:
        try:
            self._conn.send(("updates", updates))
        except (BrokenPipeError, OSError):
            self._closing = True


def main(conn: Connection) -> None:
    """Build the pipeline the first message describes, report ready or failed, then serve until closed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the server decides
    try:
        path, settings, device, plugin_config = conn.recv()
    except EOFError:
        return
    try:
        pipeline = ov_genai.ContinuousBatchingPipeline(path, scheduler_config(settings), device, plugin_config)
        defaults = pipeline.get_config()  # the model's own eos / stop token ids
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", {"eos_token_id": defaults.eos_token_id, "stop_token_ids": sorted(defaults.stop_token_ids)}))
    Worker(pipeline, conn).run()


if __name__ == "__main__":
    main(Connection(int(sys.argv[1])))
