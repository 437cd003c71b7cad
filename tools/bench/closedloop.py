"""Scaffolding of the benchmarks that compare the server with the raw embedding pipeline in process
(embeddings.py, rerank.py): their options, the server mode (C keep-alive clients sending back to back,
micro-batch sizes from GET /metrics, CPU accounting), the raw mode (a TextEmbeddingPipeline built like the
server's, timed passes over the same texts), the server/raw table and the run of both modes.

A benchmark subclasses ServerMode and RawMode with what differs (the request and its check, the texts,
the batch size at concurrency C, what is compared between the modes) and calls parse_comparison_args()
and run_comparison(). Nothing here imports the server package at import time (--help stays fast).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from common import (
    ConnectionPool, ForeignCPU, Histogram, ServerProcess, add_model_options, add_output_options, bench_parser,
    closed_loop, environment, fmt, foreign_warning, markdown_table, model_config_document, ms, new_event_loop_policy,
    percentile, read_histogram, release_memory, resolve_model_args, run_on_server, single_model_repository,
    text_table, wait_for_idle, write_model_config,
)

MODES = ("server", "raw")
GOAL = 0.85  # server/raw wanted at the highest concurrency (issue 12 raised it from 0.8)


def text_embedding_pipeline(path: Path, spec, *, pooling: str, normalize: bool, max_length: int):
    """The raw reference: OpenVINO GenAI's own TextEmbeddingPipeline with the served settings (the server
    runs the same IR itself, on padded shapes: server/pipelines/embeddings.py)."""
    import openvino_genai as ov_genai

    config = ov_genai.TextEmbeddingPipeline.Config()
    config.pooling_type = getattr(ov_genai.TextEmbeddingPipeline.PoolingType, pooling.upper())
    config.normalize, config.max_length = normalize, max_length
    return ov_genai.TextEmbeddingPipeline(str(path), spec.device, config, **spec.plugin_config)


# ----------------------------------------------------------------------------- measurements


@dataclass
class ServerRun:
    concurrency: int
    wall: float
    latencies: list[float]
    items: int  # what `rate` counts: requests, or the documents in them
    batches: Histogram
    server_cpu_s: float
    client_cpu_s: float
    unit: str = "requests"
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.wall

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies) / self.wall

    def latency_ms(self, q: float) -> float:
        return ms(percentile(self.latencies, q))

    def summary(self) -> dict:
        # Items other than requests get a count and a rate of their own, ahead of the request rate.
        items = {} if self.unit == "requests" else {self.unit: self.items}
        rate = {} if self.unit == "requests" else {f"{self.unit}_per_s": self.rate}
        return {"mode": "server", "concurrency": self.concurrency, "requests": len(self.latencies), **items,
                "wall_s": self.wall, **rate, "requests_per_s": self.requests_per_s, "p50_ms": self.latency_ms(50),
                "p99_ms": self.latency_ms(99), "batches": self.batches.count, "mean_batch": self.batches.mean,
                "server_cpu_s": self.server_cpu_s, "client_cpu_s": self.client_cpu_s, "note": self.note}


@dataclass
class RawRun:
    concurrency: int  # 0: a reference outside the per-C comparison
    batch_size: int  # texts per pipeline call
    wall: float  # all passes
    items: int  # all passes
    calls: int
    unit: str  # what `items` counts: sentences, documents
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.wall

    def summary(self) -> dict:
        return {"mode": "raw", "concurrency": self.concurrency, "batch_size": self.batch_size, "wall_s": self.wall,
                self.unit: self.items, "calls": self.calls, f"{self.unit}_per_s": self.rate, "note": self.note}


# ----------------------------------------------------------------------------- mode: server (HTTP)


class ServerMode:
    """The real server on a temporary repository holding only the model; for each C, --requests POSTs to
    `path` shared round-robin by C keep-alive clients. A subclass says what request i is (body), what a
    good answer is (check) and what of it the raw mode compares (sample_values)."""

    path: str = ""
    unit: str = "requests"  # what ServerRun.rate counts
    rate_label: str = "req/s"  # of ServerRun.rate, in the progress line
    period: int = 1  # request i sends the same body as request i % period
    warmup_alone: int = 16  # requests sent one at a time before anything else

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.sample: dict[int, list[float]] = {}  # request index -> sample_values(), for the raw comparison
        self._payloads: dict[int, bytes] = {}

    def body(self, i: int) -> dict:
        raise NotImplementedError

    def check(self, i: int, response: dict) -> None:
        """Raise RuntimeError when the response to request i is not what was asked for."""
        raise NotImplementedError

    def sample_values(self, response: dict) -> list[float]:
        raise NotImplementedError

    def items(self, requests: int) -> int:
        return requests

    def payload(self, i: int) -> bytes:
        key = i % self.period
        if key not in self._payloads:
            self._payloads[key] = json.dumps(self.body(key)).encode()
        return self._payloads[key]

    def run_all(self) -> list[ServerRun]:
        args = self.args
        repository = single_model_repository(args.model_dir, args.model_id, parent=self.workdir)
        if args.server_config:
            write_model_config(repository, args.model_id, args.config_document)
        return run_on_server(repository, self.workdir, args.model_id, args.keep_server_log, self._run_all)

    async def _run_all(self, server: ServerProcess) -> list[ServerRun]:
        args = self.args
        for i in range(args.requests):  # build every payload before timing
            self.payload(i)
        most = max(args.concurrency)
        pool = ConnectionPool(server.base_url, most)
        try:

            async def send(i: int) -> None:
                response = await pool.post_json(self.path, self.payload(i))
                self.check(i, response)
                if i < 4 and i not in self.sample:
                    self.sample[i] = self.sample_values(response)

            # Warm-up (not counted): requests alone, then at each C one whole pass of the measured
            # requests, as raw mode gets one uncounted pass per C. The CPU plugin compiles kernels for
            # each new input shape on first use; after a burst of 2*C only, the measured run still met
            # (rows, width) shapes that the raw mode had already met in its uncounted pass.
            await closed_loop(1, self.warmup_alone, send)
            runs = []
            for concurrency in args.concurrency:
                await closed_loop(concurrency, args.requests, send)
                before = self._batches(server)
                server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
                foreign = ForeignCPU([server.process.pid])
                wall, latencies = await closed_loop(concurrency, args.requests, send)
                foreign_s = foreign.seconds()
                run = ServerRun(concurrency, wall, latencies, self.items(args.requests), self._batches(server) - before,
                                server.cpu_seconds() - server_cpu, time.process_time() - client_cpu, self.unit)
                run.note = foreign_warning(foreign_s, wall)
                print(f"[server] C={concurrency}: {run.rate:.1f} {self.rate_label}, p50 {run.latency_ms(50):.1f} ms, "
                      f"{run.batches.describe()}", file=sys.stderr)
                runs.append(run)
            return runs
        finally:
            await pool.close()

    def _batches(self, server: ServerProcess) -> Histogram:
        return read_histogram(server.base_url, "ovms_batch_size", "model", self.args.model_id + ":")


# ----------------------------------------------------------------------------- mode: raw (in process)


def served_config(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None):
    """The ModelConfig the server builds for this model folder (config.json + overrides, schema defaults);
    with a parser, an invalid config is a usage error."""
    from server.repository.config import ConfigError, build

    try:
        return build(args.config_document)
    except ConfigError as exc:
        if parser is None:
            raise
        parser.error(f"config.json with overrides is invalid: {exc}")


class RawMode:
    """An in-process TextEmbeddingPipeline built like the server's, embedding the server mode's texts in
    the same order, in the batches the server's micro-batching can reach at best: the upper bound. A
    subclass says which texts, the batch size at C, how many items a pass counts and what it compares."""

    unit: str = "sentences"  # what RawRun.rate counts
    batch_label: str = ""  # after the batch size in the progress line

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.reference: RawRun | None = None  # a run outside the per-C comparison, set by finish()

    def normalize(self, settings) -> bool:
        """Whether the raw pipeline normalizes, given the served task settings (EmbeddingSettings here)."""
        return settings.normalize

    def texts(self) -> list[str]:
        raise NotImplementedError

    def batch_size(self, concurrency: int, max_batch_size: int) -> int:
        raise NotImplementedError

    def items_per_pass(self) -> int:
        return self.args.requests

    def compare(self, pipeline, sample: dict[int, list[float]]) -> None:
        """Print how far the pipeline's answers are from the server's sample."""
        raise NotImplementedError

    def one_pass(self, pipeline, chunks: list[list[str]]) -> None:
        """One counted pass over the texts; a subclass that also uses the vectors (scores) overrides it."""
        for chunk in chunks:
            pipeline.embed_documents(chunk)

    def finish(self, pipeline, texts: list[str]) -> None:
        """After the per-C runs, with the pipeline still loaded."""

    def run_all(self, sample: dict[int, list[float]]) -> list[RawRun]:
        args = self.args
        spec = served_config(args).pipeline
        settings = spec.settings
        normalize = self.normalize(settings)
        release_memory()
        t0 = time.perf_counter()
        pipeline = text_embedding_pipeline(args.version_dir, spec, pooling=settings.pooling, normalize=normalize,
                                           max_length=settings.max_length)
        print(f"[raw] TextEmbeddingPipeline loaded in {time.perf_counter() - t0:.1f}s ({spec.device}, "
              f"pooling {settings.pooling}, normalize {normalize}, max_length {settings.max_length}, "
              f"properties {dict(spec.plugin_config)})", file=sys.stderr)
        try:
            texts = self.texts()
            pipeline.embed_documents(["warm up"])
            if sample:  # same answers as the server's?
                self.compare(pipeline, sample)
            runs = []
            for concurrency in args.concurrency:
                batch = self.batch_size(concurrency, settings.max_batch_size)
                runs.append(self.measure(pipeline, texts, batch, concurrency))
                print(f"[raw] C={concurrency}: batch {batch}{self.batch_label}, {runs[-1].rate:.1f} {self.unit}/s",
                      file=sys.stderr)
            self.finish(pipeline, texts)
            return runs
        finally:
            del pipeline
            release_memory()

    def measure(self, pipeline, texts: list[str], batch: int, concurrency: int) -> RawRun:
        chunks = [texts[i: i + batch] for i in range(0, len(texts), batch)]
        for chunk in chunks:  # warm-up pass, not counted: the CPU plugin meets every input shape once
            pipeline.embed_documents(chunk)
        passes = self.args.raw_passes
        foreign = ForeignCPU()
        start = time.perf_counter()
        for _ in range(passes):
            self.one_pass(pipeline, chunks)
        wall = time.perf_counter() - start
        note = foreign_warning(foreign.seconds(), wall)
        return RawRun(concurrency, batch, wall, self.items_per_pass() * passes, len(chunks) * passes, self.unit, note)


# ----------------------------------------------------------------------------- report


def server_raw_ratio(server: ServerRun | None, raw: RawRun | None, rounds: Sequence[float]) -> float | None:
    """server/raw at one C: the median of the rounds' ratios when there were rounds, else of the one run."""
    if rounds:
        return statistics.median(rounds)
    return server.rate / raw.rate if server and raw else None


def comparison_rows(server_runs: list[ServerRun], raw_runs: list[RawRun], concurrencies: Sequence[int], *,
                    requests_column: bool, round_ratios: dict[int, list[float]] | None = None) -> list[list[str]]:
    """Per C: server rate, [server req/s,] p50, p99, mean batch, raw batch, raw rate, server/raw (with
    rounds: the median of their ratios, then each round's)."""
    servers = {r.concurrency: r for r in server_runs}
    raws = {r.concurrency: r for r in raw_runs}
    rows = []
    for concurrency in concurrencies:
        server, raw = servers.get(concurrency), raws.get(concurrency)
        rounds = (round_ratios or {}).get(concurrency, [])
        value = server_raw_ratio(server, raw, rounds)
        ratio = "-" if value is None else f"{value:.2f}"
        if len(rounds) > 1:
            ratio += " (" + ", ".join(f"{r:.2f}" for r in rounds) + ")"
        requests = [fmt(server.requests_per_s) if server else "-"] if requests_column else []
        rows.append([str(concurrency),
                     fmt(server.rate) if server else "-",
                     *requests,
                     fmt(server.latency_ms(50), 2) if server else "-",
                     fmt(server.latency_ms(99), 2) if server else "-",
                     fmt(server.batches.mean) if server else "-",
                     str(raw.batch_size) if raw else "-",
                     fmt(raw.rate) if raw else "-",
                     ratio])
    return rows


def comparison_report(intro: str, headers: Sequence[str], server_runs: list[ServerRun], raw_runs: list[RawRun],
                      concurrencies: Sequence[int], *, requests_column: bool = False, raw_lines: Sequence[str] = (),
                      footer: Sequence[str] = (), round_ratios: dict[int, list[float]] | None = None) -> str:
    """The table, the server runs' details, `raw_lines`, the goal at the highest C, the table again in
    Markdown, then `footer`. With rounds, the runs are each C's median run per mode and `round_ratios`
    the ratios of the rounds, by C."""
    rows = comparison_rows(server_runs, raw_runs, concurrencies, requests_column=requests_column,
                           round_ratios=round_ratios)
    lines = [intro, text_table(headers, rows)]
    for run in server_runs:
        lines.append(f"server C={run.concurrency}: wall {run.wall:.2f}s, server CPU {run.server_cpu_s:.2f}s, "
                     f"client CPU {run.client_cpu_s:.2f}s; {run.batches.describe()}")
        if run.note:
            lines.append(f"  {run.note}")
    lines.extend(raw_lines)
    goal = max(concurrencies)
    rounds = (round_ratios or {}).get(goal, [])
    ratio = server_raw_ratio(next((r for r in server_runs if r.concurrency == goal), None),
                             next((r for r in raw_runs if r.concurrency == goal), None), rounds)
    if ratio is not None:
        median_of = f" (median of {len(rounds)} rounds)" if len(rounds) > 1 else ""
        lines.append(f"goal server/raw >= {GOAL} at C={goal}: {ratio:.2f}{median_of} -> {'met' if ratio >= GOAL else 'NOT met'}")
    lines.append("\nMarkdown:\n")
    lines.append(markdown_table(headers, rows))
    lines.extend(footer)
    return "\n".join(lines)


def _median_runs(rounds: list[list]) -> list:
    """Per C (in the first round's order), the run with the median rate over the rounds (the lower one
    of the middle two for an even count)."""
    if not rounds:
        return []
    by_concurrency = [[runs[index] for runs in rounds] for index in range(len(rounds[0]))]
    return [sorted(runs, key=lambda run: run.rate)[(len(runs) - 1) // 2] for runs in by_concurrency]


def _round_ratios(server_rounds: list[list[ServerRun]], raw_rounds: list[list[RawRun]]) -> dict[int, list[float]]:
    """server/raw of each round, by C (round i's server runs against round i's raw runs)."""
    ratios: dict[int, list[float]] = {}
    for servers, raws in zip(server_rounds, raw_rounds):
        raw_by_c = {run.concurrency: run for run in raws}
        for server in servers:
            if server.concurrency in raw_by_c:
                ratios.setdefault(server.concurrency, []).append(server.rate / raw_by_c[server.concurrency].rate)
    return ratios


# ----------------------------------------------------------------------------- main


def parse_comparison_args(argv: list[str] | None, *, doc: str, task: str, default_model_dir: Path, model_help: str,
                          requests: int, raw_passes_work: str,
                          task_options: Callable[[argparse.ArgumentParser], object] = lambda parser: None,
                          task_valid: Callable[[argparse.Namespace], bool] = lambda args: True,
                          task_limits: str = "") -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The options both comparison benchmarks take, `task_options` after --requests; after parsing, the
    model folder resolved and args.config_document (config.json with --server-config merged in). The
    parser comes back too, for the caller's own checks of the config."""
    parser = bench_parser(doc)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="client counts (1 8 32)")
    parser.add_argument("--requests", type=int, default=requests,
                        help=f"requests per C, all clients together ({requests})")
    task_options(parser)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the modes this many times, in turn; the table shows each C's median run "
                             "per mode and the median of the rounds' server/raw (1)")
    parser.add_argument("--raw-passes", type=int, default=2,
                        help=f"raw mode {raw_passes_work} this many times per C, after one uncounted pass (2)")
    add_model_options(parser, MODES, default_model_dir, model_help)
    parser.add_argument("--server-config", type=json.loads, default=None,
                        help="JSON merged into the model's config.json for both modes, e.g. "
                             f"'{json.dumps({task: {'batch_wait_ms': 5}})}'")
    parser.add_argument("--idle-wait", type=float, default=120.0,
                        help="seconds to wait at most for other processes to leave the CPU before measuring (120)")
    add_output_options(parser, "also write every summary to this JSON file")
    args = parser.parse_args(argv)
    resolve_model_args(parser, args)
    if min(args.concurrency) < 1 or min(args.requests, args.raw_passes, args.rounds) < 1 or not task_valid(args):
        parser.error("--concurrency, --requests, --raw-passes and --rounds must be positive" + task_limits)
    args.config_document = model_config_document(args.model_dir, args.server_config)
    return parser, args


def run_comparison(args: argparse.Namespace, *, task: str, request: str, server_mode: type[ServerMode],
                   raw_mode: type[RawMode],
                   report: Callable[[argparse.Namespace, list[ServerRun], list[RawRun], RawRun | None], str]) -> int:
    """Measure args.modes one after the other (never two at once: OpenVINO uses every core), --rounds
    times in turn, print `report(args, server_runs, raw_runs, reference)` (with rounds: each C's median
    runs, and args.round_ratios) and write --json (every run). `request` describes one request."""
    # SIGTERM -> SystemExit, so that the finally blocks stop the server and remove the temporary repository
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    began = time.perf_counter()
    loop = new_event_loop_policy()
    print(f"{task.capitalize()} benchmark: {environment(args)}")
    print(f"modes {' '.join(args.modes)}; concurrency {' '.join(map(str, args.concurrency))}; {args.requests} "
          f"requests per C; POST {server_mode.path}, {request}; raw HTTP/1.1 clients on {loop}")
    if args.server_config:
        print(f"config overrides: {json.dumps(args.server_config)}")
    server_rounds: list[list[ServerRun]] = []
    raw_rounds: list[list[RawRun]] = []
    reference: RawRun | None = None
    sample: dict[int, list[float]] = {}  # the server's answers to a few requests, for the raw mode to compare
    if not wait_for_idle(args.idle_wait, say=lambda text: print(f"[bench] {text}", file=sys.stderr)):
        print(f"[bench] the machine is still busy after {args.idle_wait:.0f}s; measuring anyway", file=sys.stderr)
    for number in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix=f"bench-{task}-") as tmp:
            for mode in args.modes:
                mode_began = time.perf_counter()
                if mode == "server":
                    server = server_mode(args, Path(tmp))
                    server_rounds.append(server.run_all())
                    sample = sample or server.sample
                else:
                    raw = raw_mode(args)
                    raw_rounds.append(raw.run_all(sample))
                    reference = raw.reference
                print(f"[{mode}] round {number}/{args.rounds} done in {time.perf_counter() - mode_began:.1f}s",
                      file=sys.stderr)
    args.round_ratios = _round_ratios(server_rounds, raw_rounds) if args.rounds > 1 else None
    server_runs, raw_runs = _median_runs(server_rounds), _median_runs(raw_rounds)
    print(report(args, server_runs, raw_runs, reference))
    if args.json:
        every = [run for runs in [*server_rounds, *raw_rounds] for run in runs]
        summaries = [r.summary() for r in [*every, *([reference] if reference else [])]]
        arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": arguments, "runs": summaries}, indent=2, default=str))
    print(f"\nTotal runtime {time.perf_counter() - began:.1f}s")
    return 0
