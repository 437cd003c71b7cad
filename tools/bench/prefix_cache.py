#!/usr/bin/env python3
"""Time to first token for a long shared system prompt: the first request, then repeats with other questions.

Each request is the same long system prompt (about --system-tokens tokens of a policy text) followed by a
different short question; max_tokens 1, greedy. With the scheduler's prefix caching (the server's default,
`text_generation.enable_prefix_caching`) a repeat finds the system prompt's KV cache and only prefills the
question. Measured in process on the continuous-batching pipeline with prefix caching on and off, and
through the server (streaming chat, TTFT = send to first content chunk) with its default config.

    .venv/bin/python tools/bench/prefix_cache.py
    .venv/bin/python tools/bench/prefix_cache.py --model llama1b-q4_0 --system-tokens 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))

from common import ConnectionPool, markdown_table, run_on_server, single_model_repository, software, text_table  # noqa: E402
from models import MODELS, model_dir  # noqa: E402

QUESTIONS = ("May I return an opened item?", "How long does a refund take?", "Do you ship abroad?",
             "Can I change my delivery address?", "Is there a warranty on batteries?", "Who pays return postage?")
VISIBLE_CONTENT = re.compile(rb'"content":\s*"[^"]')  # a delta with text (the first chunk's may be empty)
CLAUSE = ("Clause {n}: customers may return any unused item within thirty days of delivery for a full refund, "
          "provided the original packaging is intact and the receipt is shown; refunds are paid to the original "
          "payment method within five working days of the item reaching our warehouse. ")


def system_prompt(tokenizer, tokens: int) -> str:
    text, n = "You are the support assistant of an online shop. Answer from this policy only.\n", 1
    while tokenizer.encode(text, add_special_tokens=False).input_ids.shape[1] < tokens:
        text += CLAUSE.format(n=n)
        n += 1
    return text


def messages(system: str, question: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def raw_ttfts(version_dir: Path, prefix_caching: bool, system_tokens: int) -> tuple[int, list[float]]:
    import openvino_genai as ov_genai

    scheduler = ov_genai.SchedulerConfig()
    scheduler.enable_prefix_caching = prefix_caching
    scheduler.dynamic_split_fuse = True
    pipeline = ov_genai.ContinuousBatchingPipeline(str(version_dir), scheduler, "CPU", {})
    tokenizer = pipeline.get_tokenizer()
    system = system_prompt(tokenizer, system_tokens)
    config = ov_genai.GenerationConfig(max_new_tokens=1, do_sample=False)
    ttfts, prompt_tokens = [], 0
    for index, question in enumerate(QUESTIONS):
        prompt = tokenizer.apply_chat_template(messages(system, question), add_generation_prompt=True)
        ids = tokenizer.encode(prompt, add_special_tokens=False).input_ids
        prompt_tokens = ids.shape[1]
        started = time.perf_counter()
        handle = pipeline.add_request(index, ids, config)
        while not handle.can_read():
            pipeline.step()
        ttfts.append((time.perf_counter() - started) * 1000)
        while pipeline.has_non_finished_requests():
            pipeline.step()
    del pipeline
    return prompt_tokens, ttfts


def server_ttfts(model: Path, system_tokens: int, workdir: Path) -> list[float]:
    import openvino_genai as ov_genai

    tokenizer = ov_genai.Tokenizer(str(model / "1"))
    system = system_prompt(tokenizer, system_tokens)
    repository = single_model_repository(model, "bench/model", parent=workdir)

    async def body(server) -> list[float]:
        pool = ConnectionPool(server.base_url, 1)
        ttfts = []
        try:
            for question in QUESTIONS:
                payload = json.dumps({"model": "bench/model", "messages": messages(system, question), "max_tokens": 1,
                                      "temperature": 0, "stream": True}).encode()
                async with pool.connection() as connection:
                    started = time.perf_counter()
                    status, pieces = await connection.stream("/v3/chat/completions", payload)
                    first = None
                    async for data in pieces:
                        if first is None and VISIBLE_CONTENT.search(data):
                            first = time.perf_counter()
                    if status != 200 or first is None:
                        raise RuntimeError(f"HTTP {status}")
                    ttfts.append((first - started) * 1000)
        finally:
            await pool.close()
        return ttfts

    return run_on_server(repository, workdir, "bench/model", None, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2-q4_1", help="benchmark model (smollm2-q4_1)")
    parser.add_argument("--system-tokens", type=int, default=1500, help="length of the shared system prompt (1500)")
    args = parser.parse_args(argv)
    model = model_dir(args.model)
    print(f"Prefix-cache benchmark: {args.model}, {software()}; {len(QUESTIONS)} requests, max_tokens 1")
    rows = []
    for label, caching in (("raw, prefix caching on", True), ("raw, prefix caching off", False)):
        prompt_tokens, ttfts = raw_ttfts(model / "1", caching, args.system_tokens)
        rows.append([label, str(prompt_tokens), f"{ttfts[0]:.0f}", f"{statistics.median(ttfts[1:]):.0f}",
                     ", ".join(f"{t:.0f}" for t in ttfts[1:])])
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as work:
        ttfts = server_ttfts(model, args.system_tokens, Path(work))
    rows.append(["server (default config)", rows[0][1], f"{ttfts[0]:.0f}", f"{statistics.median(ttfts[1:]):.0f}",
                 ", ".join(f"{t:.0f}" for t in ttfts[1:])])
    header = ["engine", "prompt tokens", "first TTFT ms", "repeat TTFT ms (median)", "repeats"]
    print(text_table(header, rows))
    print("\nMarkdown:\n" + markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
