"""Single-sentence embedding requests through the server's HTTP API against the raw TextEmbeddingPipeline.

Two modes, measured one after the other in the same run (never two at once: OpenVINO uses every core):

  server  the real server (`python -m server serve`) on a temporary repository holding only the model,
          OpenAI `POST /v3/embeddings` with one sentence per request, encoding_format float, sent by C
          concurrent clients back to back (keep-alive raw HTTP/1.1: common.HTTPConnection). The server
          micro-batches concurrent requests.
  raw     an in-process openvino_genai.TextEmbeddingPipeline built like the server builds it (same
          config.json, same schema defaults: pooling, normalize, max_length, device, plugin_config),
          embedding THE SAME sentences in the same order in batches of min(C, max_batch_size): the upper
          bound the server's micro-batching can reach. Also one sentence per call, as a reference.

For each concurrency C, --requests requests in total are shared round-robin by C clients (client c sends
requests c, c+C, ...); request i embeds SENTENCES[i % 64]. Per C: requests/s (= sentences/s), p50/p99
latency (send -> whole response read), the server's micro-batch sizes (the ovms_batch_size histogram of
GET /metrics, before/after) and the CPU time used by the server and by the benchmark's clients.

    .venv/bin/python tools/bench/embeddings.py
    .venv/bin/python tools/bench/embeddings.py --concurrency 32 --modes server \\
        --server-config '{"embeddings": {"batch_wait_ms": 5}}'
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from common import (  # noqa: E402
    environment, run_on_server,
    REPO_ROOT, ForeignCPU, Histogram, ServerProcess, closed_loop, ConnectionPool, fmt, latest_version_dir, markdown_table, model_config_document,
    ms, new_event_loop_policy, percentile, read_histogram, release_memory, single_model_repository, text_table,
    foreign_warning, wait_for_idle, write_model_config,
)

DEFAULT_MODEL_DIR = REPO_ROOT / "model_repository" / "sentence-transformers" / "all-MiniLM-L6-v2"
MODES = ("server", "raw")
TASK = "embeddings"

# 64 distinct sentences of 5 to 20 words; request i embeds SENTENCES[i % 64] in every mode.
SENTENCES = (
    "The cat slept on the warm windowsill while rain tapped softly against the glass all afternoon long.",
    "Interest rates rose for the third consecutive quarter this year.",
    "She planted tomatoes, basil and peppers in the small backyard garden last spring.",
    "Quantum computers use qubits that can represent several states at once, which could speed up some hard calculations.",
    "The train to Berlin was delayed by forty minutes.",
    "Regular exercise improves both physical health and mental well-being over time.",
    "He forgot his umbrella and got soaked walking home from the office.",
    "The museum opens a new exhibition of impressionist paintings next Friday.",
    "Photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen.",
    "Our team shipped the release two days ahead of schedule.",
    "A strong earthquake shook the coastal city early this morning.",
    "Please remember to back up your files before installing the update.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Electric cars are becoming cheaper as battery prices continue to fall.",
    "The children built a sandcastle that the tide washed away within an hour.",
    "Jazz musicians often improvise melodies over a fixed chord progression.",
    "The hotel room had a beautiful view of the mountains.",
    "Researchers found that sleep deprivation reduces memory consolidation in adults.",
    "The football match ended in a dramatic penalty shootout.",
    "Coffee prices jumped after a drought damaged crops in Brazil.",
    "He learned to play the violin at the age of seven.",
    "The company announced layoffs affecting about ten percent of its workforce.",
    "A gentle breeze carried the smell of fresh bread through the narrow street.",
    "The new smartphone features a larger screen and a faster processor.",
    "Volcanic ash forced airlines to cancel hundreds of flights across northern Europe.",
    "My grandmother tells the best stories about her childhood on the farm.",
    "The database query was slow because the table lacked an index.",
    "Tigers are solitary hunters that mostly stalk their prey at night.",
    "The committee will vote on the proposal after the public consultation ends.",
    "Fresh snow covered the village overnight.",
    "Learning a second language can open doors to new career opportunities abroad.",
    "The astronauts returned safely after six months on the space station.",
    "Our neighbors are throwing a party on Saturday evening.",
    "The bridge was closed for repairs after inspectors discovered cracks in its supports.",
    "Dolphins communicate with each other using clicks and whistles.",
    "The library extended its opening hours during the exam period.",
    "Inflation erodes the purchasing power of savings held in cash.",
    "She painted the kitchen walls a pale shade of yellow.",
    "The orchestra rehearsed the symphony for weeks before the premiere.",
    "Wildfires spread quickly because of the dry weather and strong winds.",
    "The startup raised twenty million dollars in its latest funding round.",
    "A good night's sleep helps the body recover from intense training.",
    "The detective noticed a faint muddy footprint near the broken window and quietly asked the butler where he had been.",
    "Most modern browsers update themselves automatically in the background.",
    "Honeybees play a crucial role in pollinating fruit trees and many vegetable crops.",
    "The restaurant serves traditional dishes from southern Italy.",
    "He ran the marathon in just under three hours.",
    "Rising sea levels threaten low-lying islands in the Pacific Ocean.",
    "The professor explained the theorem with a simple geometric drawing.",
    "Traffic was light on the highway because of the holiday.",
    "The software crashed whenever the user opened a very large spreadsheet file.",
    "Old castles and medieval churches attract tourists to the region every summer.",
    "The vaccine trial enrolled thousands of volunteers across four continents and reported its first results after nine months.",
    "She finished reading the novel in a single afternoon.",
    "The river flooded the fields after a week of heavy rain.",
    "Cloud providers charge customers separately for storage, compute time and network traffic, so monthly bills can be hard to predict.",
    "A stray dog followed us all the way to the beach.",
    "The central bank kept its main interest rate unchanged.",
    "Chess players often study famous games to improve their openings.",
    "The farmers market sells local honey, cheese and freshly baked pies.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The printer ran out of ink in the middle of the report.",
    "Parents gathered at the school to discuss the new homework policy with teachers.",
    "The sunset painted the sky in shades of orange and purple.",
)
WARMUP_SENTENCE = "warm up"


def sentence(i: int) -> str:
    return SENTENCES[i % len(SENTENCES)]


# ----------------------------------------------------------------------------- measurements


@dataclass
class ServerRun:
    concurrency: int
    wall: float
    latencies: list[float]
    batches: Histogram
    server_cpu_s: float
    client_cpu_s: float
    note: str = ""

    @property
    def rate(self) -> float:  # requests/s = sentences/s
        return len(self.latencies) / self.wall

    def latency_ms(self, q: float) -> float:
        return ms(percentile(self.latencies, q))

    def summary(self) -> dict:
        return {"mode": "server", "concurrency": self.concurrency, "requests": len(self.latencies),
                "wall_s": self.wall, "requests_per_s": self.rate, "p50_ms": self.latency_ms(50),
                "p99_ms": self.latency_ms(99), "batches": self.batches.count, "mean_batch": self.batches.mean,
                "server_cpu_s": self.server_cpu_s, "client_cpu_s": self.client_cpu_s, "note": self.note}


@dataclass
class RawRun:
    concurrency: int  # 0: the one-at-a-time reference
    batch_size: int
    wall: float  # all passes
    sentences: int  # all passes
    calls: int
    note: str = ""

    @property
    def rate(self) -> float:
        return self.sentences / self.wall

    def summary(self) -> dict:
        return {"mode": "raw", "concurrency": self.concurrency, "batch_size": self.batch_size, "wall_s": self.wall,
                "sentences": self.sentences, "calls": self.calls, "sentences_per_s": self.rate,
                "note": self.note}


# ----------------------------------------------------------------------------- mode: server (HTTP)


class ServerMode:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.sample: dict[int, list[float]] = {}  # sentence index -> vector, for the raw comparison

    def run_all(self) -> list[ServerRun]:
        args = self.args
        repository = single_model_repository(args.model_dir, args.model_id, parent=self.workdir)
        if args.server_config:
            write_model_config(repository, args.model_id, args.config_document)
        return run_on_server(repository, self.workdir, args.model_id, args.keep_server_log, self._run_all)

    async def _run_all(self, server: ServerProcess) -> list[ServerRun]:
        args = self.args
        payloads = [json.dumps({"model": args.model_id, "input": s, "encoding_format": "float"}).encode()
                    for s in SENTENCES]
        most = max(args.concurrency)
        pool = ConnectionPool(server.base_url, most)
        try:

            async def send(i: int) -> None:
                data = (await pool.post_json("/v3/embeddings", payloads[i % len(payloads)]))["data"]
                if len(data) != 1 or not data[0]["embedding"]:
                    raise RuntimeError(f"unexpected response for request {i}: {data!r:.200}")
                if i < 4 and i not in self.sample:
                    self.sample[i] = data[0]["embedding"]

            # Warm-up (not counted): every sentence alone, then a burst at the highest concurrency, so the
            # shapes the measured runs use have been seen once.
            await closed_loop(1, len(SENTENCES), send)
            await closed_loop(most, 2 * most, send)
            runs = []
            for concurrency in args.concurrency:
                await closed_loop(concurrency, 2 * concurrency, send)  # settle at this level, not counted
                before = self._batches(server)
                server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
                foreign = ForeignCPU([server.process.pid])
                wall, latencies = await closed_loop(concurrency, args.requests, send)
                foreign_s = foreign.seconds()
                run = ServerRun(concurrency, wall, latencies, self._batches(server) - before,
                                server.cpu_seconds() - server_cpu, time.process_time() - client_cpu)
                run.note = foreign_warning(foreign_s, wall)
                print(f"[server] C={concurrency}: {run.rate:.1f} req/s, p50 {run.latency_ms(50):.1f} ms, "
                      f"{run.batches.describe()}", file=sys.stderr)
                runs.append(run)
            return runs
        finally:
            await pool.close()

    def _batches(self, server: ServerProcess) -> Histogram:
        return read_histogram(server.base_url, "ovms_batch_size", "model", self.args.model_id + ":")


# ----------------------------------------------------------------------------- mode: raw (in process)


def served_config(args: argparse.Namespace):
    """The ModelConfig the server builds for this model folder (config.json + overrides, schema defaults)."""
    from server.repository.config import build

    return build(args.config_document)


class RawMode:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def run_all(self, sample: dict[int, list[float]]) -> tuple[list[RawRun], RawRun]:
        import numpy as np
        from server.pipelines.embeddings import embedding_pipeline

        args = self.args
        config = served_config(args)
        settings = config.task_settings
        release_memory()
        t0 = time.perf_counter()
        pipeline = embedding_pipeline(args.version_dir, config, pooling=settings["pooling"],
                                      normalize=settings["normalize"], max_length=settings["max_length"])
        print(f"[raw] TextEmbeddingPipeline loaded in {time.perf_counter() - t0:.1f}s ({config.device}, "
              f"pooling {settings['pooling']}, normalize {settings['normalize']}, max_length "
              f"{settings['max_length']}, properties {dict(config.plugin_config)})", file=sys.stderr)
        try:
            texts = [sentence(i) for i in range(args.requests)]
            pipeline.embed_documents([WARMUP_SENTENCE])
            if sample:  # same vectors as the server's?
                vectors = pipeline.embed_documents([sentence(i) for i in sorted(sample)])
                diff = max(float(np.max(np.abs(np.asarray(v) - np.asarray(sample[i]))))
                           for i, v in zip(sorted(sample), vectors))
                print(f"[raw] max |server - raw| over {len(sample)} sentence vectors: {diff:.2e}", file=sys.stderr)
            runs = []
            for concurrency in args.concurrency:
                batch = min(concurrency, settings["max_batch_size"])
                runs.append(self._measure(pipeline, texts, batch, concurrency))
                print(f"[raw] C={concurrency}: batch {batch}, {runs[-1].rate:.1f} sentences/s", file=sys.stderr)
            single = self._measure(pipeline, texts, 1, 0)
            print(f"[raw] one at a time: {single.rate:.1f} sentences/s", file=sys.stderr)
            return runs, single
        finally:
            del pipeline
            release_memory()

    def _measure(self, pipeline, texts: list[str], batch: int, concurrency: int) -> RawRun:
        chunks = [texts[i: i + batch] for i in range(0, len(texts), batch)]
        for chunk in chunks:  # warm-up pass, not counted: the CPU plugin meets every input shape once
            pipeline.embed_documents(chunk)
        calls = 0
        foreign = ForeignCPU()
        start = time.perf_counter()
        for _ in range(self.args.raw_passes):
            for chunk in chunks:
                pipeline.embed_documents(chunk)
                calls += 1
        wall = time.perf_counter() - start
        note = foreign_warning(foreign.seconds(), wall)
        return RawRun(concurrency, batch, wall, len(texts) * self.args.raw_passes, calls, note)


# ----------------------------------------------------------------------------- report


HEADERS = ("C", "server req/s", "server p50 ms", "server p99 ms", "server mean batch", "raw batch",
           "raw sentences/s", "server/raw")


def _rows(server_runs: list[ServerRun], raw_runs: list[RawRun], args: argparse.Namespace) -> list[list[str]]:
    servers = {r.concurrency: r for r in server_runs}
    raws = {r.concurrency: r for r in raw_runs}
    rows = []
    for concurrency in args.concurrency:
        server, raw = servers.get(concurrency), raws.get(concurrency)
        ratio = f"{server.rate / raw.rate:.2f}" if server and raw else "-"
        rows.append([str(concurrency),
                     fmt(server.rate) if server else "-",
                     fmt(server.latency_ms(50), 2) if server else "-",
                     fmt(server.latency_ms(99), 2) if server else "-",
                     fmt(server.batches.mean) if server else "-",
                     str(raw.batch_size) if raw else "-",
                     fmt(raw.rate) if raw else "-",
                     ratio])
    return rows


def report(server_runs: list[ServerRun], raw_runs: list[RawRun], single: RawRun | None,
           args: argparse.Namespace) -> str:
    lines = [f"\n{args.requests} single-sentence requests per C, shared round-robin by C clients; raw = the same "
             f"sentences, batch min(C, max_batch_size={args.max_batch_size}), {args.raw_passes} pass(es)"]
    rows = _rows(server_runs, raw_runs, args)
    lines.append(text_table(HEADERS, rows))
    for run in server_runs:
        lines.append(f"server C={run.concurrency}: wall {run.wall:.2f}s, server CPU {run.server_cpu_s:.2f}s, "
                     f"client CPU {run.client_cpu_s:.2f}s; {run.batches.describe()}")
        if run.note:
            lines.append(f"  {run.note}")
    for run in [*raw_runs, *([single] if single else [])]:
        if run.note:
            lines.append(f"raw batch {run.batch_size}: {run.note}")
    if single:
        lines.append(f"raw one sentence per call (reference): {single.rate:.1f} sentences/s "
                     f"({single.calls} calls in {single.wall:.2f}s)")
    goal = max(args.concurrency)
    servers = {r.concurrency: r for r in server_runs}
    raws = {r.concurrency: r for r in raw_runs}
    if goal in servers and goal in raws:
        ratio = servers[goal].rate / raws[goal].rate
        lines.append(f"goal server/raw >= 0.8 at C={goal}: {ratio:.2f} -> {'met' if ratio >= 0.8 else 'NOT met'}")
    lines.append("\nMarkdown:\n")
    lines.append(markdown_table(HEADERS, rows))
    if single:
        lines.append(f"\nRaw, one sentence per call: {fmt(single.rate)} sentences/s.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="client counts (1 8 32)")
    parser.add_argument("--requests", type=int, default=512, help="requests per C, all clients together (512)")
    parser.add_argument("--raw-passes", type=int, default=2,
                        help="raw mode embeds the --requests sentences this many times per C, after one "
                             "uncounted pass (2)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="what to measure, in order")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                        help="model folder with config.json and version folders (the demo all-MiniLM-L6-v2)")
    parser.add_argument("--model-id", help="model id in the server (default: the model folder's last two parts)")
    parser.add_argument("--server-config", type=json.loads, default=None,
                        help="JSON merged into the model's config.json for both modes, e.g. "
                             "'{\"embeddings\": {\"batch_wait_ms\": 5}}'")
    parser.add_argument("--idle-wait", type=float, default=120.0,
                        help="seconds to wait at most for other processes to leave the CPU before measuring (120)")
    parser.add_argument("--json", type=Path, help="also write every summary to this JSON file")
    parser.add_argument("--keep-server-log", type=Path, help="copy the server's log here")
    args = parser.parse_args(argv)
    args.model_dir = args.model_dir.resolve()
    if not args.model_dir.is_dir():
        parser.error(f"{args.model_dir} is not a folder")
    args.model_id = args.model_id or f"{args.model_dir.parent.name}/{args.model_dir.name}"
    args.version_dir = latest_version_dir(args.model_dir)
    if min(args.concurrency) < 1 or args.requests < 1 or args.raw_passes < 1:
        parser.error("--concurrency, --requests and --raw-passes must be positive")
    args.config_document = model_config_document(args.model_dir, args.server_config)
    if args.config_document.get("task") != TASK:
        parser.error(f"{args.model_dir} is not an {TASK} model (config.json task: {args.config_document.get('task')})")
    from server.repository.config import ConfigError, build

    try:
        args.max_batch_size = build(args.config_document).task_settings["max_batch_size"]
    except ConfigError as exc:
        parser.error(f"config.json with overrides is invalid: {exc}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM -> SystemExit, so that the finally blocks stop the server and remove the temporary repository
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    began = time.perf_counter()
    loop = new_event_loop_policy()
    print(f"Embeddings benchmark: {environment(args)}")
    print(f"modes {' '.join(args.modes)}; concurrency {' '.join(map(str, args.concurrency))}; {args.requests} "
          f"requests per C; POST /v3/embeddings, one sentence, encoding_format float; raw HTTP/1.1 clients on {loop}")
    if args.server_config:
        print(f"config overrides: {json.dumps(args.server_config)}")
    server_runs: list[ServerRun] = []
    raw_runs: list[RawRun] = []
    single = None
    sample: dict[int, list[float]] = {}
    if not wait_for_idle(args.idle_wait, say=lambda text: print(f"[bench] {text}", file=sys.stderr)):
        print(f"[bench] the machine is still busy after {args.idle_wait:.0f}s; measuring anyway", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-embeddings-") as tmp:
        for mode in args.modes:
            mode_began = time.perf_counter()
            if mode == "server":
                server_mode = ServerMode(args, Path(tmp))
                server_runs = server_mode.run_all()
                sample = server_mode.sample
            else:
                raw_runs, single = RawMode(args).run_all(sample)
            print(f"[{mode}] done in {time.perf_counter() - mode_began:.1f}s", file=sys.stderr)
    print(report(server_runs, raw_runs, single, args))
    if args.json:
        summaries = [r.summary() for r in server_runs] + [r.summary() for r in raw_runs]
        if single:
            summaries.append(single.summary())
        arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": arguments,
                                         "runs": summaries}, indent=2, default=str))
    print(f"\nTotal runtime {time.perf_counter() - began:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
