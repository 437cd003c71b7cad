#!/usr/bin/env python3
"""Which engine configuration serves one stream best: config.json variants against the default, in one run.

Each variant is a benchmark model of tools/bench/models.py (a weight format) plus a change to its
config.json (OpenVINO properties, scheduler settings) or another engine: "stateful" is one LLMPipeline
(the stateful, non-paged path) instead of the continuous-batching pipeline. Every variant is measured in
process, the way generation.py's raw and naive modes measure (same prompts, greedy, ignore_eos, tokens
read per step), in --rounds alternating rounds; the report gives each variant's median tokens/s and TTFT,
its ratio to the first variant measured in the same round, and its tokens per engine step. The draft-*
variants decode speculatively with a draft model of models.py (GenAI's draft_model property): the
server does not offer that (README), and these variants are the measurements behind that decision.

    .venv/bin/python tools/bench/variants.py --model smollm2-q4_1
    .venv/bin/python tools/bench/variants.py --model llama1b-q8_0 --variants default kv-f16 --concurrency 1 8
    .venv/bin/python tools/bench/variants.py --formats smollm2-q4_1 smollm2-int8 smollm2-fp16
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from common import markdown_table, software, single_model_repository, text_table  # noqa: E402
from generation import WORKLOADS, NaiveMode, RawMode, Run, use_workload  # noqa: E402
from models import MODELS, model_dir  # noqa: E402


@dataclass(frozen=True)
class Variant:
    name: str
    about: str
    plugin_config: dict = field(default_factory=dict)
    text_generation: dict = field(default_factory=dict)
    engine: str = "raw"  # raw: ContinuousBatchingPipeline; naive: LLMPipeline (C = 1 only)
    draft: str | None = None  # a benchmark model that drafts for speculative decoding (raw engine only)
    assistant_tokens: int | None = None  # with a draft: tokens it proposes per step

    def __post_init__(self) -> None:
        if self.draft is not None and (self.engine != "raw" or not self.assistant_tokens):
            raise ValueError(f"variant {self.name}: a draft needs the raw engine and assistant_tokens")


VARIANTS = {v.name: v for v in (
    Variant("default", "the model's config.json as it is"),
    Variant("kv-f16", "KV cache in f16 (CPU default u8)", {"KV_CACHE_PRECISION": "f16"}),
    Variant("kv-bf16", "KV cache in bf16", {"KV_CACHE_PRECISION": "bf16"}),
    # f32 KV needs f32 activations too: with bf16 ones the CPU plugin refuses it.
    Variant("f32", "activations and KV cache in f32", {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}),
    Variant("kv-u4", "KV cache in u4", {"KV_CACHE_PRECISION": "u4"}),
    Variant("infer-f32", "INFERENCE_PRECISION_HINT f32 (activations; default bf16 on this CPU)",
            {"INFERENCE_PRECISION_HINT": "f32"}),
    Variant("threads-1", "INFERENCE_NUM_THREADS 1", {"INFERENCE_NUM_THREADS": 1}),
    Variant("pinning", "ENABLE_CPU_PINNING true", {"ENABLE_CPU_PINNING": True}),
    Variant("latency", "PERFORMANCE_HINT LATENCY", {"PERFORMANCE_HINT": "LATENCY"}),
    # The CPU plugin's scheduling of each operation's loop across threads (TBB static or auto partitioner)
    # and its int8 quantization of activations for compressed weights (group size; 0 turns it off).
    Variant("tbb-static", "TBB_PARTITIONER STATIC", {"TBB_PARTITIONER": "STATIC"}),
    Variant("tbb-auto", "TBB_PARTITIONER AUTO", {"TBB_PARTITIONER": "AUTO"}),
    Variant("dq-off", "DYNAMIC_QUANTIZATION_GROUP_SIZE 0 (dynamic quantization off; CPU default 32)",
            {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}),
    Variant("dq-128", "DYNAMIC_QUANTIZATION_GROUP_SIZE 128", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": 128}),
    Variant("no-split-fuse", "dynamic_split_fuse false", text_generation={"dynamic_split_fuse": False}),
    Variant("batched-1024", "max_num_batched_tokens 1024", text_generation={"max_num_batched_tokens": 1024}),
    Variant("seqs-1", "max_num_seqs 1", text_generation={"max_num_seqs": 1}),
    Variant("prompt-lookup", "prompt-lookup decoding, 5 tokens per step, 3-grams",
            text_generation={"prompt_lookup": True}),
    Variant("stateful", "one stateful LLMPipeline instead of continuous batching", engine="naive"),
    # Speculative decoding: the server does not offer it (README), but the engine's figures are here.
    Variant("draft-2", "speculative decoding, draft smollm2-draft-2-int4, 2 tokens per step",
            draft="smollm2-draft-2-int4", assistant_tokens=2),
    Variant("draft-2-k4", "speculative decoding, draft smollm2-draft-2-int4, 4 tokens per step",
            draft="smollm2-draft-2-int4", assistant_tokens=4),
    Variant("draft-8", "speculative decoding, draft smollm2-draft-8-int8, 3 tokens per step",
            draft="smollm2-draft-8-int8", assistant_tokens=3),
    Variant("draft-int8", "speculative decoding, draft smollm2-int8 (the whole model, no cheaper than the target), "
            "3 tokens per step", draft="smollm2-int8", assistant_tokens=3),
    # The single-setting winners together, to see whether their gains add up on one stream.
    Variant("pinning-latency", "ENABLE_CPU_PINNING true and PERFORMANCE_HINT LATENCY",
            {"ENABLE_CPU_PINNING": True, "PERFORMANCE_HINT": "LATENCY"}),
    Variant("one-user", "pinning, latency hint, f16 KV cache, no split-fuse, max_num_seqs 1",
            {"ENABLE_CPU_PINNING": True, "PERFORMANCE_HINT": "LATENCY", "KV_CACHE_PRECISION": "f16"},
            {"dynamic_split_fuse": False, "max_num_seqs": 1}),
)}


def variant_folder(source: Path, variant: Variant, parent: Path) -> Path:
    """A model folder whose version files are the source's (hard links) and whose config.json has the
    variant's changes."""
    root = single_model_repository(source, "bench/model", parent=parent)
    folder = root / "bench" / "model"
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {"task": "text_generation"}
    config.setdefault("plugin_config", {}).update(variant.plugin_config)
    config.setdefault("text_generation", {}).update(variant.text_generation)
    config_file.write_text(json.dumps(config))
    return folder


def measure(format_name: str, variant: Variant, args: argparse.Namespace, workdir: Path) -> list[Run]:
    folder = variant_folder(model_dir(format_name), variant, workdir)
    run_args = argparse.Namespace(
        model_dir=folder, version_dir=folder / "1", max_tokens=args.max_tokens,
        requests_per_client=args.requests_per_client, idle_wait=args.idle_wait, retries=args.retries, breakdown=False,
        concurrency=[1] if variant.engine == "naive" else args.concurrency,
        draft_dir=model_dir(variant.draft) / "1" if variant.draft else None, assistant_tokens=variant.assistant_tokens)
    mode = NaiveMode(run_args) if variant.engine == "naive" else RawMode(run_args)
    try:
        return mode.run_all()
    except RuntimeError as exc:  # an engine that refuses the variant: say so and go on with the others
        print(f"[variants] {format_name} {variant.name}: failed: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
        return []
    finally:
        shutil.rmtree(folder.parents[1], ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", nargs="+", choices=sorted(MODELS), default=None,
                        help="benchmark models to compare (each with the first variant); the first is the baseline")
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2-q4_1",
                        help="benchmark model the variants run on (smollm2-q4_1, the demo model)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                        help="variants, the first is the baseline (default: all, starting with default)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1], help="client counts (1)")
    parser.add_argument("--requests-per-client", type=int, default=3, help="requests per client per measurement (3)")
    parser.add_argument("--max-tokens", type=int, default=128, help="completion tokens per request (128)")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="questions",
                        help="questions (default) or quote (answers that repeat their prompt)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (3)")
    parser.add_argument("--idle-wait", type=float, default=120.0, help="wait up to this long for an idle CPU (120)")
    parser.add_argument("--retries", type=int, default=2, help="measure again when disturbed (2)")
    args = parser.parse_args(argv)
    use_workload(args.workload)
    variant_names = args.variants or list(VARIANTS)
    formats = args.formats or [args.model]
    cells = [(f, VARIANTS[v]) for f in formats for v in (variant_names if not args.formats else variant_names[:1])]
    print(f"Variant benchmark: {software()}")
    print(f"{args.workload} workload; {len(cells)} cells x {args.rounds} rounds; concurrency {args.concurrency}; "
          f"{args.requests_per_client} request(s)/client; {args.max_tokens} tokens, greedy, ignore_eos")
    results: dict[tuple[str, str, int], list[Run]] = {}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-variants-", dir=Path(__file__).resolve().parents[2] / ".cache") as work:
        for round_index in range(args.rounds):
            for format_name, variant in cells:
                for run in measure(format_name, variant, args, Path(work)):
                    results.setdefault((format_name, variant.name, run.concurrency), []).append(run)
            print(f"[variants] round {round_index + 1}/{args.rounds} done at {time.perf_counter() - began:.0f} s",
                  file=sys.stderr)
    print(report(cells, results, args))
    return 0


def tokens_per_step(runs: list[Run]) -> str:
    """Median over runs of completion tokens per engine step and stream (prompt steps included): about 1
    without proposals, up to 1 + the proposed tokens when a draft's or the prompt's proposals are accepted.
    Per stream, so at C > 1 it is exact only while all C streams share each step."""
    ratios = [run.tokens / run.notes["cycle_steps"] / run.concurrency for run in runs if run.notes.get("cycle_steps")]
    return f"{statistics.median(ratios):.2f}" if ratios else "-"


def report(cells: list[tuple[str, Variant]], results: dict, args: argparse.Namespace) -> str:
    base_format, base_variant = cells[0]
    header = ["C", "model", "variant", "tok/s (median)", "vs baseline (median of rounds)", "by round",
              "TTFT p50 ms", "ITL p50 ms", "tokens per step"]
    rows = []
    for concurrency in args.concurrency:
        base = results.get((base_format, base_variant.name, concurrency), [])
        for format_name, variant in cells:
            runs = results.get((format_name, variant.name, concurrency))
            if not runs:
                continue
            ratios = [run.tokens_per_s / b.tokens_per_s for run, b in zip(runs, base)]
            rows.append([
                str(concurrency), format_name, variant.name,
                f"{statistics.median(r.tokens_per_s for r in runs):.1f}",
                f"{statistics.median(ratios):.2f}x" if ratios else "-",
                ", ".join(f"{r:.2f}" for r in ratios),
                f"{statistics.median(r.ttft_ms(50) for r in runs):.1f}",
                f"{statistics.median(r.itl_ms(50) for r in runs):.2f}",
                tokens_per_step(runs),
            ])
    described = {variant.name: variant.about for _, variant in cells}
    about = "\n".join(f"  {name}: {text}" for name, text in described.items())
    return "\n".join([text_table(header, rows), "", "Markdown:", markdown_table(header, rows), "", "Variants:", about])


if __name__ == "__main__":
    sys.exit(main())
