"""The generation worker process: owns one ContinuousBatchingPipeline and its step() loop.

It runs in a process of its own because ContinuousBatchingPipeline.step() in openvino-genai 2026.4
holds the GIL for the whole step: in the server process it stalled the event loop for 20-60 ms per
step, so requests were accepted late and tokens reached clients in bursts.

Started as `python -m server.pipelines.generation_worker FD PARENT_PID`, FD being its end of a socketpair wrapped
in a multiprocessing Connection (messages are tuples, pickled):
  parent -> worker  (path, settings, device, plugin_config)   once, first (settings: GenerationSettings as a dict)
                    ("add", request_id, prompt_ids, params, stops, include_stop, sent_at) | ("cancel", request_id)
                    | ("close",)   (sent_at: the server's time.perf_counter() when it handed the request over)
  worker -> parent  ("ready", {"eos_token_id", "stop_token_ids", "detokenizer"}) | ("failed", message)   once, after
                    the build (detokenizer: "vocabulary" or "model", see vocab_decoder.py)
                    ("updates", [(request_id, text, token_ids, logprobs, finish_reason, error), ...], figures,
                    timings) per step (an empty list at most once a second is a heartbeat) | ("rebuilding", [], None, [])
finish_reason is "stop" or "length" on a request's last update; error ends a request too. figures is the
pipeline's state after the latest good step (EngineFigures as a tuple, from get_metrics(): one call, about a
microsecond) or None when unknown; the server turns it into its Prometheus gauges. When the last request
ends, the worker runs one empty step (it frees the finished requests' KV-cache blocks) and reports the idle
figures, so the gauges do not keep showing the last busy step. timings are the (step_seconds,
between_seconds, waits) of each step since the previous message (usually one): how long step() took, the
worker's own time since the step before it (reading outputs, detokenizing, stop strings, messages), or
None for a busy period's first step, and for each request added just before this step, how long it waited
from the server's hand-off until the worker passed it to the pipeline (a request that arrives while a step
runs waits for that step's end; time in the pipeline's own scheduler queue is not in it). A step that fails
or serves no request reports no waits. The server turns them into histograms: the worker's share of the
time per token, measured where it is spent, and the part of the time to first token spent waiting for the
engine. perf_counter is CLOCK_MONOTONIC on Linux, one clock for both processes.

A failed step() leaves a ContinuousBatchingPipeline unusable for good (openvino-genai 2026.4: "already in
scheduling phase"), and the usual cause is one request (a grammar xgrammar cannot compile fails in that
request's first scheduled step). So the worker fails the requests added since the last good step (else
those that have not produced a token yet, else all: unexplained), builds a fresh pipeline and re-adds
every other request as a continuation (prompt + tokens so far), whose stream goes on.
Pipeline request ids come from a worker-internal counter: the server's ids are only message keys.
The worker is single-threaded: between steps it drains the pipe without waiting, and while idle it
blocks on the pipe. The parent closing its end (or dying) ends the worker.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Callable, NamedTuple

import numpy as np
import openvino as ov
import openvino_genai as ov_genai

from server.pipelines.ir import PRIVATE_WEIGHTS
from server.pipelines.detokenize import IncrementalDetokenizer, decode_steps
from server.pipelines.sampling import CONSTRAINTS, build_config
from server.pipelines.stops import StopStringFilter
from server.pipelines.vocab_decoder import VocabDecoder

MAX_FAILED_STEPS = 3  # unexplained step() failures in a row (rebuilds between them) mean the model is broken
EXIT_PIPELINE_BROKEN = 3
HEARTBEAT_S = 1.0  # while busy, the server hears from the worker at least this often (between steps)

PR_SET_PDEATHSIG = 1  # linux/prctl.h

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


def engine_properties(settings: dict, plugin_config: dict) -> dict:
    """The pipeline's properties: ENABLE_MMAP false (ir.PRIVATE_WEIGHTS) unless the model's plugin_config
    says otherwise, the plugin_config, and GenAI's prompt_lookup switch when the model asks for
    prompt-lookup decoding (every request then carries num_assistant_tokens and max_ngram_size: see
    services/generation_plan.py)."""
    properties = {**PRIVATE_WEIGHTS, **plugin_config}
    if settings.get("prompt_lookup"):
        properties["prompt_lookup"] = True
    return properties


@dataclass
class _Output:
    """What one step produced for one request."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None
    error: str | None = None


class EngineFigures(NamedTuple):
    """The pipeline's state after a step (sent as a plain tuple)."""

    cache_usage: float  # fraction of the KV cache in use, 0 to 1 (get_metrics() says percent)
    max_cache_usage: float  # peak fraction over this pipeline's life
    cache_bytes: int  # KV-cache size the pipeline allocated
    requests: int  # requests the pipeline holds
    scheduled: int  # requests it scheduled in the step
    running: int  # of those, the ones still open after the step (finished ones are not running any more)


def engine_figures(pipeline: object, running_bound: int, ended: int = 0) -> tuple | None:
    """`running_bound`: requests still open after the step; `ended`: requests that ended in it."""
    try:
        metrics = pipeline.get_metrics()
        scheduled = int(metrics.scheduled_requests)
        return tuple(EngineFigures(float(metrics.cache_usage) / 100, float(metrics.max_cache_usage) / 100,
                                   int(metrics.kv_cache_size_in_bytes), int(metrics.requests), scheduled,
                                   max(0, min(scheduled - ended, running_bound))))
    except Exception:  # a pipeline in a bad state (or a test fake without metrics): figures unknown
        return None


STEP_FAILED = "the engine could not run this request"  # no library internals: clients see this


@dataclass(eq=False)
class _Request:
    request_id: int  # the server's id
    handle: object
    text: IncrementalDetokenizer
    stops: StopStringFilter
    prompt_ids: list[int] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    generated: list[int] = field(default_factory=list)  # what a continuation must resume after


def _log_exception(event: str, **fields: object) -> None:
    """This process has no logging setup; its stderr is the server's, which reaches the server log."""
    details = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f"{event} {details}".rstrip(), file=sys.stderr)
    traceback.print_exc(file=sys.stderr)
    sys.stderr.flush()


def continuation_params(params: dict, generated: int) -> dict:
    """The params that let a re-added request go on where it was after `generated` tokens."""
    params = dict(params)
    for key in ("max_new_tokens", "min_new_tokens"):
        if key in params:
            params[key] = max(int(params[key]) - generated, 0)
    return params


class Worker:
    def __init__(self, pipeline: ov_genai.ContinuousBatchingPipeline, conn: Connection,
                 rebuild: Callable[[], ov_genai.ContinuousBatchingPipeline] | None = None,
                 vocab: VocabDecoder | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self._pipeline = pipeline
        self._tokenizer = pipeline.get_tokenizer()
        self._vocab = vocab  # decodes in Python where that is exact; else the detokenizer model does
        self._conn = conn
        self._rebuild = rebuild  # a fresh pipeline with main()'s path, scheduler, device and plugin config
        self._active: dict[int, _Request] = {}
        self._fresh: set[int] = set()  # added since the last good step: their first step compiles grammars
        self._pipeline_ids = itertools.count()  # never repeats within one pipeline's life
        self._closing = False
        self._failed_steps = 0  # in a row
        self._last_sent = time.monotonic()
        self._figures: tuple | None = None  # EngineFigures after the latest good step
        self._clock = clock
        self._step_ended: float | None = None  # when the latest step() returned, while the worker stays busy
        self._timings: list[tuple[float, float | None, tuple[float, ...]]] = []  # steps not reported yet
        self._waits: list[float] = []  # of the requests added since the latest step (see _step)

    def run(self) -> None:
        while not self._closing:
            busy = bool(self._active) or self._pipeline.has_non_finished_requests()
            if not busy:  # waiting for work is not time between steps
                self._step_ended = None
            try:
                timeout = 0 if busy else None
                while self._conn.poll(timeout):
                    self._handle(self._conn.recv())
                    timeout = 0
            except (EOFError, OSError):  # the server closed its end or died
                return
            if self._closing:
                self._release_all()
                return
            if self._active or self._pipeline.has_non_finished_requests():
                self._step()
                if not self._active and not self._pipeline.has_non_finished_requests():
                    self._settle()

    def _settle(self) -> None:
        """Idle after the last request ended: one empty step frees its KV-cache blocks (else they stay
        counted until the next request), then the idle figures go out."""
        try:
            self._pipeline.step()
        except Exception:  # a broken pipeline shows in the next request's step, which recovers
            _log_exception("generation_idle_step_failed")
            return
        self._step_ended = None  # not a serving step: neither it nor the time before it is counted
        self._figures = engine_figures(self._pipeline, 0)
        self._send([], force=True)

    def _release_all(self) -> None:
        """On close: cancel what still runs and let one step free its KV-cache blocks, so the pipeline
        shuts down clean (it logs leaked blocks otherwise)."""
        self._fail([*self._active], "the model was unloaded")  # nobody waits for these updates any more
        try:
            if self._pipeline.has_non_finished_requests():
                self._pipeline.step()
        except Exception:  # exiting anyway
            pass

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "add":
            _, request_id, prompt_ids, params, stops, include_stop, sent_at = message
            self._add(request_id, prompt_ids, params, stops, include_stop, sent_at)
        elif kind == "cancel":
            request = self._active.pop(message[1], None)
            if request is not None:
                request.handle.cancel()  # its KV-cache blocks are freed at the next step
        elif kind == "close":
            self._closing = True

    def _add(self, request_id: int, prompt_ids: list[int], params: dict, stops: list[str], include_stop: bool,
             sent_at: float | None = None) -> None:  # sent_at None: not timed (tests that drive _add directly)
        try:
            handle = self._add_to_pipeline(prompt_ids, params)
        except Exception:
            _log_exception("generation_request_rejected", request=request_id)
            self._send([(request_id, "", [], [], None, "the engine rejected this request")])
            return
        self._active[request_id] = _Request(request_id, handle, IncrementalDetokenizer(),
                                            StopStringFilter(stops, include_stop=include_stop),
                                            list(prompt_ids), dict(params))
        self._fresh.add(request_id)
        if sent_at is not None:
            self._waits.append(max(0.0, self._clock() - sent_at))  # below zero only off Linux, if the clocks differ

    def _add_to_pipeline(self, prompt_ids: list[int], params: dict) -> object:
        input_ids = ov.Tensor(np.array([prompt_ids], dtype=np.int64))
        return self._pipeline.add_request(next(self._pipeline_ids), input_ids, build_config(params))

    def _step(self) -> None:
        serving = bool(self._active)  # else a step that only frees stopped or cancelled requests' blocks
        waits, self._waits = tuple(self._waits), []  # this step's only: dropped if it fails or serves none
        started = self._clock()
        between = None if self._step_ended is None else started - self._step_ended
        try:
            self._pipeline.step()  # also frees the KV cache of cancelled and stopped requests
        except Exception:
            self._step_ended = None  # a rebuild follows: not time between steps
            self._recover()
            return
        if serving:
            self._step_ended = self._clock()
            self._timings.append((self._step_ended - started, between, waits))
        else:  # not counted, like the idle step of _settle
            self._step_ended = None
        self._failed_steps = 0
        self._fresh.clear()
        open_before = len(self._active)
        errors: list[tuple] = []
        outputs: list[tuple[_Request, _Output]] = []
        for request in list(self._active.values()):
            try:
                outputs.append((request, self._read(request)))
            except Exception as exc:  # one request's output could not be read: fail it alone
                _log_exception("generation_read_failed", request=request.request_id)
                errors += self._fail([request.request_id], STEP_FAILED)
        try:  # one batched detokenizer call for every request of this step
            texts = decode_steps(self._decode, [(r.text, out.finish is not None) for r, out in outputs])
        except Exception as exc:
            _log_exception("generation_detokenize_failed", requests=len(outputs))
            errors += self._fail([r.request_id for r, _ in outputs], STEP_FAILED)
            outputs, texts = [], []
        updates = [self._update(request, output, text) for (request, output), text in zip(outputs, texts)]
        self._figures = engine_figures(self._pipeline, len(self._active), open_before - len(self._active))
        self._send([u for u in updates if u is not None] + errors)

    def _decode(self, batch: list[list[int]]) -> list[str]:
        texts = self._vocab.decode(batch) if self._vocab is not None else None
        return self._tokenizer.decode(batch) if texts is None else texts

    def _recover(self) -> None:
        """After a failed step (called inside its except): fail the requests that caused it, rebuild the
        pipeline and continue the others in it. Exits when that keeps failing or the rebuild fails."""
        # Grammars compile in a request's first scheduled step: most likely one just added, else one that
        # waited for a slot and has not produced a token yet.
        suspects = ([r for r in self._active if r in self._fresh]
                    or [r for r, request in self._active.items() if not request.generated])
        if suspects:  # each such recovery fails a request, so a stream of bad requests cannot loop forever
            _log_exception("generation_step_failed", requests=len(suspects), survivors=len(self._active) - len(suspects))
        else:  # every request was running fine before: none explains it, so every one of them is a suspect
            self._failed_steps += 1
            suspects = [*self._active]
            _log_exception("generation_step_failed_unexplained", requests=len(suspects))
        self._fresh.clear()
        self._figures = None  # the broken pipeline's figures mean nothing any more
        errors = self._fail(suspects, STEP_FAILED)
        if self._failed_steps >= MAX_FAILED_STEPS or self._rebuild is None:
            self._send(errors)
            raise SystemExit(EXIT_PIPELINE_BROKEN)  # broken for good: the server reloads the version
        self._send(errors)  # the failed requests need not wait for the rebuild
        errors = []
        self._send([], kind="rebuilding")  # a rebuild takes as long as a load: not a stall
        try:
            self._pipeline = None  # free the broken pipeline's KV cache before the new one allocates its own
            self._pipeline = self._rebuild()
            self._tokenizer = self._pipeline.get_tokenizer()
        except Exception:
            _log_exception("generation_pipeline_rebuild_failed")
            self._send(errors + self._fail([*self._active], STEP_FAILED))
            raise SystemExit(EXIT_PIPELINE_BROKEN)
        self._pipeline_ids = itertools.count()
        for request in list(self._active.values()):
            errors += self._continue(request)
        self._send(errors)

    def _continue(self, request: _Request) -> list[tuple]:
        """Re-add a surviving request to the fresh pipeline; its detokenizer and stop state stay, so its
        stream goes on. A structured-output request that already produced tokens cannot resume: its
        grammar would start over in the middle of its JSON."""
        if request.generated and any(request.params.get(key) is not None for key in CONSTRAINTS):
            return self._fail([request.request_id], "the engine was restarted while running this request")
        try:
            request.handle = self._add_to_pipeline(request.prompt_ids + request.generated,
                                                   continuation_params(request.params, len(request.generated)))
        except Exception:
            _log_exception("generation_continuation_failed")
            return self._fail([request.request_id], STEP_FAILED)
        return []

    def _fail(self, request_ids: list[int], error: str) -> list[tuple]:
        """Cancel these requests in the pipeline (freeing their KV cache); returns their final error updates."""
        for request_id in request_ids:
            request = self._active.pop(request_id, None)
            if request is not None:
                try:
                    request.handle.cancel()
                except Exception:  # the pipeline is already in a bad state; the error is reported anyway
                    pass
        return [(request_id, "", [], [], None, error) for request_id in request_ids]

    def _read(self, request: _Request) -> _Output:
        """The request's new tokens since the last step, and whether it ended."""
        handle = request.handle
        output = _Output()
        if handle.can_read():
            for sequence in handle.read().values():
                output.token_ids.extend(sequence.generated_ids)
                output.logprobs.extend(sequence.generated_log_probs)
                output.finish = _FINISH_REASONS.get(sequence.finish_reason, output.finish)
        status = handle.get_status()
        if output.finish is None and status != ov_genai.GenerationStatus.RUNNING:
            if status == ov_genai.GenerationStatus.IGNORED:
                output.error = "the request was dropped: not enough KV-cache memory"
            else:
                output.finish = "stop"
        request.text.extend(output.token_ids)
        request.generated.extend(output.token_ids)
        return output

    def _update(self, request: _Request, output: _Output, raw_text: str) -> tuple | None:
        """The update message for one request (None when there is nothing to say), applying stop strings."""
        finish = output.finish
        text = request.stops.feed(raw_text)
        if request.stops.stopped:
            request.handle.stop()
            finish = "stop"
        elif finish is not None:
            text += request.stops.flush()
        if finish is not None or output.error:
            del self._active[request.request_id]
        elif not text and not output.token_ids:
            return None
        return (request.request_id, text, output.token_ids, output.logprobs, finish, output.error)

    def _send(self, updates: list[tuple], kind: str = "updates", *, force: bool = False) -> None:
        """Send updates (with the latest figures); with nothing to say, a heartbeat at most once a second,
        so a long prefill (many steps before a first token) is never mistaken for a stalled worker."""
        now = time.monotonic()
        if not updates and kind == "updates" and not force and now - self._last_sent < HEARTBEAT_S:
            return
        timings = self._timings if kind == "updates" else []
        try:
            self._conn.send((kind, updates, self._figures if kind == "updates" else None, timings))
            self._last_sent = now
            if kind == "updates":
                self._timings = []
        except (BrokenPipeError, OSError):
            self._closing = True


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the server dies, even while a build holds the GIL for minutes
    and nothing reads the pipe. Tied to the server thread that started us: the model-loading pool's
    threads live as long as the server."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pipe's EOF still ends the worker after the build
        pass


def main(conn: Connection, parent_pid: int) -> None:
    """Build the pipeline the first message describes, report ready or failed, then serve until closed."""
    # Signals sent to the whole process group (Ctrl-C, systemd's stop, kill -TERM -PGID) are for the
    # server, which drains its streams and then closes this worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() != parent_pid:  # the server died before prctl took effect
        return
    try:
        path, settings, device, plugin_config = conn.recv()
    except EOFError:
        return

    def build() -> ov_genai.ContinuousBatchingPipeline:
        properties = engine_properties(settings, plugin_config)
        return ov_genai.ContinuousBatchingPipeline(path, scheduler_config(settings), device, properties,
                                                   {"ENABLE_MMAP": properties["ENABLE_MMAP"]})  # its tokenizers

    try:
        try:
            pipeline = build()
            defaults = pipeline.get_config()  # the model's own eos / stop token ids
        except Exception as exc:
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
            return
        vocab = VocabDecoder.verified(pipeline.get_tokenizer())
        conn.send(("ready", {"eos_token_id": defaults.eos_token_id, "stop_token_ids": sorted(defaults.stop_token_ids),
                             "detokenizer": "model" if vocab is None else "vocabulary"}))
    except OSError:  # the server went away during the build
        return
    Worker(pipeline, conn, rebuild=build, vocab=vocab).run()


if __name__ == "__main__":
    main(Connection(int(sys.argv[1])), int(sys.argv[2]))
