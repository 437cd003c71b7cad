"""Single-sentence embedding requests through the server's HTTP API against the raw TextEmbeddingPipeline.

Two modes, measured one after the other in the same run (never two at once: OpenVINO uses every core):

  server  the real server (`python -m server serve`) on a temporary repository holding only the model,
          OpenAI `POST /v3/embeddings` with one sentence per request, encoding_format float, sent by C
          concurrent clients back to back (keep-alive raw HTTP/1.1: common.HTTPConnection). The server
          micro-batches concurrent requests.
  raw     an in-process openvino_genai.TextEmbeddingPipeline with the settings the server serves (same
          config.json, same schema defaults: pooling, normalize, max_length, device, plugin_config),
          embedding THE SAME sentences in the same order in batches of min(C, max_batch_size): the upper
          bound the server's micro-batching can reach. Also one sentence per call, as a reference.

For each concurrency C, --requests requests in total are shared round-robin by C clients (client c sends
requests c, c+C, ...); request i embeds SENTENCES[i % 64], or with --inputs K the K sentences
SENTENCES[(i*K + j) % 64] (bulk indexing; raw then embeds batches of min(C*K, max_batch_size)). Per C:
sentences/s (= requests/s with one input), p50/p99 latency (send -> whole response read), the server's
micro-batch sizes (the ovms_batch_size histogram of GET /metrics, before/after) and the CPU time used by
the server and by the benchmark's clients.

    .venv/bin/python tools/bench/embeddings.py
    .venv/bin/python tools/bench/embeddings.py --concurrency 32 --modes server \\
        --server-config '{"embeddings": {"batch_wait_ms": 5}}'
    .venv/bin/python tools/bench/embeddings.py --inputs 64 --requests 64 --concurrency 1 2 \\
        --server-config '{"plugin_config": {"PERFORMANCE_HINT": "THROUGHPUT"}}'
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
from common import REPO_ROOT, fmt  # noqa: E402

DEFAULT_MODEL_DIR = REPO_ROOT / "model_repository" / "sentence-transformers" / "all-MiniLM-L6-v2"
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


def sentence(i: int) -> str:
    return SENTENCES[i % len(SENTENCES)]


# ----------------------------------------------------------------------------- modes


class EmbeddingsServer(ServerMode):
    path = "/v3/embeddings"
    period = len(SENTENCES)
    warmup_alone = len(SENTENCES)  # every sentence alone once

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__(args, workdir)
        if args.inputs > 1:
            self.unit, self.rate_label = "sentences", "sentences/s"

    def body(self, i: int) -> dict:
        k = self.args.inputs
        texts = sentence(i) if k == 1 else [sentence(i * k + j) for j in range(k)]
        return {"model": self.args.model_id, "input": texts, "encoding_format": "float"}

    def items(self, requests: int) -> int:
        return requests * self.args.inputs

    def check(self, i: int, response: dict) -> None:
        data = response["data"]
        if len(data) != self.args.inputs or not all(item["embedding"] for item in data):
            raise RuntimeError(f"unexpected response for request {i}: {data!r:.200}")

    def sample_values(self, response: dict) -> list[float]:
        return response["data"][0]["embedding"]


class EmbeddingsRaw(RawMode):
    """The same sentences in batches of min(C, max_batch_size), then one sentence per call as a reference."""

    def texts(self) -> list[str]:
        return [sentence(i) for i in range(self.items_per_pass())]

    def items_per_pass(self) -> int:
        return self.args.requests * self.args.inputs

    def batch_size(self, concurrency: int, max_batch_size: int) -> int:
        return min(concurrency * self.args.inputs, max_batch_size)

    def compare(self, pipeline, sample: dict[int, list[float]]) -> None:
        import numpy as np

        # the sample is each sampled request's first vector
        vectors = pipeline.embed_documents([sentence(i * self.args.inputs) for i in sorted(sample)])
        diff = max(float(np.max(np.abs(np.asarray(v) - np.asarray(sample[i]))))
                   for i, v in zip(sorted(sample), vectors))
        print(f"[raw] max |server - raw| over {len(sample)} sentence vectors: {diff:.2e}", file=sys.stderr)

    def finish(self, pipeline, texts: list[str]) -> None:
        self.reference = self.measure(pipeline, texts, 1, 0)
        print(f"[raw] one at a time: {self.reference.rate:.1f} sentences/s", file=sys.stderr)


# ----------------------------------------------------------------------------- report


HEADERS = ("C", "server req/s", "server p50 ms", "server p99 ms", "server mean batch", "raw batch",
           "raw sentences/s", "server/raw")


def report(args: argparse.Namespace, server_runs: list[ServerRun], raw_runs: list[RawRun],
           single: RawRun | None) -> str:
    what = "single-sentence" if args.inputs == 1 else f"{args.inputs}-sentence"
    intro = (f"\n{args.requests} {what} requests per C, shared round-robin by C clients; raw = the same "
             f"sentences, batch min(C x {args.inputs}, max_batch_size={args.max_batch_size}), "
             f"{args.raw_passes} pass(es)")
    raw_lines = [f"raw batch {run.batch_size}: {run.note}"
                 for run in [*raw_runs, *([single] if single else [])] if run.note]
    if single:
        raw_lines.append(f"raw one sentence per call (reference): {single.rate:.1f} sentences/s "
                         f"({single.calls} calls in {single.wall:.2f}s)")
    footer = [f"\nRaw, one sentence per call: {fmt(single.rate)} sentences/s."] if single else []
    headers = HEADERS if args.inputs == 1 else ("C", "server sentences/s", *HEADERS[2:])
    return comparison_report(intro, headers, server_runs, raw_runs, args.concurrency, raw_lines=raw_lines,
                             footer=footer, round_ratios=args.round_ratios)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser, args = parse_comparison_args(
        argv, doc=__doc__, task=TASK, default_model_dir=DEFAULT_MODEL_DIR, requests=512,
        model_help="model folder with config.json and version folders (the demo all-MiniLM-L6-v2)",
        raw_passes_work="embeds the --requests requests' sentences",
        task_options=lambda parser: parser.add_argument("--inputs", type=int, default=1,
                                                        help="sentences per request, K (1)"),
        task_valid=lambda args: 1 <= args.inputs <= 2048, task_limits=", --inputs 1 to 2048")
    if args.config_document.get("task") != TASK:
        parser.error(f"{args.model_dir} is not an {TASK} model (config.json task: {args.config_document.get('task')})")
    args.max_batch_size = served_config(args, parser).pipeline.settings.max_batch_size
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    request = "one sentence" if args.inputs == 1 else f"{args.inputs} sentences"
    return run_comparison(args, task=TASK, request=f"{request}, encoding_format float",
                          server_mode=EmbeddingsServer, raw_mode=EmbeddingsRaw, report=report)


if __name__ == "__main__":
    sys.exit(main())
