"""Rerank requests through the server's HTTP API against the same scoring done in process.

Two modes, measured one after the other in the same run (never two at once: OpenVINO uses every core):

  server  the real server (`python -m server serve`) on a temporary repository holding only the model,
          Cohere-style `POST /v3/rerank` with one query and k documents per request, sent by C concurrent
          clients back to back (keep-alive raw HTTP/1.1: common.HTTPConnection). With scoring
          embeddings_cosine (the demo all-MiniLM-L6-v2-rerank), the server embeds [query, *documents] through its micro-batcher,
          items of concurrent requests sharing pipeline calls, and scores (1 + cos) / 2.
  raw     an in-process openvino_genai.TextEmbeddingPipeline set up like the server's cosine scorer (pooling
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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from closedloop import (  # noqa: E402
    RawMode, RawRun, ServerMode, ServerRun, comparison_report, parse_comparison_args, run_comparison, served_config,
)
from common import REPO_ROOT  # noqa: E402

DEFAULT_MODEL_DIR = REPO_ROOT / "model_repository" / "sentence-transformers" / "all-MiniLM-L6-v2-rerank"
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


# ----------------------------------------------------------------------------- modes


class RerankServer(ServerMode):
    path = "/v3/rerank"
    unit = "documents"
    rate_label = "documents/s"
    period = len(QUERIES) * len(DOCUMENTS)  # request_texts repeats with this period at most

    def body(self, i: int) -> dict:
        query, documents = request_texts(i, self.args.documents)
        return {"model": self.args.model_id, "query": query, "documents": documents}

    def items(self, requests: int) -> int:
        return requests * self.args.documents

    def check(self, i: int, response: dict) -> None:
        k = self.args.documents
        if len(response["results"]) != k:
            raise RuntimeError(f"request {i}: {len(response['results'])} results for {k} documents")

    def sample_values(self, response: dict) -> list[float]:  # scores in document order
        scores = [0.0] * self.args.documents
        for result in response["results"]:
            scores[result["index"]] = result["relevance_score"]
        return scores


class RerankRaw(RawMode):
    """[query, *documents] of request 0, then of request 1, ... in batches of min(C * (k + 1),
    max_batch_size) texts, then (1 + cos) / 2 per document."""

    unit = "documents"
    batch_label = " texts"

    def run_all(self, sample: dict[int, list[float]]) -> list[RawRun]:
        import numpy as np

        self._np = np  # imported here, not in _scores, which runs once per request in the timed passes
        return super().run_all(sample)

    def normalize(self, settings) -> bool:
        return True  # as server/pipelines/rerank.py's CosineScorer builds its TextEmbedder

    def texts(self) -> list[str]:
        texts = []
        for i in range(self.args.requests):
            query, documents = request_texts(i, self.args.documents)
            texts += [query, *documents]
        return texts

    def batch_size(self, concurrency: int, max_batch_size: int) -> int:
        return min(concurrency * (self.args.documents + 1), max_batch_size)

    def items_per_pass(self) -> int:
        return self.args.requests * self.args.documents

    def compare(self, pipeline, sample: dict[int, list[float]]) -> None:
        np = self._np
        k = self.args.documents
        diff = 0.0
        for i, scores in sample.items():
            query, documents = request_texts(i, k)
            raw = self._scores(pipeline.embed_documents([query, *documents]), 0, k)
            diff = max(diff, float(np.max(np.abs(np.asarray(raw) - np.asarray(scores)))))
        print(f"[raw] max |server - raw| relevance score over {len(sample)} requests: {diff:.2e}", file=sys.stderr)

    def one_pass(self, pipeline, chunks: list[list[str]]) -> None:
        k = self.args.documents
        vectors: list = []
        for chunk in chunks:
            vectors.extend(pipeline.embed_documents(chunk))
        for r in range(len(vectors) // (k + 1)):
            self._scores(vectors, r * (k + 1), k)

    def _scores(self, vectors, start: int, k: int) -> list[float]:
        np = self._np
        query = np.asarray(vectors[start], dtype=np.float32)
        documents = np.asarray(vectors[start + 1: start + 1 + k], dtype=np.float32)
        return [float(s) for s in np.clip((documents @ query + 1.0) / 2.0, 0.0, 1.0)]


# ----------------------------------------------------------------------------- report


HEADERS = ("C", "server docs/s", "server req/s", "server p50 ms", "server p99 ms", "server mean batch",
           "raw batch", "raw docs/s", "server/raw")


def report(args: argparse.Namespace, server_runs: list[ServerRun], raw_runs: list[RawRun],
           _reference: RawRun | None = None) -> str:
    k = args.documents
    intro = (f"\n{args.requests} requests per C (1 query + {k} documents each), shared round-robin by C clients; "
             f"raw = the same texts, batch min(C x {k + 1}, max_batch_size={args.max_batch_size}) texts, "
             f"{args.raw_passes} pass(es); batch sizes count texts (query + documents)")
    raw_lines = [f"raw C={run.concurrency} (batch {run.batch_size}): {run.note}" for run in raw_runs if run.note]
    return comparison_report(intro, HEADERS, server_runs, raw_runs, args.concurrency, requests_column=True,
                             raw_lines=raw_lines, round_ratios=args.round_ratios)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser, args = parse_comparison_args(
        argv, doc=__doc__, task=TASK, default_model_dir=DEFAULT_MODEL_DIR, requests=128,
        model_help="rerank model folder with config.json and version folders (the demo "
                   "all-MiniLM-L6-v2-rerank, scoring embeddings_cosine)",
        raw_passes_work="scores the --requests requests",
        task_options=lambda parser: parser.add_argument("--documents", type=int, default=8,
                                                        help="documents per request, k (8)"),
        task_valid=lambda args: 1 <= args.documents <= 64, task_limits=", --documents 1 to 64")
    config = served_config(args, parser)
    if config.task != TASK or config.pipeline.settings.scoring != "embeddings_cosine":
        parser.error(f"{args.model_dir} is not a rerank model with scoring embeddings_cosine (the raw mode "
                     "reproduces cosine scoring only)")
    args.max_batch_size = config.pipeline.settings.max_batch_size
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_comparison(args, task=TASK, request=f"1 query + {args.documents} documents",
                          server_mode=RerankServer, raw_mode=RerankRaw, report=report)


if __name__ == "__main__":
    sys.exit(main())
