"""A cross-encoder's (query, text) framing comes from its tokenizer's pair template: BERT's is unchanged
from the single-text layout, RoBERTa/XLM-R (bge-reranker) get `<s> q </s></s> t </s>`, and a model
that outputs more than one logit per pair is refused at load, since its scores cannot rank."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from server.pipelines.base import ModelLoadError  # noqa: E402
from server.pipelines.loader import OpenVINOLoader  # noqa: E402
from server.pipelines.pair_template import bert_layout, read_pair_template  # noqa: E402
from server.repository.config import build  # noqa: E402

MODELS = Path(os.environ.get("OVMS_TEST_MODELS", Path(__file__).resolve().parents[2] / ".cache" / "test-models"))
RERANK = MODELS / "tiny-rerank" / "1"


def write_tokenizer_json(folder: Path, post_processor: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps({"post_processor": post_processor}))
    return folder


@pytest.mark.skipif(not RERANK.is_dir(), reason="tiny-rerank test model not built")
def test_bert_template_frames_as_before() -> None:
    template = read_pair_template(RERANK)
    assert template == bert_layout([2], [3])  # [CLS] = 2, [SEP] = 3 in tiny-rerank's vocabulary
    assert template.frame([10, 11], [20], 64) == ([2, 10, 11, 3, 20, 3], [0, 0, 0, 0, 1, 1])
    assert template.special_tokens == 3


def test_roberta_pairs_have_a_double_separator_and_one_token_type(tmp_path: Path) -> None:
    folder = write_tokenizer_json(tmp_path, {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                                             "trim_offsets": True, "add_prefix_space": False})
    template = read_pair_template(folder)
    assert template.frame([10, 11], [20], 64) == ([0, 10, 11, 2, 2, 20, 2], [0] * 7)
    assert template.special_tokens == 4
    assert template.frame([10, 11], [20, 21, 22], 6) == ([0, 10, 11, 2, 2, 20], [0] * 6)  # cut to the window


def test_a_sequence_of_processors_uses_the_one_that_frames(tmp_path: Path) -> None:
    folder = write_tokenizer_json(tmp_path, {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "trim_offsets": False},
        {"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}]})
    assert read_pair_template(folder) == bert_layout([101], [102])


def test_no_or_unknown_post_processor_means_no_template(tmp_path: Path) -> None:
    assert read_pair_template(tmp_path) is None
    assert read_pair_template(write_tokenizer_json(tmp_path / "odd", {"type": "ByteLevel"})) is None


@pytest.mark.skipif(not RERANK.is_dir(), reason="tiny-rerank test model not built")
def test_a_model_with_two_logits_per_pair_is_refused_at_load(tmp_path: Path) -> None:
    folder = tmp_path / "classifier" / "1"
    shutil.copytree(RERANK, folder)
    ids = ov.opset13.parameter([-1, -1], ov.Type.i64, name="input_ids")
    mask = ov.opset13.parameter([-1, -1], ov.Type.i64, name="attention_mask")
    for port, name in ((ids, "input_ids"), (mask, "attention_mask")):
        port.output(0).set_names({name})
    total = ov.opset13.reduce_sum(ov.opset13.convert(ids, ov.Type.f32), np.array([1]), keep_dims=True)
    logits = ov.opset13.matmul(total, ov.opset13.constant(np.ones((1, 2), dtype=np.float32)), False, False)
    logits.output(0).set_names({"logits"})
    ov.save_model(ov.Model([logits], [ids, mask], "two_labels"), folder / "openvino_model.xml")
    spec = build({"task": "rerank"}).pipeline
    with pytest.raises(ModelLoadError) as refused:
        OpenVINOLoader().load(folder, spec, "classifier")
    assert "one logit per pair" in refused.value.message and "outputs 2" in refused.value.message
