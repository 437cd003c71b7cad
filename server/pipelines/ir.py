"""Facts read from OpenVINO IR files: tensor metadata, the task a folder implies, required files."""

from __future__ import annotations

from pathlib import Path

import openvino as ov

from server.pipelines.base import ModelMetadata, TensorSpec

MODEL_XML = "openvino_model.xml"
TOKENIZER_XML = "openvino_tokenizer.xml"
DETOKENIZER_XML = "openvino_detokenizer.xml"

REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "text_generation": (MODEL_XML, "openvino_model.bin", TOKENIZER_XML, DETOKENIZER_XML),
    "embeddings": (MODEL_XML, "openvino_model.bin", TOKENIZER_XML),
    "rerank": (MODEL_XML, "openvino_model.bin", TOKENIZER_XML),
}

_DATATYPES = {
    "f32": "FP32", "f16": "FP16", "bf16": "BF16", "f64": "FP64",
    "i64": "INT64", "i32": "INT32", "i16": "INT16", "i8": "INT8",
    "u64": "UINT64", "u32": "UINT32", "u16": "UINT16", "u8": "UINT8",
    "boolean": "BOOL", "string": "BYTES",
}

# Read served models and tokenizers into memory of their own, not mapped from their files (OpenVINO's
# default): a file of a serving version overwritten in place (cp truncates it first) then killed the
# process with SIGBUS at its next inference, or changed the weights under it. Same memory once loaded
# (the mapped pages counted in RSS too); loads take 0.3-0.6 s longer; two workers of one model (a
# generation worker and its schema probe) no longer share the file's pages.
PRIVATE_WEIGHTS = {"ENABLE_MMAP": False}

_core: ov.Core | None = None


def core() -> ov.Core:
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


def read_served_model(xml: Path) -> ov.Model:
    """A model read to be compiled and served (see PRIVATE_WEIGHTS); reads for facts keep the mapping."""
    return core().read_model(xml, config=PRIVATE_WEIGHTS)


def missing_files(task: str, files: frozenset[str]) -> list[str]:
    return [name for name in REQUIRED_FILES[task] if name not in files]


def _spec(port: ov.Output) -> TensorSpec:
    shape = tuple(-1 if dim.is_dynamic else dim.get_length() for dim in port.get_partial_shape())
    name = port.get_any_name() if port.get_names() else port.get_node().get_friendly_name()
    return TensorSpec(name, _DATATYPES.get(port.get_element_type().get_type_name(), "BYTES"), shape)


def read_metadata(model: ov.Model) -> ModelMetadata:
    return ModelMetadata(tuple(_spec(p) for p in model.inputs), tuple(_spec(p) for p in model.outputs))


def infer_task(version_path: Path) -> str | None:
    """Guess the task from the IR: decoder LLMs have a detokenizer and a stateful/past-KV graph,
    cross-encoders one logit per pair, embedders a hidden-state output. None when unsure."""
    if not (version_path / MODEL_XML).is_file() or not (version_path / TOKENIZER_XML).is_file():
        return None
    model = core().read_model(version_path / MODEL_XML)
    input_names = {name for port in model.inputs for name in port.get_names()}
    outputs = {name: port for port in model.outputs for name in port.get_names()}
    if (version_path / DETOKENIZER_XML).is_file() and ("beam_idx" in input_names or "position_ids" in input_names):
        return "text_generation"
    if len(outputs) == 1 and "logits" in outputs:
        shape = outputs["logits"].get_partial_shape()
        if shape.rank.is_static and shape.rank.get_length() == 2 and shape[1].is_static and shape[1].get_length() == 1:
            return "rerank"
    if "last_hidden_state" in outputs or "token_embeddings" in outputs:
        return "embeddings"
    return None
