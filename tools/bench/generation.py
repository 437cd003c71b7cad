"""Streaming chat completions through the server's HTTP API against the raw OpenVINO pipeline.

Three modes, measured one after the other in the same run (never two at once: OpenVINO uses every core):

  server  the real server (`python -m server serve`) on a temporary repository holding only the model,
          OpenAI `POST /v3/chat/completions` with stream=true, sent and read with a minimal keep-alive
          HTTP/1.1 client and SSE parser (common.HTTPConnection: httpx cost ~0.3 ms of CPU per chunk on
          the 2 cores the server needs).
  raw     an in-process ContinuousBatchingPipeline with the server's default SchedulerConfig, driven
          by a step() loop: the upper bound an HTTP server on top of it can reach.
  naive   one LLMPipeline behind a lock, generate() per request: what serving gets without
          continuous batching (time waiting for the lock counts in TTFT).

For each concurrency C, C clients each send R requests back to back (greedy, ignore_eos, max_tokens
fixed), so every request produces exactly max_tokens tokens. Per request: TTFT (send -> first
content), inter-token latency (gaps between successive content chunks / token reads) and the number
of completion tokens. Per mode and C: output tokens/s = all completion tokens / wall time.

Caveats: the server's TTFT and ITL count SSE chunks with visible text, raw's count token reads (the
server emits a token's text at the step that produced it, except for held-back partial UTF-8 or stop
string prefixes). Warm-up sends every prompt once, so all modes measure with the prompts in the prefix
cache. Before each measurement the tool waits for other processes to leave the CPU (--idle-wait) and
measures again when they did not (--retries); the "other CPU s" column shows the CPU time they used
anyway. Single runs on a 2-core VM vary by 10-20 %, so server and raw are measured --rounds times,
alternating, and the report gives medians (see Results).

The step cycle table puts the server's worker's own timers (its /metrics histograms
ovms_engine_step_duration_seconds and ovms_engine_step_gap_seconds, read before and after each run) beside
raw's step loop, timed the same way (StepTimes): the engine step, and the caller's time from one step's
end to the next one's start. That share of the cycle is the server's cost on every stream, measured
without comparing two runs. Its "request wait" column (ovms_engine_request_wait_seconds) is how long a
request waited for the engine to take it, the part of the server's time to first token that raw, which
adds a client's next request as soon as a step ends, does not have.

    .venv/bin/python tools/bench/generation.py
    .venv/bin/python tools/bench/generation.py --concurrency 1 8 --modes server raw --max-tokens 128
    .venv/bin/python tools/bench/generation.py --model llama1b-int8 --concurrency 1 4 8
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from common import (  # noqa: E402
    environment, run_on_server, add_model_options, add_output_options, bench_parser, resolve_model_args,
    REPO_ROOT, ConnectionPool, ForeignCPU, Histogram, ServerProcess, fmt, markdown_table, ms, percentile, read_histogram,
    release_memory, process_cpu_seconds, single_model_repository, text_table, wait_for_idle,
)
from models import MODELS as BENCH_MODELS, model_dir as bench_model_dir  # noqa: E402

try:
    from tqdm import tqdm
except ImportError:  # progress bars are optional
    tqdm = None

DEFAULT_MODEL_DIR = REPO_ROOT / "model_repository" / "HuggingFaceTB" / "SmolLM2-135M-Instruct"
MODES = ("server", "raw", "naive")

# Distinct short questions; request r of client c asks PROMPTS[(c * R + r) % len(PROMPTS)] in every mode.
PROMPTS = (
    "What is the capital of France?",
    "Explain photosynthesis in one sentence.",
    "Name three primary colors.",
    "Why is the sky blue?",
    "What does a compiler do?",
    "Give me a synonym for happy.",
    "How many legs does a spider have?",
    "What is the boiling point of water at sea level?",
    "Write a haiku about autumn.",
    "Who wrote Romeo and Juliet?",
    "What is 12 times 12?",
    "Describe a cat in five words.",
    "What is the largest planet in our solar system?",
    "Suggest a name for a pet goldfish.",
    "What language is spoken in Brazil?",
    "How do airplanes stay in the air?",
)
# --workload quote: answers that quote their prompt (what prompt-lookup decoding is for): each asks to
# repeat one passage word for word, so the answer's n-grams are in the prompt.
PASSAGES = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make "
    "glucose and oxygen. It takes place mainly in the chloroplasts of leaf cells.",
    "A compiler translates source code written in a high-level programming language into machine code that "
    "a processor can run. Most compilers parse the code, check it, optimize it and then emit instructions.",
    "The Pacific Ocean is the largest and deepest of the world's five oceans. It extends from the Arctic in "
    "the north to the Southern Ocean in the south and covers about a third of the Earth's surface.",
)
QUOTE_PROMPTS = tuple(f"Repeat the following text exactly, word for word:\n\n{passage}" for passage in PASSAGES)
WORKLOADS = {"questions": PROMPTS, "quote": QUOTE_PROMPTS}


def use_workload(name: str) -> None:
    """Make every mode ask the prompts of workload `name` (questions: short questions; quote: repeat a passage)."""
    global PROMPTS
    PROMPTS = WORKLOADS[name]


# Warm-up, not counted: one short request, then every prompt once (all at once where the mode batches), so
# that every measurement -- whichever C, mode or retry -- finds the prompts in the prefix cache (server, raw).
WARMUP_PROMPT = "Say hello."
WARMUP_TOKENS = 8


def messages_for(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def prompt_index(client: int, request: int, requests_per_client: int) -> int:
    return (client * requests_per_client + request) % len(PROMPTS)


# ----------------------------------------------------------------------------- measurements


@dataclass
class RequestStats:
    client: int
    prompt: int
    start: float  # perf_counter at send / add_request / submit
    first: float | None = None  # first content chunk / token read
    last: float | None = None
    end: float | None = None
    gaps: list[float] = field(default_factory=list)
    completion_tokens: int = 0  # from usage (server) or counted tokens (raw, naive)
    content_events: int = 0  # SSE chunks with content (server) / reads or streamer calls with tokens

    def content(self, now: float) -> None:
        if self.first is None:
            self.first = now
        else:
            self.gaps.append(now - self.last)
        self.last = now
        self.content_events += 1

    @property
    def ttft(self) -> float:
        return self.first - self.start


@dataclass
class Run:
    mode: str
    concurrency: int
    wall: float
    requests: list[RequestStats]
    notes: dict = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return sum(r.completion_tokens for r in self.requests)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall

    def ttft_ms(self, q: float) -> float:
        return ms(percentile([r.ttft for r in self.requests if r.first is not None], q))

    def itl_ms(self, q: float) -> float:
        return ms(percentile([g for r in self.requests for g in r.gaps], q))

    def summary(self) -> dict:
        return {
            "mode": self.mode, "concurrency": self.concurrency, "requests": len(self.requests),
            "completion_tokens": self.tokens, "wall_s": self.wall, "tokens_per_s": self.tokens_per_s,
            "ttft_p50_ms": self.ttft_ms(50), "ttft_p99_ms": self.ttft_ms(99),
            "itl_p50_ms": self.itl_ms(50), "itl_p99_ms": self.itl_ms(99),
            "content_events_per_request": sum(r.content_events for r in self.requests) / max(len(self.requests), 1),
            **self.notes,
        }


class Progress:
    """tqdm when installed, else nothing."""

    def __init__(self, total: int, desc: str) -> None:
        self._bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr) if tqdm else None

    def update(self) -> None:
        if self._bar:
            self._bar.update()

    def close(self) -> None:
        if self._bar:
            self._bar.close()


def check_counts(run: Run, expected: int) -> None:
    wrong = [r for r in run.requests if r.completion_tokens != expected or r.first is None]
    if wrong:
        counts = sorted({r.completion_tokens for r in wrong})
        print(f"warning: {run.mode} C={run.concurrency}: {len(wrong)} request(s) did not produce {expected} tokens "
              f"with content (counts seen: {counts})", file=sys.stderr)


def is_noisy(run: Run) -> bool:
    return run.notes.get("other_cpu_s", 0.0) > OTHER_CPU_LIMIT * run.wall


def measured(args: argparse.Namespace, measure: Callable[[], Run], pids: Sequence[int] = ()) -> Run:
    """Run one measurement on an idle machine: wait for idle first, and measure again (up to
    --retries times) when other processes used the CPU meanwhile. The last attempt counts."""
    for attempt in range(args.retries + 1):
        if args.idle_wait > 0:
            wait_for_idle(args.idle_wait, pids=pids, say=lambda text: print(f"[bench] {text}", file=sys.stderr))
        foreign = ForeignCPU(pids)
        cpu = process_cpu_seconds()
        run = measure()
        run.notes["other_cpu_s"] = foreign.seconds()
        run.notes["cpu_s"] = process_cpu_seconds() - cpu
        run.notes["attempts"] = attempt + 1
        if not is_noisy(run):
            break
        if attempt < args.retries:
            print(f"[bench] {run.mode} C={run.concurrency}: other processes used {run.notes['other_cpu_s']:.1f} CPU s "
                  f"during {run.wall:.1f}s; measuring again", file=sys.stderr)
    check_counts(run, args.max_tokens)
    return run


# ----------------------------------------------------------------------------- mode: server (HTTP)


class ServerMode:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir

    def run_all(self) -> list[Run]:
        args = self.args
        repository = single_model_repository(args.model_dir, args.model_id, parent=self.workdir)
        return run_on_server(repository, self.workdir, args.model_id, args.keep_server_log, self._run_all)

    async def _run_all(self, server: ServerProcess) -> list[Run]:
        args = self.args
        pool = ConnectionPool(server.base_url, max(max(args.concurrency), len(PROMPTS)))
        try:
            await self._request(pool, WARMUP_PROMPT, WARMUP_TOKENS, RequestStats(-1, -1, 0.0))
            await asyncio.gather(*(self._request(pool, prompt, WARMUP_TOKENS, RequestStats(-1, -1, 0.0))
                                   for prompt in PROMPTS))
            runs = []
            for concurrency in args.concurrency:
                for attempt in range(args.retries + 1):
                    if args.idle_wait > 0:
                        await asyncio.to_thread(wait_for_idle, args.idle_wait, pids=[server.process.pid],
                                                say=lambda text: print(f"[bench] {text}", file=sys.stderr))
                    cycle = await asyncio.to_thread(self._step_histograms, server)
                    server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
                    foreign = ForeignCPU([server.process.pid])
                    run = await self._run(pool, concurrency)
                    run.notes["cpu_s"] = server.cpu_seconds() - server_cpu
                    run.notes["client_cpu_s"] = time.process_time() - client_cpu
                    run.notes["other_cpu_s"] = foreign.seconds()
                    steps, gaps, waits = [after - before for after, before in
                                          zip(await asyncio.to_thread(self._step_histograms, server), cycle)]
                    if steps.count:  # (a server without these histograms reports no cycle)
                        run.notes.update(cycle_step_ms=ms(steps.mean), cycle_between_ms=ms(gaps.mean),
                                         cycle_steps=steps.count, request_wait_ms=ms(waits.mean))
                    run.notes["attempts"] = attempt + 1
                    if not is_noisy(run):
                        break
                    if attempt < args.retries:
                        print(f"[bench] server C={concurrency}: other processes used {run.notes['other_cpu_s']:.1f} "
                              f"CPU s during {run.wall:.1f}s; measuring again", file=sys.stderr)
                check_counts(run, args.max_tokens)
                runs.append(run)
            return runs
        finally:
            await pool.close()

    def _step_histograms(self, server: ServerProcess) -> tuple[Histogram, Histogram, Histogram]:
        """The worker's own timers (its /metrics histograms): pipeline steps, its time between steps, and
        how long each request waited for the engine to take it."""
        return tuple(read_histogram(server.base_url, name, "model", self.args.model_id)
                     for name in ("ovms_engine_step_duration_seconds", "ovms_engine_step_gap_seconds",
                                  "ovms_engine_request_wait_seconds"))

    async def _run(self, pool, concurrency: int) -> Run:
        args = self.args
        results: list[RequestStats] = []
        progress = Progress(concurrency * args.requests_per_client, f"server C={concurrency}")

        async def one_client(c: int) -> None:
            for r in range(args.requests_per_client):
                index = prompt_index(c, r, args.requests_per_client)
                stats = RequestStats(c, index, 0.0)
                await self._request(pool, PROMPTS[index], args.max_tokens, stats)
                results.append(stats)
                progress.update()

        start = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(concurrency)))
        wall = time.perf_counter() - start
        progress.close()
        return Run("server", concurrency, wall, results)

    async def _request(self, pool, prompt: str, max_tokens: int, stats: RequestStats) -> None:
        body = {
            "model": self.args.model_id, "messages": messages_for(prompt), "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
        }
        payload = json.dumps(body).encode()
        async with pool.connection() as connection:
            stats.start = time.perf_counter()
            status, pieces = await connection.stream("/v3/chat/completions", payload)
            buffer = b""
            done = False
            async for data in pieces:
                now = time.perf_counter()  # frames that arrive together share one timestamp
                buffer += data
                while not done:
                    end = buffer.find(b"\n\n")
                    if end < 0:
                        break
                    frame, buffer = buffer[:end], buffer[end + 2:]
                    if status != 200:
                        raise RuntimeError(f"HTTP {status}: {frame[:500]!r}")
                    done = self._frame(frame, now, stats)
            stats.end = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {buffer[:500]!r}")
            if not done:
                raise RuntimeError("stream ended without [DONE]")

    @staticmethod
    def _frame(frame: bytes, now: float, stats: RequestStats) -> bool:
        """One SSE event; True at [DONE]."""
        for line in frame.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return True
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"error event: {event['error']}")
            if any(choice.get("delta", {}).get("content") for choice in event.get("choices") or ()):
                stats.content(now)
            if event.get("usage"):
                stats.completion_tokens = event["usage"]["completion_tokens"]
        return False


# ----------------------------------------------------------------------------- in-process pipelines


def served_settings(model_dir: Path):
    """The PipelineSpec the server builds for this model folder: its config.json with schema defaults."""
    from server.repository.config import build, parse

    config_file = Path(model_dir) / "config.json"
    if config_file.is_file():
        return parse(config_file.read_bytes()).pipeline
    return build({"task": "text_generation"}).pipeline


class _Prompts:
    """Chat template + tokenization of every prompt, done before timing (the server does it per request)."""

    def __init__(self, tokenizer) -> None:
        import numpy as np
        import openvino as ov

        def encode(prompt: str):
            text = tokenizer.apply_chat_template(messages_for(prompt), add_generation_prompt=True)
            ids = tokenizer.encode(text, add_special_tokens=False).input_ids.data[0].tolist()
            return ov.Tensor(np.array([ids], dtype=np.int64))  # what the server hands to add_request

        self.tensors = [encode(p) for p in PROMPTS]
        self.warmup = encode(WARMUP_PROMPT)


def _generation_config(defaults, max_new_tokens: int, settings=None, assistant_tokens: int | None = None):
    """What the server builds for temperature 0 + ignore_eos (services/generation_plan.py), through the
    server's own build_config; with the model's prompt-lookup fields when its settings turn it on, or
    `assistant_tokens` per step for a draft model (variants.py's speculative decoding)."""
    from server.pipelines.sampling import build_config

    params = {"eos_token_id": defaults.eos_token_id, "stop_token_ids": list(defaults.stop_token_ids),
              "max_new_tokens": max_new_tokens, "ignore_eos": True}  # no do_sample: greedy
    if settings is not None and settings.prompt_lookup:
        params.update(num_assistant_tokens=settings.num_assistant_tokens, max_ngram_size=settings.max_ngram_size)
    if assistant_tokens is not None:
        params["num_assistant_tokens"] = assistant_tokens
    return build_config(params)


class RawMode:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def run_all(self) -> list[Run]:
        import openvino_genai as ov_genai
        from server.pipelines.generation_worker import engine_properties, scheduler_config

        args = self.args
        spec = served_settings(args.model_dir)
        settings = dataclasses.asdict(spec.settings)
        properties = engine_properties(settings, dict(spec.plugin_config))
        # variants.py's speculative decoding: a draft model (with the target's properties) proposing tokens
        draft = getattr(args, "draft_dir", None)
        assistant_tokens = getattr(args, "assistant_tokens", None) if draft else None
        if draft:
            properties["draft_model"] = ov_genai.draft_model(str(draft), spec.device, **spec.plugin_config)
        t0 = time.perf_counter()
        pipeline = ov_genai.ContinuousBatchingPipeline(
            str(args.version_dir), scheduler_config(settings), spec.device, properties)
        print(f"[raw] ContinuousBatchingPipeline loaded in {time.perf_counter() - t0:.1f}s "
              f"({spec.device}, scheduler {self._describe(settings)}, "
              f"properties {dict(spec.plugin_config)}"
              f"{f', draft {draft}, {assistant_tokens} tokens per step' if draft else ''})", file=sys.stderr)
        try:
            self._ids = itertools.count()
            prompts = _Prompts(pipeline.get_tokenizer())
            defaults = pipeline.get_config()
            warmup = _generation_config(defaults, WARMUP_TOKENS, spec.settings, assistant_tokens)
            self._drive(pipeline, [deque([prompts.warmup])], warmup, [])
            self._drive(pipeline, [deque([tensor]) for tensor in prompts.tensors], warmup, [])
            config_tokens = _generation_config(defaults, args.max_tokens, spec.settings, assistant_tokens)

            def measure(concurrency: int) -> Run:
                queues = [deque(prompt_index(c, r, args.requests_per_client) for r in range(args.requests_per_client))
                          for c in range(concurrency)]
                progress = Progress(concurrency * args.requests_per_client, f"raw C={concurrency}")
                results: list[RequestStats] = []
                cycle = StepTimes()
                start = time.perf_counter()
                self._drive(pipeline, queues, config_tokens, results, prompts.tensors, progress.update, cycle)
                wall = time.perf_counter() - start
                progress.close()
                return Run("raw", concurrency, wall, results, cycle.notes())

            runs = [measured(args, lambda: measure(concurrency)) for concurrency in args.concurrency]
            for run in runs:
                if run.concurrency == 1 and getattr(args, "breakdown", True):
                    run.notes["step_ms"] = step_breakdown(pipeline, prompts, config_tokens, args.requests_per_client)
            return runs
        finally:
            del pipeline
            release_memory()

    @staticmethod
    def _describe(settings: dict) -> str:
        keys = ("max_num_seqs", "max_num_batched_tokens", "cache_size", "enable_prefix_caching", "dynamic_split_fuse")
        return ", ".join(f"{k}={settings[k]}" for k in keys)

    def _drive(self, pipeline, queues: list[deque], config, results: list[RequestStats],
               tensors: list | None = None, on_done: Callable[[], None] = lambda: None,
               cycle: "StepTimes | None" = None) -> None:
        """Client c's requests are queues[c] (prompt indices, or tensors directly when tensors is None);
        each client keeps one request in flight and adds its next one as soon as the previous finishes."""
        import openvino_genai as ov_genai

        running = ov_genai.GenerationStatus.RUNNING
        finished = ov_genai.GenerationStatus.FINISHED
        active: dict[int, tuple[int, object, RequestStats]] = {}

        def add(client: int) -> None:
            item = queues[client].popleft()
            tensor = item if tensors is None else tensors[item]
            request_id = next(self._ids)
            stats = RequestStats(client, -1 if tensors is None else item, time.perf_counter())
            active[request_id] = (client, pipeline.add_request(request_id, tensor, config), stats)

        cycle = cycle or StepTimes()
        for client in range(len(queues)):
            add(client)
        while active:
            cycle.started()
            pipeline.step()
            now = cycle.ended()
            for request_id, (client, handle, stats) in list(active.items()):
                if handle.can_read():
                    count = sum(len(output.generated_ids) for output in handle.read().values())
                    if count:
                        stats.completion_tokens += count
                        stats.content(now)
                status = handle.get_status()
                if status != running:
                    if status != finished:
                        raise RuntimeError(f"raw request {request_id} ended with status {status}")
                    stats.end = now
                    del active[request_id]
                    results.append(stats)
                    on_done()
                    if queues[client]:
                        add(client)


class StepTimes:
    """Raw's steps timed as the server's worker times its own (generation_worker.py): each step() call, and
    the time from one step's end to the next one's start (here: this loop's reads and adds; at C = 1 the
    add of a client's next request counts too, where the server's worker starts a new busy period)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.step_s = self.between_s = 0.0
        self.steps = self.betweens = 0
        self._start = self._end = 0.0
        self._clock = clock

    def started(self) -> None:
        self._start = self._clock()
        if self.steps:
            self.between_s += self._start - self._end
            self.betweens += 1

    def ended(self) -> float:
        self._end = self._clock()
        self.step_s += self._end - self._start
        self.steps += 1
        return self._end

    def notes(self) -> dict[str, float]:
        return {"cycle_step_ms": ms(self.step_s / self.steps) if self.steps else float("nan"),
                "cycle_between_ms": ms(self.between_s / self.betweens) if self.betweens else float("nan"),
                "cycle_steps": self.steps}


def step_breakdown(pipeline, prompts: "_Prompts", config, requests: int) -> dict[str, float]:
    """One decode step of one stream, in ms, from OpenVINO GenAI's own perf metrics: the pipeline's
    generate() on the same prompts. inference = the model's infer request; sampling = GenAI's sampler;
    engine other = the rest of a step (scheduler, KV-cache blocks, bookkeeping). detokenize = one batched
    Tokenizer.decode of one token, as the server's worker calls it once per step."""
    steps, inference, sampling = [], [], []
    for index in range(requests):
        result = pipeline.generate([prompts.tensors[index % len(prompts.tensors)]], [config])[0]
        metrics = result.perf_metrics
        raw = metrics.raw_metrics
        generated = metrics.get_num_generated_tokens()
        if generated < 2:
            continue
        steps.append((metrics.get_generate_duration().mean - metrics.get_ttft().mean) / (generated - 1))
        # get_inference_duration: the model's infer requests over the whole generation, in ms; the
        # first entry of token_infer_durations (microseconds) is the prompt's step, left out here.
        first_step = list(raw.token_infer_durations)[0] / 1000
        inference.append((metrics.get_inference_duration().mean - first_step) / (generated - 1))
        sampling.append(_mean(raw.sampling_durations) / 1000)
    tokenizer = pipeline.get_tokenizer()
    started = time.perf_counter()
    for _ in range(100):
        tokenizer.decode([[int(prompts.tensors[0].data[0][-1])]])
    detokenize = (time.perf_counter() - started) * 10  # ms per call
    step = statistics.median(steps)
    return {"step": step, "inference": statistics.median(inference), "sampling": statistics.median(sampling),
            "engine_other": step - statistics.median(inference) - statistics.median(sampling),
            "detokenize": detokenize}


def _mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else float("nan")


def breakdown_line(raw: Run, server: Run | None) -> str:
    """C = 1: where one step's time goes (raw perf metrics; the server's extra = its ITL minus raw's)."""
    parts = raw.notes["step_ms"]
    text = (f"one step at C=1 (ms): raw engine step {parts['step']:.2f} = model inference {parts['inference']:.2f} "
            f"+ sampling {parts['sampling']:.3f} + scheduler and other engine work {parts['engine_other']:.2f}; "
            f"batched detokenize {parts['detokenize']:.3f}")
    if server is not None:
        extra = server.itl_ms(50) - raw.itl_ms(50)
        text += (f"; server ITL p50 {server.itl_ms(50):.2f} - raw ITL p50 {raw.itl_ms(50):.2f} = {extra:+.2f} "
                 "(detokenization, worker IPC, SSE and HTTP)")
    return text


CYCLE_HEADERS = ("C", "server step ms", "server between steps ms", "between / cycle", "server request wait ms",
                 "raw step ms", "raw between steps ms", "server step / raw step")


def cycle_row(server: Run | None, raw: Run | None, concurrency: int) -> list[str] | None:
    """One step cycle (means over the median runs): the server's from its worker's own timers (/metrics),
    raw's from its step loop. "between" is what the caller does from one step's end to the next one's start;
    "request wait" how long the server's requests waited for the engine to take them."""
    if server is None or "cycle_step_ms" not in server.notes:
        return None
    step, between = server.notes["cycle_step_ms"], server.notes["cycle_between_ms"]
    share = between / (step + between)  # NaN when every step began a busy period (nothing between)
    row = [str(concurrency), fmt(step, 2), fmt(between, 3), "-" if math.isnan(share) else f"{share:.1%}",
           fmt(server.notes.get("request_wait_ms"), 2)]
    if raw is None or "cycle_step_ms" not in raw.notes:
        return row + ["-", "-", "-"]
    return row + [fmt(raw.notes["cycle_step_ms"], 2), fmt(raw.notes["cycle_between_ms"], 3),
                  f"{step / raw.notes['cycle_step_ms']:.2f}"]


def token_timer(stats: RequestStats):
    """An LLMPipeline streamer that timestamps every token into stats (no detokenization)."""
    import openvino_genai as ov_genai

    class TokenTimer(ov_genai.StreamerBase):
        def write(self, token):
            now = time.perf_counter()
            stats.completion_tokens += len(token) if isinstance(token, list) else 1
            stats.content(now)
            return ov_genai.StreamingStatus.RUNNING

        def end(self) -> None:
            pass

    return TokenTimer()


class NaiveMode:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def run_all(self) -> list[Run]:
        import openvino_genai as ov_genai

        args = self.args
        spec = served_settings(args.model_dir)
        t0 = time.perf_counter()
        pipeline = ov_genai.LLMPipeline(str(args.version_dir), spec.device, dict(spec.plugin_config))
        print(f"[naive] LLMPipeline loaded in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        try:
            prompts = _Prompts(pipeline.get_tokenizer())
            defaults = pipeline.get_generation_config()
            lock = threading.Lock()
            warmup = _generation_config(defaults, WARMUP_TOKENS)
            for tensor in [prompts.warmup, *prompts.tensors]:
                pipeline.generate(tensor, warmup, token_timer(RequestStats(-1, -1, time.perf_counter())))
            generation_config = _generation_config(defaults, args.max_tokens)

            def measure(concurrency: int) -> Run:
                results: list[RequestStats] = []
                errors: list[BaseException] = []
                progress = Progress(concurrency * args.requests_per_client, f"naive C={concurrency}")

                def one_client(c: int) -> None:
                    try:
                        for r in range(args.requests_per_client):
                            index = prompt_index(c, r, args.requests_per_client)
                            stats = RequestStats(c, index, time.perf_counter())
                            with lock:  # one generate() at a time: waiting here counts in TTFT
                                pipeline.generate(prompts.tensors[index], generation_config, token_timer(stats))
                            stats.end = time.perf_counter()
                            results.append(stats)
                            progress.update()
                    except BaseException as exc:  # noqa: BLE001 - reported after join
                        errors.append(exc)

                threads = [threading.Thread(target=one_client, args=(c,), name=f"naive-client-{c}")
                           for c in range(concurrency)]
                start = time.perf_counter()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                wall = time.perf_counter() - start
                progress.close()
                if errors:
                    raise errors[0]
                return Run("naive", concurrency, wall, results)

            return [measured(args, lambda: measure(concurrency)) for concurrency in args.concurrency]
        finally:
            del pipeline
            release_memory()


# ----------------------------------------------------------------------------- report


HEADERS = ("mode", "tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms", "tok/s vs raw",
           "TTFT p50 - raw ms")
# Other processes may use at most this share of the wall time (in CPU seconds) before a run is flagged.
OTHER_CPU_LIMIT = 0.05


class Results:
    """Runs by (mode, C) over all rounds. A mode's figures are those of its median-tok/s run; the
    ratio and TTFT delta against raw are medians of the per-round values (each round measures server
    and raw minutes apart, so drift of the machine between rounds does not bias them)."""

    def __init__(self, runs: list[Run]) -> None:
        self.runs: dict[tuple[str, int], list[Run]] = {}
        for run in runs:
            self.runs.setdefault((run.mode, run.concurrency), []).append(run)

    def has(self, mode: str, concurrency: int) -> bool:
        return (mode, concurrency) in self.runs

    def median_run(self, mode: str, concurrency: int) -> Run:
        runs = sorted(self.runs[(mode, concurrency)], key=lambda run: run.tokens_per_s)
        return runs[(len(runs) - 1) // 2]

    def _paired(self, mode: str, concurrency: int) -> list[tuple[Run, Run]]:
        raws = {run.notes.get("round", 0): run for run in self.runs.get(("raw", concurrency), [])}
        return [(run, raws[run.notes.get("round", 0)]) for run in self.runs[(mode, concurrency)]
                if run.notes.get("round", 0) in raws]

    def ratios(self, mode: str, concurrency: int) -> list[float]:
        return [run.tokens_per_s / raw.tokens_per_s for run, raw in self._paired(mode, concurrency)]

    def ttft_deltas(self, mode: str, concurrency: int) -> list[float]:
        return [run.ttft_ms(50) - raw.ttft_ms(50) for run, raw in self._paired(mode, concurrency)]

    def row(self, mode: str, concurrency: int) -> list[str]:
        run = self.median_run(mode, concurrency)
        ratios, deltas = self.ratios(mode, concurrency), self.ttft_deltas(mode, concurrency)
        ratio = f"{statistics.median(ratios):.2f}x" if ratios else "-"
        delta = fmt(statistics.median(deltas)) if deltas else "-"
        return [mode, fmt(run.tokens_per_s), fmt(run.ttft_ms(50)), fmt(run.ttft_ms(99)), fmt(run.itl_ms(50), 2),
                fmt(run.itl_ms(99), 2), ratio, delta]


# CPU s: CPU time of the server process (server) or of this process (raw, naive) during the measurement.
EXTRA_HEADERS = ("CPU s", "tok/CPU s", "other CPU s", "tries")


def _extra(run: Run) -> list[str]:
    cpu = run.notes.get("cpu_s", float("nan"))
    return [fmt(cpu, 2), fmt(run.tokens / cpu if cpu else float("nan")), fmt(run.notes.get("other_cpu_s"), 2),
            str(run.notes.get("attempts", 1))]


def report(runs: list[Run], args: argparse.Namespace) -> str:
    results = Results(runs)
    lines = []
    for concurrency in args.concurrency:
        modes = [mode for mode in MODES if results.has(mode, concurrency)]
        n = concurrency * args.requests_per_client
        lines.append(f"\nC={concurrency}: {concurrency} client(s) x {args.requests_per_client} request(s) = {n} "
                     f"requests, {args.max_tokens} tokens each")
        lines.append(text_table((*HEADERS, *EXTRA_HEADERS), [
            [*results.row(mode, concurrency), *_extra(results.median_run(mode, concurrency))] for mode in modes]))
        if concurrency == 1 and results.has("raw", 1) and "step_ms" in results.median_run("raw", 1).notes:
            lines.append(breakdown_line(results.median_run("raw", 1),
                                        results.median_run("server", 1) if results.has("server", 1) else None))
        if results.has("server", concurrency):
            server = results.median_run("server", concurrency)
            lines.append(f"server: benchmark client CPU {server.notes['client_cpu_s']:.2f}s, "
                         f"{sum(r.content_events for r in server.requests) / len(server.requests):.1f} content "
                         f"chunks/request")
            if len(results.runs[("server", concurrency)]) > 1:
                ratios = ", ".join(f"{r:.2f}" for r in results.ratios("server", concurrency))
                deltas = ", ".join(fmt(d) for d in results.ttft_deltas("server", concurrency))
                lines.append(f"server/raw tok/s by round: {ratios}; TTFT p50 - raw by round (ms): {deltas}")
    md_rows = [[str(concurrency), *results.row(mode, concurrency)]
               for concurrency in args.concurrency for mode in MODES if results.has(mode, concurrency)]
    cycles = [row for concurrency in args.concurrency if (row := cycle_row(
        results.median_run("server", concurrency) if results.has("server", concurrency) else None,
        results.median_run("raw", concurrency) if results.has("raw", concurrency) else None, concurrency))]
    if cycles:
        lines.append("\nOne step cycle (means of the median runs; server: its worker's timers, from /metrics):")
        lines.append(text_table(CYCLE_HEADERS, cycles))
    lines.append("\nMarkdown:\n")
    lines.append(markdown_table(("C", *HEADERS), md_rows))
    if cycles:
        lines.append("")
        lines.append(markdown_table(CYCLE_HEADERS, cycles))
    noisy = [run for run in runs if is_noisy(run)]
    if noisy:
        lines.append("\nWARNING: other processes used CPU during " + ", ".join(
            f"{run.mode} C={run.concurrency} ({run.notes['other_cpu_s']:.1f}s over {run.wall:.1f}s)" for run in noisy)
            + ": those numbers are not clean; rerun on an idle machine.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16], help="client counts (1 4 8 16)")
    parser.add_argument("--requests-per-client", type=int, default=4, help="requests each client sends in turn (4)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure server and raw this many times, alternating; report medians (3). "
                             "naive is measured in the first round only")
    parser.add_argument("--max-tokens", type=int, default=64, help="completion tokens per request (64)")
    add_model_options(parser, MODES, DEFAULT_MODEL_DIR,
                      "model folder with config.json and version folders (the demo SmolLM2-135M-Instruct)")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="questions",
                        help="questions: short distinct questions (default); quote: repeat a passage word for word")
    parser.add_argument("--model", choices=sorted(BENCH_MODELS),
                        help="a benchmark model of tools/bench/models.py instead of --model-dir (built if missing)")
    parser.add_argument("--idle-wait", type=float, default=300.0,
                        help="before each measurement, wait up to this many seconds for other processes to leave "
                             "the CPU (default 300; 0: do not wait)")
    parser.add_argument("--retries", type=int, default=3,
                        help="measure again when other processes used the CPU meanwhile, up to this many times (3)")
    add_output_options(parser, "also write every per-mode summary to this JSON file")
    args = parser.parse_args(argv)
    use_workload(args.workload)
    if args.model:
        args.model_dir = bench_model_dir(args.model)
        args.model_id = args.model_id or f"bench/{args.model}"
    resolve_model_args(parser, args)
    if min(args.concurrency) < 1 or args.requests_per_client < 1 or args.max_tokens < 1 or args.rounds < 1:
        parser.error("--concurrency, --requests-per-client, --max-tokens and --rounds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    print(f"Generation benchmark: {environment(args)}")
    print(f"modes {' '.join(args.modes)}; concurrency {' '.join(map(str, args.concurrency))}; "
          f"{args.requests_per_client} request(s)/client; max_tokens {args.max_tokens}, ignore_eos, greedy, "
          f"streaming; {args.rounds} round(s)")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
        for round_index in range(args.rounds):
            for mode in args.modes:
                if mode == "naive" and round_index > 0:
                    continue
                mode_began = time.perf_counter()
                if mode == "server":
                    mode_runs = ServerMode(args, Path(tmp)).run_all()
                elif mode == "raw":
                    mode_runs = RawMode(args).run_all()
                else:
                    mode_runs = NaiveMode(args).run_all()
                for run in mode_runs:
                    run.notes["round"] = round_index
                runs += mode_runs
                print(f"[{mode}] round {round_index + 1}/{args.rounds} done in "
                      f"{time.perf_counter() - mode_began:.1f}s", file=sys.stderr)
    print(report(runs, args))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v
                                                  for k, v in vars(args).items()},
                                         "runs": [run.summary() for run in runs]}, indent=2))
    print(f"\nTotal runtime {time.perf_counter() - began:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
