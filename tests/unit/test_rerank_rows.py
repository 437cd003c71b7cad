"""Row extraction for the cross-encoder against the real tiny-rerank tokenizer: the tokenizer answers a
single 0-wide row for a batch of texts without tokens, which once lost rows and hung requests."""

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest

ov_genai = pytest.importorskip("openvino_genai")

from server.pipelines.rerank import RerankModel, _rows, _token_counts  # noqa: E402
from server.repository.config import build  # noqa: E402

MODEL = Path(os.environ.get("OVMS_TEST_MODELS", Path(__file__).resolve().parents[2] / ".cache" / "test-models")) / "tiny-rerank" / "1"
pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason="tiny-rerank test model not built")


@pytest.fixture(scope="module")
def tokenizer():
    return ov_genai.Tokenizer(str(MODEL))


@pytest.mark.parametrize("texts", [["", ""], [""], ["\u200b", ""], [" ", " "], ["0", "", ""], ["", "a", ""]])
def test_one_row_per_text(tokenizer, texts: list[str]) -> None:
    rows = _rows(tokenizer, texts)
    counts = _token_counts(tokenizer, texts)
    assert len(rows) == len(texts) and counts == [len(row) for row in rows]
    for text, row in zip(texts, rows):
        expected = tokenizer.encode([text], add_special_tokens=False).attention_mask.data.sum() if text else 0
        assert len(row) == expected


def test_rows_match_single_text_encoding(tokenizer) -> None:
    texts = ["alpha beta", "", "gamma"]
    rows = _rows(tokenizer, texts)
    assert rows[0] == tokenizer.encode("alpha beta", add_special_tokens=False).input_ids.data[0].tolist()
    assert rows[1] == []


def test_empty_documents_score_like_any_other() -> None:
    config = build({"task": "rerank"})
    spec = dataclasses.replace(config.pipeline, settings=dataclasses.replace(config.pipeline.settings, max_queued_items=64))
    model = RerankModel(MODEL, spec, metadata=None, model_id="tiny-rerank")
    try:
        scores = asyncio.run(asyncio.wait_for(model.score("0", ["", ""]), 30))
        assert len(scores) == 2 and scores[0] == scores[1] and 0 <= scores[0] <= 1
        assert model.token_counts(["", ""]) == [0, 0]
    finally:
        model.close()
