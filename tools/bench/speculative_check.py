#!/usr/bin/env python3
"""Whether the engine survives sampled requests while it decodes with proposed tokens.

Each case builds a fresh ContinuousBatchingPipeline (a failed step leaves one unusable), adds one sampled
request (temperature T, seed S, ignore_eos) and steps it to the end. "draft" decodes speculatively with the
model drafting for itself; "prompt-lookup" proposes tokens from the prompt, as text_generation.prompt_lookup
does. A case fails when step() raises or the request ends early. The README's speculative-decoding paragraph
reports this tool's output.

    .venv/bin/python tools/bench/speculative_check.py                       # tiny-chat (make test-models)
    .venv/bin/python tools/bench/speculative_check.py --model-dir .cache/bench-models/smollm2-q4_1/1 \\
        --prompt "Repeat this text word for word: ..." --methods prompt-lookup
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from server.pipelines.generation_worker import engine_properties, scheduler_config  # noqa: E402
from server.pipelines.sampling import build_config  # noqa: E402
from server.pipelines.settings import GenerationSettings  # noqa: E402

TINY_CHAT = Path(__file__).resolve().parents[2] / ".cache" / "test-models" / "tiny-chat" / "1"
DRAFT_PROPOSED = 3  # tokens the draft proposes per step (prompt lookup: the served default, 5)


def run_case(model_dir: Path, method: str, prompt: str, temperature: float, seed: int, tokens: int) -> str | None:
    """None when the request ran to its end, else the first line of the engine's error."""
    import openvino_genai as ov_genai

    settings = dataclasses.asdict(GenerationSettings(prompt_lookup=method == "prompt-lookup"))
    properties = engine_properties(settings, {})
    if method == "draft":
        properties["draft_model"] = ov_genai.draft_model(str(model_dir), "CPU")
    pipeline = ov_genai.ContinuousBatchingPipeline(str(model_dir), scheduler_config(settings), "CPU", properties)
    ids = pipeline.get_tokenizer().encode(prompt, add_special_tokens=False).input_ids
    params = {"max_new_tokens": tokens, "ignore_eos": True, "do_sample": True, "temperature": temperature,
              "rng_seed": seed, "num_assistant_tokens": DRAFT_PROPOSED}
    if method == "prompt-lookup":  # what services/generation_plan.py sends to such a model
        params.update(num_assistant_tokens=settings["num_assistant_tokens"], max_ngram_size=settings["max_ngram_size"])
    handle = pipeline.add_request(0, ids, build_config(params))  # held: a dropped handle cancels the request
    try:
        while pipeline.has_non_finished_requests():
            pipeline.step()
        produced = len(handle.read_all()[0].generated_ids)
    except Exception as exc:  # noqa: BLE001 - the engine's failure is the finding
        return re.sub(r"failed at \S*/", "failed at ", str(exc).strip().splitlines()[0])  # no build paths
    return None if produced == tokens else f"ended after {produced} of {tokens} tokens"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=TINY_CHAT, help="an OpenVINO LLM folder (tiny-chat)")
    parser.add_argument("--methods", nargs="+", choices=["draft", "prompt-lookup"], default=["draft", "prompt-lookup"])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.8, 0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--tokens", type=int, default=32, help="completion tokens per request (32)")
    parser.add_argument("--prompt", default="hello there")
    args = parser.parse_args(argv)
    if not (args.model_dir / "openvino_model.xml").is_file():
        parser.error(f"{args.model_dir} holds no openvino_model.xml (tiny-chat: run make test-models)")
    failed = 0
    for method in args.methods:
        for temperature in args.temperatures:
            for seed in args.seeds:
                error = run_case(args.model_dir, method, args.prompt, temperature, seed, args.tokens)
                failed += error is not None
                print(f"{method:13} temperature {temperature:<4} seed {seed}: {'ok' if error is None else 'FAILED: ' + error}",
                      flush=True)
    print(f"{failed} failed of {len(args.methods) * len(args.temperatures) * len(args.seeds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
