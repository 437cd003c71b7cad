"""text_generation: one ContinuousBatchingPipeline per loaded version, in a worker process of its own.

The server process keeps the tokenizer (chat templates, prompt token counts, logprob tokens) and a
GenerationEngine that talks to the worker (server/pipelines/generation_worker.py) over a pipe. The
pipe is watched by the event loop itself (add_reader), so a step's tokens reach their requests'
queues without a thread hop. Request ids are unique for the worker's life: a duplicate id breaks a
ContinuousBatchingPipeline for good.

Metrics: the engine times each sequence from its admission (admit()) to its first token, between its
outputs and to its last token, where the updates arrive (one perf_counter() per message, one histogram
observe per update); the worker's step messages carry the pipeline's figures (KV cache, scheduled
requests) and how long each step and the worker's work between steps took, which become gauges and
histograms here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from multiprocessing.connection import Connection
from typing import AsyncIterator, Callable

import openvino_genai as ov_genai
import structlog

from server import metrics, native_memory
from server.errors import Overloaded
from server.pipelines.base import ModelMetadata
from server.pipelines.grammar_probe import GrammarProbe
from server.pipelines.settings import GenerationSettings, PipelineSpec
from server.pipelines.tokenizers import SharedTokenizer, preparation_thread
from server.pipelines.worker_pipe import MessageReader

log = structlog.get_logger("server.generation")

DEFAULT_CONTEXT_LENGTH = 2048
WORKER_START_TIMEOUT_S = 600  # compiling a large model on 2 cores takes minutes
WORKER_STOP_TIMEOUT_S = 10
DEFAULT_MAX_QUEUED_REQUESTS = 64  # the loader fills both from server flags; these serve direct callers
DEFAULT_STALL_TIMEOUT_S = 120.0
GAUGE_REFRESH_S = 1.0


# Workers still building their pipeline: shutdown stops them (stop_starting_workers) rather than wait
# for a compile whose result it would discard; from then on no worker starts.
_starting: set[subprocess.Popen] = set()
_starting_lock = threading.Lock()
_stopped = False


def stop_starting_workers() -> int:
    """Kill every generation worker that is still loading, and refuse to start any more (for the rest
    of this process: called at shutdown); their engines' constructors then fail at once. Returns how
    many were killed."""
    global _stopped
    with _starting_lock:
        _stopped = True
        workers = list(_starting)
    for worker in workers:
        worker.kill()  # SIGKILL: nothing to save in a half-built pipeline, and it works on a stopped one
    return len(workers)


def context_length(path: Path, settings: GenerationSettings) -> int:
    """Configured max_context_length, else the HF config's max_position_embeddings, else a default."""
    if settings.max_context_length:
        return int(settings.max_context_length)
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


def _worker_environment() -> dict[str, str]:
    """This environment, with the folder holding the `server` package first on PYTHONPATH: the worker
    must import this very package even when the server was started from another directory."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return native_memory.worker_environment({**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")})


class EngineUnavailable(RuntimeError):
    """The worker process is gone (crashed or closed); the message is safe to show."""


class Reservation:
    """Engine slots admitted for one request's sequences until each starts or the request ends; also the
    request's admission time and prompt size, for its metrics."""

    def __init__(self, engine: "GenerationEngine", sequences: int) -> None:
        self._engine, self._left = engine, sequences
        self.admitted = time.perf_counter()
        self.prompt_tokens = 0  # set by generate(); counted once, when the first sequence is prefilled
        self._prompt_counted = False

    def take(self) -> None:
        if self._left:
            self._left -= 1
            self._engine._reserved -= 1

    def release(self) -> None:
        self._engine._reserved -= self._left
        self._left = 0
        self._engine._publish_load()

    def prefilled(self) -> None:
        """One of its sequences produced its first output: the prompt was processed (as usage counts it)."""
        if not self._prompt_counted:
            self._prompt_counted = True
            self._engine._prompt_tokens.inc(self.prompt_tokens)


class _Sequence:
    """One open sequence: where its updates go, and its timing so far."""

    __slots__ = ("updates", "reservation", "first", "last", "tokens")

    def __init__(self, updates: asyncio.Queue, reservation: Reservation) -> None:
        self.updates, self.reservation = updates, reservation
        self.first = self.last = 0.0  # perf_counter() of its first and latest output (0: none yet)
        self.tokens = 0


class GenerationEngine:
    """Blocking constructor (spawns the worker and waits until its pipeline is built); the rest runs
    on the event loop, except close(). Messages to the worker go through a writer thread, so a full
    socket buffer (large prompts while the worker is inside a long step) never blocks the event loop."""

    def __init__(self, path: Path, spec: PipelineSpec, model_id: str, version: str) -> None:
        self._name = f"{model_id}:{version}"
        labels = (model_id, version)
        self._active_gauge = metrics.GENERATION_ACTIVE.labels(*labels)
        self._running_gauge = metrics.RUNNING.labels(*labels)
        self._waiting_gauge = metrics.WAITING.labels(*labels)
        self._tokens_counter = metrics.GENERATED_TOKENS.labels(*labels)
        self._prompt_tokens = metrics.PROMPT_TOKENS.labels(*labels)
        self._ttft = metrics.TIME_TO_FIRST_TOKEN.labels(*labels)
        self._itl = metrics.INTER_TOKEN_LATENCY.labels(*labels)
        self._tpot = metrics.TIME_PER_OUTPUT_TOKEN.labels(*labels)
        self._e2e = metrics.E2E_LATENCY.labels(*labels)
        self._step_seconds = metrics.ENGINE_STEP.labels(*labels)
        self._step_gap_seconds = metrics.ENGINE_STEP_GAP.labels(*labels)
        self._request_wait_seconds = metrics.ENGINE_REQUEST_WAIT.labels(*labels)
        self._figure_gauges = (metrics.KV_CACHE_USAGE.labels(*labels), metrics.KV_CACHE_MAX_USAGE.labels(*labels),
                               metrics.KV_CACHE_BYTES.labels(*labels), metrics.ENGINE_REQUESTS.labels(*labels),
                               metrics.ENGINE_SCHEDULED.labels(*labels))  # in EngineFigures' order
        self._scheduled_open = 0  # sequences the worker last said are scheduled and open
        # What the gauges show, to set them only on a change (see _publish_load). A version reloaded in
        # place shares its gauges with the draining engine, which zeroes them when it closes: every
        # GAUGE_REFRESH_S the gauges are set again anyway.
        self._published_load: tuple | None = None
        self._recorded_figures: tuple | None = None
        self._gauges_set_at = 0.0  # loop time
        self._ids = itertools.count()
        self._queues: dict[int, _Sequence] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dead: str | None = None  # why requests can no longer be added
        self._broken: str | None = None  # why the worker died on its own (not by close())
        self._closed = False
        settings: GenerationSettings = spec.settings
        queued = settings.max_queued_requests
        # Open requests beyond the pipeline's batch wait inside the worker; bound that wait (429 beyond it).
        self._capacity = int(settings.max_num_seqs) + int(DEFAULT_MAX_QUEUED_REQUESTS if queued is None else queued)
        # A worker that sends nothing this long while requests are open is stuck (stopped, deadlocked).
        stall = settings.stall_timeout_s
        self._stall_timeout = float(DEFAULT_STALL_TIMEOUT_S if stall is None else stall)
        self._last_heard = 0.0  # loop time of the worker's last message, or of the first open request
        self._rebuilding = False  # the worker said it is rebuilding its pipeline (see generation_worker.py)
        self._reserved = 0  # admitted slots whose sequences have not started yet
        self.on_broken: Callable[[], None] | None = None  # called on the event loop when the worker dies or stalls
        self._stall_timer: asyncio.TimerHandle | None = None
        # A fresh interpreter (not fork: this process runs OpenVINO threads; not multiprocessing's spawn:
        # it re-imports the parent's __main__), talking over a socketpair it inherits as fd 3+.
        parent_sock, child_sock = socket.socketpair()
        self._conn = Connection(parent_sock.detach())
        self._process: subprocess.Popen | None = None
        try:
            with child_sock, _starting_lock:
                if _stopped:
                    raise RuntimeError("the server is shutting down: no generation worker starts")
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "server.pipelines.generation_worker", str(child_sock.fileno()),
                     str(os.getpid())],
                    pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL, env=_worker_environment(),
                )
                _starting.add(self._process)
            self._conn.send((str(path), asdict(settings), spec.device, dict(spec.plugin_config)))
            try:
                self.defaults = self._wait_ready()
            finally:
                with _starting_lock:
                    _starting.discard(self._process)
            log.info("generation_worker_ready", model=self._name, pid=self._process.pid,
                     detokenizer=self.defaults.get("detokenizer"))
        except BaseException:
            self._stop_process()
            self._conn.close()
            raise
        self._reader = MessageReader(self._conn.fileno())
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name=f"engine-writer-{self._name}", daemon=True)
        self._writer.start()

    def _wait_ready(self) -> dict:
        if not self._conn.poll(WORKER_START_TIMEOUT_S):
            raise RuntimeError(f"the generation worker did not start within {WORKER_START_TIMEOUT_S} s")
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            self._stop_process()
            raise RuntimeError(f"the generation worker exited while loading (exit code {self._process.returncode})") from None
        if kind != "ready":
            raise RuntimeError(payload)
        return payload

    def _write_loop(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self._conn.send(message)
            except OSError:  # the worker is gone: the reader sees EOF and fails the requests
                return

    # ------------------------------------------------------------ event-loop side

    async def generate(self, prompt_ids: list[int], params: dict, *, stop: list[str] | None = None,
                       include_stop: bool = False, reservation: "Reservation | None" = None) -> AsyncIterator[TokenUpdate]:
        """Stream the updates of one sequence, in a slot `reservation` holds (else admitted now). Closing
        the iterator early (client gone) cancels the request."""
        self._attach()
        if self._dead:
            raise EngineUnavailable(self._dead)
        reservation = reservation or self.admit()
        reservation.take()
        reservation.prompt_tokens = len(prompt_ids)  # the same prompt for all of a request's choices
        self._arm_stall_timer()
        request_id = next(self._ids)
        updates: asyncio.Queue = asyncio.Queue()
        self._queues[request_id] = _Sequence(updates, reservation)
        self._outbox.put(("add", request_id, prompt_ids, params, stop or [], include_stop, time.perf_counter()))
        self._publish_load()
        try:
            while True:
                update = await updates.get()
                yield update
                if update.finish_reason or update.error:
                    return
        finally:
            if self._queues.pop(request_id, None) is not None:  # left early: free its slot and KV cache
                if not self._dead:
                    self._outbox.put(("cancel", request_id))
                self._publish_load()

    def admit(self, sequences: int = 1) -> "Reservation":
        """Hold `sequences` slots now, or raise: EngineUnavailable when the worker is gone, Overloaded (429)
        beyond max_num_seqs + max_queued_requests (callers refuse a request larger than `capacity` alone
        first: retrying that cannot help). A request reserves all its n choices before its response
        starts, so a refusal still gets its status code and no other request can take the slots in
        between; each generate() takes one, and release() frees what was not taken."""
        if self._dead:
            raise EngineUnavailable(self._dead)
        if len(self._queues) + self._reserved + sequences > self._capacity:
            raise Overloaded(f"The generation queue is full ({self._capacity} requests); retry later")
        self._reserved += sequences
        reservation = Reservation(self, sequences)
        self._publish_load()
        return reservation

    @property
    def capacity(self) -> int:
        """Most sequences open at once: max_num_seqs running + max_queued_requests waiting."""
        return self._capacity

    def _publish_load(self) -> None:
        """Open sequences, running (scheduled by the pipeline's latest step) and waiting (admitted, not
        scheduled: reserved slots, sequences on their way to the worker or queued in its scheduler).
        Called after every worker message: the gauges are set only when a figure changed (each set
        takes a lock; this was a tenth of the event loop's time per streamed token with the figures)."""
        open_sequences = len(self._queues)
        running = min(self._scheduled_open, open_sequences)
        load = (open_sequences, running, open_sequences + self._reserved - running)
        self._published_load = _set_changed((self._active_gauge, self._running_gauge, self._waiting_gauge),
                                            load, self._published_load)

    def _record_figures(self, figures: tuple) -> None:
        """EngineFigures from the worker (see generation_worker.py): cache usage and scheduler counts."""
        self._recorded_figures = _set_changed(self._figure_gauges, figures, self._recorded_figures)  # not `running`
        self._scheduled_open = figures[-1]

    def _attach(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._conn.fileno(), self._on_readable)

    def _arm_stall_timer(self) -> None:
        """Watch the worker while requests are open; idle, it rightly sends nothing."""
        if not self._queues:  # nothing was owed until now (a timer may still be pending from before)
            self._last_heard = self._loop.time()
        if self._stall_timer is None:
            self._stall_timer = self._loop.call_later(self._stall_timeout, self._check_stall)

    def _check_stall(self) -> None:
        self._stall_timer = None
        if self._dead or not self._queues:
            return
        silent = self._loop.time() - self._last_heard
        allowed = WORKER_START_TIMEOUT_S if self._rebuilding else self._stall_timeout
        if silent < allowed:  # heard meanwhile: one timer per period, not one per message
            self._stall_timer = self._loop.call_later(allowed - silent, self._check_stall)
            return
        self._dead = self._broken = f"the generation worker stopped responding for {silent:.0f} s"
        log.error("generation_worker_stalled", model=self._name, pid=self._process.pid, silent_s=round(silent, 1),
                  open_requests=len(self._queues))
        self._process.kill()  # SIGKILL works on a stopped process too; `broken` makes the manager reload
        self._loop.remove_reader(self._conn.fileno())
        self._fail_all(self._dead)
        self._report_broken()

    def _on_readable(self) -> None:
        self._last_heard = self._loop.time()
        if self._last_heard - self._gauges_set_at >= GAUGE_REFRESH_S:
            self._gauges_set_at = self._last_heard
            self._published_load = self._recorded_figures = None
        messages, closed = self._reader.read()
        now = time.perf_counter()
        for kind, updates, figures, timings in messages:
            self._rebuilding = kind == "rebuilding"  # a rebuild may be silent as long as a load
            if figures is not None:
                self._record_figures(figures)
            for step_seconds, gap_seconds, waits in timings:
                self._step_seconds.observe(step_seconds)
                if gap_seconds is not None:
                    self._step_gap_seconds.observe(gap_seconds)
                for wait_seconds in waits:
                    self._request_wait_seconds.observe(wait_seconds)
            for request_id, text, token_ids, logprobs, finish, error in updates:
                self._tokens_counter.inc(len(token_ids))
                sequence = self._queues.get(request_id)
                if sequence is None:
                    continue  # cancelled meanwhile
                if token_ids:
                    self._timed(sequence, len(token_ids), now)
                if finish or error:
                    del self._queues[request_id]
                    if finish:
                        self._finished(sequence, now)
                sequence.updates.put_nowait(TokenUpdate(text, token_ids, logprobs, finish, error))
        if closed:  # after the messages that came before the end: a worker's last errors reach their requests
            self._on_worker_gone()
        self._publish_load()

    def _timed(self, sequence: _Sequence, tokens: int, now: float) -> None:
        """A sequence's output arrived: its first (time to first token) or a next one (inter-token latency)."""
        if sequence.tokens:
            self._itl.observe(now - sequence.last)
        else:
            sequence.first = now
            self._ttft.observe(now - sequence.reservation.admitted)
            sequence.reservation.prefilled()
        sequence.last = now
        sequence.tokens += tokens

    def _finished(self, sequence: _Sequence, now: float) -> None:
        """A sequence ended normally (not cancelled, not failed): its end-to-end latency and time per token."""
        sequence.reservation.prefilled()  # also when it ended without output
        self._e2e.observe(now - sequence.reservation.admitted)
        if sequence.tokens > 1:
            self._tpot.observe((sequence.last - sequence.first) / (sequence.tokens - 1))

    def _on_worker_gone(self) -> None:
        """On the event loop: the pipe broke. Unexpected unless close() said so first."""
        self._loop.remove_reader(self._conn.fileno())
        if not self._dead:
            self._dead = self._broken = "the generation worker process stopped"
            log.error("generation_worker_gone", model=self._name, exit_code=self._process.poll())
        self._fail_all(self._dead)
        if self._broken:
            self._report_broken()

    def _report_broken(self) -> None:
        """Tell the owner (the model manager) at once, so status and readiness do not wait for a rescan."""
        if self.on_broken is not None and not self._closed:
            self.on_broken()

    def _fail_all(self, reason: str) -> None:
        """End every open request with an error (never leave a stream waiting for a worker that is gone)."""
        for sequence in self._queues.values():
            sequence.updates.put_nowait(TokenUpdate(error=reason))
        self._queues.clear()
        self._scheduled_open = 0
        self._publish_load()

    # ------------------------------------------------------------ any thread

    @property
    def broken(self) -> str | None:
        """None while the worker runs; why it stopped if it died on its own (crash, OOM kill)."""
        if self._broken is None and not self._closed and self._process.poll() is not None:
            self._broken = f"the generation worker process exited (code {self._process.returncode})"
        return self._broken

    def close(self) -> None:
        """Stop the worker (called off the event loop once no request uses the model, or after the
        drain timeout: requests still open then end with an error)."""
        self._closed = True
        self._dead = "the model was unloaded"
        self._outbox.put(("close",))
        self._outbox.put(None)
        self._stop_process()
        self._writer.join(WORKER_STOP_TIMEOUT_S)
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._detach)
                return
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._reader.close()
        self._conn.close()

    def _detach(self) -> None:
        self._loop.remove_reader(self._conn.fileno())
        self._fail_all(self._dead)
        self._record_figures((0.0, 0.0, 0, 0, 0, 0))  # no pipeline any more
        self._reader.close()
        self._conn.close()

    def _stop_process(self) -> None:
        """Wait for the worker to exit; kill it if it does not."""
        if self._process is None:
            return
        try:
            self._process.wait(WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _set_changed(gauges: tuple, values: tuple, shown: tuple | None) -> tuple:
    """Set each gauge whose value differs from what it shows (all of them when `shown` is None);
    returns what they show now. Extra values (past the gauges) are ignored."""
    for index, gauge in enumerate(gauges):
        if shown is None or shown[index] != values[index]:
            gauge.set(values[index])
    return values


def _vocab_size(metadata: ModelMetadata) -> int | None:
    """The logits' last dimension. (Not len(tokenizer.get_vocab_vector()): that decodes every piece as
    UTF-8, and byte-level pieces of GGUF tokenizers are not.)"""
    logits = next((spec for spec in metadata.outputs if spec.name == "logits"), None)
    return logits.shape[-1] if logits is not None and logits.shape and logits.shape[-1] > 0 else None


class GenerationModel:
    task = "text_generation"

    def __init__(self, path: Path, spec: PipelineSpec, metadata: ModelMetadata, model_id: str = "", *,
                 build_lock: AbstractContextManager | None = None) -> None:
        self.metadata = metadata
        self.settings: GenerationSettings = spec.settings
        self.context_length = context_length(path, self.settings)
        self.vocab_size = _vocab_size(metadata)  # bounds token-id prompts; None: unknown
        with build_lock or nullcontext():  # in-process OpenVINO work only; the worker builds without it
            self.tokenizer = SharedTokenizer(path)  # the preparation thread and the event loop share it
        self.preparation = preparation_thread(f"{model_id}:{path.name}")  # prompts: templating, tokenizing
        self.engine = GenerationEngine(path, spec, model_id, path.name)
        self.eos_token_id: int = self.engine.defaults["eos_token_id"]
        self.stop_token_ids: list[int] = self.engine.defaults["stop_token_ids"]
        self.grammar_probe = (GrammarProbe(path, spec, model_id, path.name, self.eos_token_id)
                              if self.settings.schema_probe else None)

    @property
    def broken(self) -> str | None:
        return self.engine.broken

    def watch(self, on_broken: Callable[[], None]) -> None:
        """`on_broken` runs on the event loop as soon as the worker is found dead or stalled."""
        self.engine.on_broken = on_broken

    def close(self) -> None:
        self.engine.close()
        if self.grammar_probe is not None:
            self.grammar_probe.close()
        self.preparation.shutdown(wait=True)
        self.tokenizer = None
