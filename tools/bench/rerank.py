"""Rerank requests through the server's HTTP API against the same scoring done in process.

Two modes, measured one after the other in the same run (never two at once: OpenVINO uses every core):

  server  the real server (`python -m server serve`) on a temporary repository holding only the model,
          Cohere-style `POST /v3/rerank` with one query and k documents per request, sent by C concurrent
          clients back to back (keep-alive raw HTTP/1.1: common.HTTPConnection). With scoring
          embeddings_cosine (the demo all-MiniLM-L6-v2-rerank), the server embeds [query, *documents] through its micro-batcher,
          items of concurrent requests sharing pipeline calls, and scores (1 + cos) / 2.
  raw     an in-process openvino_genai.TextEmbeddingPipeline built like the server's cosine scorer (pooling
          and max_length from the rerank section, normalize true), embedding THE SAME texts in the same
          order ([query, *documents] of request 0, then request 1, ...) in batches of
          min(C * (k + 1), max_batch_size) texts, then (1 + cos) / 2 per document: the upper bound.

For each concurrency C, --requests requests in total are shared round-robin by C clients (client c sends
requests c, c+C, ...). Per C: documents/s, requests/s, p50/p99 latency (send -> whole response read), the
server's micro-batch sizes (ovms_batch_size histogram of GET /metrics, in texts) and CPU times.

    .venv/bin/python tools/bench/rerank.py
    .venv/bin/python tools/bench/rerank.py --concurrency 32 --modes server \\
        --server-config '{"rerank": {"batch_wait_ms": 5}}'
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

DEFAULT_MODEL_DIR = REPO_ROOT / "model_repository" / "sentence-transformers" / "all-MiniLM-L6-v2-rerank"
MODES = ("server", "raw")
TASK = "rerank"

QUERIES = (
    "How do I make bread at home?",
    "What causes earthquakes?",
    "Best way to learn a programming language",
    "Why are interest rates rising?",
    "How do vaccines protect people?",
    "Tips for running a faster marathon",
    "Which animals live in the rainforest?",
    "How can I speed up a slow database?",
    "What should I see when visiting Rome?",
    "How does solar power work?",
    "Why is sleep important for health?",
    "How do electric cars charge?",
    "What is the history of jazz music?",
    "How to keep houseplants alive",
    "What makes a good job interview?",
    "How do airplanes stay in the air?",
)

# 64 short documents on mixed topics; request i ranks DOCUMENTS[(i + 9 * j) % 64] for j < k.
DOCUMENTS = (
    "Knead the dough for ten minutes, then let it rise in a warm place.",
    "Tectonic plates slipping along a fault release energy as seismic waves.",
    "Writing small programs every day is the fastest way to learn to code.",
    "Central banks raise rates to slow inflation.",
    "Vaccines train the immune system to recognize a virus before infection.",
    "Interval training on a track improves a runner's pace.",
    "Jaguars, toucans and poison dart frogs live in tropical rainforests.",
    "Adding an index on the filtered column makes the query much faster.",
    "The Colosseum and the Pantheon are the most visited sights in Rome.",
    "Photovoltaic cells turn sunlight directly into electricity.",
    "During deep sleep the brain consolidates memories.",
    "Most electric cars charge overnight from a home wall box.",
    "Jazz grew out of blues and ragtime in New Orleans.",
    "Water houseplants only when the top soil feels dry.",
    "Prepare concrete examples of your past work before an interview.",
    "Wings generate lift because air moves faster over their curved upper surface.",
    "Sourdough bread uses a fermented starter instead of commercial yeast.",
    "Aftershocks can continue for weeks after a major earthquake.",
    "Python is often recommended as a first programming language.",
    "Mortgage payments grow when interest rates go up.",
    "Booster shots help keep antibody levels high.",
    "Long slow runs build the endurance needed for a marathon.",
    "The Amazon rainforest holds about ten percent of all known species.",
    "Caching frequent queries reduces the load on the database server.",
    "Tossing a coin into the Trevi Fountain is a Roman tradition.",
    "Solar panels produce less power on cloudy winter days.",
    "Adults need seven to nine hours of sleep each night.",
    "Fast chargers on highways can fill a battery to eighty percent in half an hour.",
    "Louis Armstrong made the trumpet solo central to jazz.",
    "Most houseplants prefer bright indirect light.",
    "Research the company and its products before the interview.",
    "Jet engines push the plane forward while the wings keep it aloft.",
    "A hot oven and a tray of water give bread a crisp crust.",
    "Seismographs record the strength and duration of ground shaking.",
    "Reading other people's code teaches good programming habits.",
    "Savers earn more on deposits when rates are high.",
    "Herd immunity protects people who cannot be vaccinated.",
    "Carbohydrate loading before race day stores energy in the muscles.",
    "Many rainforest plants are used to make medicines.",
    "Connection pooling avoids opening a new database connection per request.",
    "Vatican City, inside Rome, houses the Sistine Chapel.",
    "Inverters convert the direct current from solar panels into alternating current.",
    "Caffeine late in the day makes it harder to fall asleep.",
    "Regenerative braking recovers some energy while an electric car slows down.",
    "Bebop brought faster tempos and complex harmonies to jazz in the forties.",
    "Repot a plant when its roots start circling the bottom of the pot.",
    "Ask the interviewer thoughtful questions about the team.",
    "Pilots adjust the flaps to get more lift at low speed.",
    "Let the loaf cool completely before slicing it.",
    "Buildings in quake zones are designed to sway without collapsing.",
    "Online courses and coding exercises help beginners practice.",
    "Higher rates make it more expensive for companies to borrow.",
    "mRNA vaccines deliver instructions for making a harmless viral protein.",
    "Good running shoes reduce the risk of injury.",
    "Sloths spend most of their lives hanging in the rainforest canopy.",
    "The query planner chooses between a sequential scan and an index scan.",
    "Trastevere is a charming neighborhood full of small restaurants.",
    "Batteries store solar energy for use at night.",
    "A dark, cool bedroom helps people sleep better.",
    "Battery range drops in very cold weather.",
    "Miles Davis recorded Kind of Blue in 1959.",
    "Yellow leaves often mean a plant is getting too much water.",
    "Arrive ten minutes early and dress a little more formally than the office.",
    "The shape of the wing is called an airfoil.",
)


def request_texts(i: int, k: int) -> tuple[str, list[str]]:
    return QUERIES[i % len(QUERIES)], [DOCUMENTS[(i + 9 * j) % len(DOCUMENTS)] for j in range(k)]


# ----------------------------------------------------------------------------- measurements


@dataclass
class ServerRun:
    concurrency: int
    wall: float
    latencies: list[float]
    documents: int
    batches: Histogram
    server_cpu_s: float
    client_cpu_s: float
    note: str = ""

    @property
    def rate(self) -> float:  # documents/s
        return self.documents / self.wall

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies) / self.wall

    def latency_ms(self, q: float) -> float:
        return ms(percentile(self.latencies, q))

    def summary(self) -> dict:
        return {"mode": "server", "concurrency": self.concurrency, "requests": len(self.latencies),
                "documents": self.documents, "wall_s": self.wall, "documents_per_s": self.rate,
                "requests_per_s": self.requests_per_s, "p50_ms": self.latency_ms(50), "p99_ms": self.latency_ms(99),
                "batches": self.batches.count, "mean_batch": self.batches.mean, "server_cpu_s": self.server_cpu_s,
                "client_cpu_s": self.client_cpu_s, "note": self.note}


@dataclass
class RawRun:
    concurrency: int
    batch_size: int  # texts per pipeline call
    wall: float  # all passes
    documents: int  # all passes
    calls: int
    note: str = ""

    @property
    def rate(self) -> float:
        return self.documents / self.wall

    def summary(self) -> dict:
        return {"mode": "raw", "concurrency": self.concurrency, "batch_size": self.batch_size, "wall_s": self.wall,
                "documents": self.documents, "calls": self.calls, "documents_per_s": self.rate,
                "note": self.note}


# ----------------------------------------------------------------------------- mode: server (HTTP)


class ServerMode:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.sample: dict[int, list[float]] = {}  # request index -> scores in document order

    def run_all(self) -> list[ServerRun]:
        args = self.args
        repository = single_model_repository(args.model_dir, args.model_id, parent=self.workdir)
        if args.server_config:
            write_model_config(repository, args.model_id, args.config_document)
        return run_on_server(repository, self.workdir, args.model_id, args.keep_server_log, self._run_all)

    async def _run_all(self, server: ServerProcess) -> list[ServerRun]:
        args = self.args
        k = args.documents
        variants = len(QUERIES) * len(DOCUMENTS)  # request_texts repeats with this period at most
        payloads: dict[int, bytes] = {}

        def payload(i: int) -> bytes:
            key = i % variants
            if key not in payloads:
                query, documents = request_texts(key, k)
                payloads[key] = json.dumps({"model": args.model_id, "query": query, "documents": documents}).encode()
            return payloads[key]

        most = max(args.concurrency)
        pool = ConnectionPool(server.base_url, most)
        try:

            async def send(i: int) -> None:
                results = (await pool.post_json("/v3/rerank", payload(i)))["results"]
                if len(results) != k:
                    raise RuntimeError(f"request {i}: {len(results)} results for {k} documents")
                if i < 4 and i not in self.sample:
                    scores = [0.0] * k
                    for result in results:
                        scores[result["index"]] = result["relevance_score"]
                    self.sample[i] = scores

            for i in range(max(args.requests, 1)):  # build every payload before timing
                payload(i)
            # Warm-up (not counted): a few requests alone, then a burst at the highest concurrency.
            await closed_loop(1, 16, send)
            await closed_loop(most, 2 * most, send)
            runs = []
            for concurrency in args.concurrency:
                await closed_loop(concurrency, 2 * concurrency, send)  # settle at this level, not counted
                before = self._batches(server)
                server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
                foreign = ForeignCPU([server.process.pid])
                wall, latencies = await closed_loop(concurrency, args.requests, send)
                foreign_s = foreign.seconds()
                run = ServerRun(concurrency, wall, latencies, args.requests * k, self._batches(server) - before,
                                server.cpu_seconds() - server_cpu, time.process_time() - client_cpu)
                run.note = foreign_warning(foreign_s, wall)
                print(f"[server] C={concurrency}: {run.rate:.1f} documents/s, p50 {run.latency_ms(50):.1f} ms, "
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

    def run_all(self, sample: dict[int, list[float]]) -> list[RawRun]:
        import numpy as np
        from server.pipelines.embeddings import embedding_pipeline

        args = self.args
        config = served_config(args)
        settings = config.task_settings
        release_memory()
        t0 = time.perf_counter()
        # As server/pipelines/rerank.py's CosineScorer builds its TextEmbedder.
        pipeline = embedding_pipeline(args.version_dir, config, pooling=settings["pooling"], normalize=True,
                                      max_length=settings["max_length"])
        print(f"[raw] TextEmbeddingPipeline loaded in {time.perf_counter() - t0:.1f}s ({config.device}, "
              f"pooling {settings['pooling']}, normalize True, max_length {settings['max_length']}, "
              f"properties {dict(config.plugin_config)})", file=sys.stderr)
        self._np = np
        try:
            k = args.documents
            texts = []  # [query, *documents] of request 0, then of request 1, ...
            for i in range(args.requests):
                query, documents = request_texts(i, k)
                texts += [query, *documents]
            pipeline.embed_documents(["warm up"])
            if sample:  # same scores as the server's?
                diff = 0.0
                for i, scores in sample.items():
                    query, documents = request_texts(i, k)
                    raw = self._scores(pipeline.embed_documents([query, *documents]), 0, k)
                    diff = max(diff, float(np.max(np.abs(np.asarray(raw) - np.asarray(scores)))))
                print(f"[raw] max |server - raw| relevance score over {len(sample)} requests: {diff:.2e}",
                      file=sys.stderr)
            runs = []
            for concurrency in args.concurrency:
                batch = min(concurrency * (k + 1), settings["max_batch_size"])
                runs.append(self._measure(pipeline, texts, batch, concurrency))
                print(f"[raw] C={concurrency}: batch {batch} texts, {runs[-1].rate:.1f} documents/s", file=sys.stderr)
            return runs
        finally:
            del pipeline
            release_memory()

    def _scores(self, vectors, start: int, k: int) -> list[float]:
        np = self._np
        query = np.asarray(vectors[start], dtype=np.float32)
        documents = np.asarray(vectors[start + 1: start + 1 + k], dtype=np.float32)
        return [float(s) for s in np.clip((documents @ query + 1.0) / 2.0, 0.0, 1.0)]

    def _measure(self, pipeline, texts: list[str], batch: int, concurrency: int) -> RawRun:
        k = self.args.documents
        per_request = k + 1
        for i in range(0, len(texts), batch):  # warm-up pass, not counted: every input shape seen once
            pipeline.embed_documents(texts[i: i + batch])
        calls = 0
        foreign = ForeignCPU()
        start = time.perf_counter()
        for _ in range(self.args.raw_passes):
            vectors: list = []
            for i in range(0, len(texts), batch):
                vectors.extend(pipeline.embed_documents(texts[i: i + batch]))
                calls += 1
            for r in range(len(texts) // per_request):
                self._scores(vectors, r * per_request, k)
        wall = time.perf_counter() - start
        note = foreign_warning(foreign.seconds(), wall)
        return RawRun(concurrency, batch, wall, self.args.requests * k * self.args.raw_passes, calls, note)


# ----------------------------------------------------------------------------- report


HEADERS = ("C", "server docs/s", "server req/s", "server p50 ms", "server p99 ms", "server mean batch",
           "raw batch", "raw docs/s", "server/raw")


def _rows(server_runs: list[ServerRun], raw_runs: list[RawRun], args: argparse.Namespace) -> list[list[str]]:
    servers = {r.concurrency: r for r in server_runs}
    raws = {r.concurrency: r for r in raw_runs}
    rows = []
    for concurrency in args.concurrency:
        server, raw = servers.get(concurrency), raws.get(concurrency)
        ratio = f"{server.rate / raw.rate:.2f}" if server and raw else "-"
        rows.append([str(concurrency),
                     fmt(server.rate) if server else "-",
                     fmt(server.requests_per_s) if server else "-",
                     fmt(server.latency_ms(50), 2) if server else "-",
                     fmt(server.latency_ms(99), 2) if server else "-",
                     fmt(server.batches.mean) if server else "-",
                     str(raw.batch_size) if raw else "-",
                     fmt(raw.rate) if raw else "-",
                     ratio])
    return rows


def report(server_runs: list[ServerRun], raw_runs: list[RawRun], args: argparse.Namespace) -> str:
    k = args.documents
    lines = [f"\n{args.requests} requests per C (1 query + {k} documents each), shared round-robin by C clients; "
             f"raw = the same texts, batch min(C x {k + 1}, max_batch_size={args.max_batch_size}) texts, "
             f"{args.raw_passes} pass(es); batch sizes count texts (query + documents)"]
    rows = _rows(server_runs, raw_runs, args)
    lines.append(text_table(HEADERS, rows))
    for run in server_runs:
        lines.append(f"server C={run.concurrency}: wall {run.wall:.2f}s, server CPU {run.server_cpu_s:.2f}s, "
                     f"client CPU {run.client_cpu_s:.2f}s; {run.batches.describe()}")
        if run.note:
            lines.append(f"  {run.note}")
    for run in raw_runs:
        if run.note:
            lines.append(f"raw C={run.concurrency} (batch {run.batch_size}): {run.note}")
    goal = max(args.concurrency)
    servers = {r.concurrency: r for r in server_runs}
    raws = {r.concurrency: r for r in raw_runs}
    if goal in servers and goal in raws:
        ratio = servers[goal].rate / raws[goal].rate
        lines.append(f"goal server/raw >= 0.8 at C={goal}: {ratio:.2f} -> {'met' if ratio >= 0.8 else 'NOT met'}")
    lines.append("\nMarkdown:\n")
    lines.append(markdown_table(HEADERS, rows))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="client counts (1 8 32)")
    parser.add_argument("--requests", type=int, default=128, help="requests per C, all clients together (128)")
    parser.add_argument("--documents", type=int, default=8, help="documents per request, k (8)")
    parser.add_argument("--raw-passes", type=int, default=2,
                        help="raw mode scores the --requests requests this many times per C, after one "
                             "uncounted pass (2)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="what to measure, in order")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                        help="rerank model folder with config.json and version folders (the demo "
                             "all-MiniLM-L6-v2-rerank, scoring embeddings_cosine)")
    parser.add_argument("--model-id", help="model id in the server (default: the model folder's last two parts)")
    parser.add_argument("--server-config", type=json.loads, default=None,
                        help="JSON merged into the model's config.json for both modes, e.g. "
                             "'{\"rerank\": {\"batch_wait_ms\": 5}}'")
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
    if min(args.concurrency) < 1 or args.requests < 1 or args.raw_passes < 1 or not 1 <= args.documents <= 64:
        parser.error("--concurrency, --requests and --raw-passes must be positive, --documents 1 to 64")
    args.config_document = model_config_document(args.model_dir, args.server_config)
    from server.repository.config import ConfigError, build

    try:
        config = build(args.config_document)
    except ConfigError as exc:
        parser.error(f"config.json with overrides is invalid: {exc}")
    if config.task != TASK or config.task_settings["scoring"] != "embeddings_cosine":
        parser.error(f"{args.model_dir} is not a rerank model with scoring embeddings_cosine (the raw mode "
                     "reproduces cosine scoring only)")
    args.max_batch_size = config.task_settings["max_batch_size"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM -> SystemExit, so that the finally blocks stop the server and remove the temporary repository
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    began = time.perf_counter()
    loop = new_event_loop_policy()
    print(f"Rerank benchmark: {environment(args)}")
    print(f"modes {' '.join(args.modes)}; concurrency {' '.join(map(str, args.concurrency))}; {args.requests} "
          f"requests per C; POST /v3/rerank, 1 query + {args.documents} documents; raw HTTP/1.1 clients on {loop}")
    if args.server_config:
        print(f"config overrides: {json.dumps(args.server_config)}")
    server_runs: list[ServerRun] = []
    raw_runs: list[RawRun] = []
    sample: dict[int, list[float]] = {}
    if not wait_for_idle(args.idle_wait, say=lambda text: print(f"[bench] {text}", file=sys.stderr)):
        print(f"[bench] the machine is still busy after {args.idle_wait:.0f}s; measuring anyway", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-rerank-") as tmp:
        for mode in args.modes:
            mode_began = time.perf_counter()
            if mode == "server":
                server_mode = ServerMode(args, Path(tmp))
                server_runs = server_mode.run_all()
                sample = server_mode.sample
            else:
                raw_runs = RawMode(args).run_all(sample)
            print(f"[{mode}] done in {time.perf_counter() - mode_began:.1f}s", file=sys.stderr)
    print(report(server_runs, raw_runs, args))
    if args.json:
        arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": arguments,
                                         "runs": [r.summary() for r in server_runs + raw_runs]}, indent=2, default=str))
    print(f"\nTotal runtime {time.perf_counter() - began:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
