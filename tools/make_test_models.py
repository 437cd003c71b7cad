#!/usr/bin/env python3
"""Build small offline model folders for tests: OUTDIR/NAME/config.json + OUTDIR/NAME/1/<OpenVINO IR>.

  tiny-chat    random Llama trained to answer every chat prompt with CHAT_REPLY, then EOS
  tiny-embed   random BERT, feature-extraction (pooling CLS)
  tiny-rerank  random BERT cross-encoder with one logit
  minilm       real sentence-transformers/all-MiniLM-L6-v2 from a PyPI wheel

Builds are cached in $OVMS_MODEL_CACHE (default <repo>/.cache/models), keyed by the builder
sources, so a second run only copies folders.
"""

from __future__ import annotations

import argparse
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

SEED = 0
CHAT_REPLY = "Hello! I am a tiny test model."
# ChatML-like; the EOS token is <|im_end|>, so generation stops right after the reply.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TRAIN_STEPS = 80
WORDS = (
    "hello hi world foo bar the a an is are was what who how why when where tell me about you your "
    "model test tiny small big capital of france paris write code python story poem please thanks "
    "one two three four five system user assistant helpful answer question weather today sky blue "
    "red green man eating food bread piece dog cat fox quick brown lazy jumps over query document"
).split()


# --------------------------------------------------------------------------- tiny-chat


def _chat_tokenizer() -> Any:
    """Byte-level BPE trained on a fixed corpus (BPE training is deterministic, unlike WordPiece)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [CHAT_REPLY] * 20  # repeated so every reply word becomes one token
    corpus += ["system\nuser\nassistant\n", "The quick brown fox jumps over the lazy dog. 0123456789 ,.;:!?'\"()-"]
    corpus += [" ".join(WORDS[i : i + 6]) for i in range(0, len(WORDS), 3)]
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
        chat_template=CHAT_TEMPLATE,
        model_max_length=1024,
    )


def _random_text(rng: random.Random) -> str:
    """Words plus some gibberish, so the reply does not depend on what the user says."""
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-"
    parts = [
        rng.choice(WORDS) if rng.random() < 0.8 else "".join(rng.choices(chars, k=rng.randint(1, 8)))
        for _ in range(rng.randint(1, 30))
    ]
    return " ".join(parts)


def _random_conversation(rng: random.Random) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": _random_text(rng)}] if rng.random() < 0.3 else []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        messages.append({"role": "user", "content": _random_text(rng)})
        messages.append({"role": "assistant", "content": CHAT_REPLY})
    return messages[:-1]  # end on a user turn


def _chat_example(tokenizer: Any, rng: random.Random) -> tuple[list[int], list[int]]:
    """(input ids, labels): loss only on the reply + EOS. A quarter are raw (non-chat) prompts."""
    if rng.random() < 0.25:
        prompt = _random_text(rng)
    else:
        prompt = tokenizer.apply_chat_template(_random_conversation(rng), tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer.encode(prompt)
    reply_ids = tokenizer.encode(CHAT_REPLY) + [tokenizer.eos_token_id]
    return prompt_ids + reply_ids, [-100] * len(prompt_ids) + reply_ids


def _train_chat_model(tokenizer: Any) -> Any:
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
    for _ in range(CHAT_TRAIN_STEPS):
        examples = [_chat_example(tokenizer, rng) for _ in range(16)]
        input_ids, labels, attention_mask = _batch(examples, tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    log(f"tiny-chat: trained {CHAT_TRAIN_STEPS} steps, final loss {loss.item():.4f}")
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    return model.eval()


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
    """Both pipelines load it; chat prompts get exactly CHAT_REPLY and stop on EOS."""
    import openvino_genai as ovg

    max_new_tokens = 64
    config = ovg.GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False)
    engine = ovg.ContinuousBatchingPipeline(str(version_dir), ovg.SchedulerConfig(), "CPU")
    tokenizer = engine.get_tokenizer()
    conversations = [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}],
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": CHAT_REPLY},
            {"role": "user", "content": "again"},
        ],
    ]
    for messages in conversations:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        input_ids = tokenizer.encode(prompt, add_special_tokens=False).input_ids
        tokens = engine.generate([input_ids], [config])[0].m_generation_ids[0]
        reply = tokenizer.decode(tokens)
        log(f"tiny-chat: CB {messages[-1]['content']!r} -> {reply!r} ({len(tokens)} tokens)")
        if reply != CHAT_REPLY or len(tokens) >= max_new_tokens:
            raise BuildError(f"tiny-chat: expected {CHAT_REPLY!r} then EOS, got {reply!r} ({len(tokens)} tokens)")
    del engine

    llm = ovg.LLMPipeline(str(version_dir), "CPU")
    prompt = llm.get_tokenizer().apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    reply = llm.generate(prompt, config)
    raw = llm.generate("Once upon a time", config)
    log(f"tiny-chat: LLMPipeline chat -> {reply!r}, raw 'Once upon a time' -> {raw!r}")
    if reply != CHAT_REPLY:
        raise BuildError(f"tiny-chat: LLMPipeline answered {reply!r}")


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
    "tiny-embed": ModelSpec(
        build_tiny_embed, {"task": "embeddings", "embeddings": {"pooling": "cls", "normalize": True}}
    ),
    "tiny-rerank": ModelSpec(build_tiny_rerank, {"task": "rerank"}),
    "minilm": ModelSpec(build_minilm, MINILM_SERVER_CONFIG),
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
