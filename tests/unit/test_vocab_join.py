"""Token ids joined back into text by the rules of the vocabulary's family: on real tokenizers of the test
models (WordPiece: minilm; byte-level BPE: tiny-chat, SmolLM2's family), the joined text tokenizes back
into the same ids; SentencePiece on pieces written out (no such test model is built offline)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from server.pipelines.vocab_join import BYTE_LEVEL, SENTENCEPIECE, WORDPIECE, Vocabulary, read_vocabulary

ov_genai = pytest.importorskip("openvino_genai")

MODELS = Path(os.environ.get("OVMS_TEST_MODELS", Path(__file__).resolve().parents[2] / ".cache" / "test-models"))
TEXTS = ["Hello world, it's fine", "naïve café: 5 € — ok?", "two\nlines  and   spaces", "你好，世界 🙂"]


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).input_ids.data[0].tolist()


@pytest.mark.parametrize("model, style", [("minilm", WORDPIECE), ("tiny-chat", BYTE_LEVEL)])
def test_joined_ids_tokenize_back_into_the_same_ids(model: str, style: str) -> None:
    folder = MODELS / model / "1"
    if not folder.is_dir():
        pytest.skip(f"{model} test model not built")
    tokenizer = ov_genai.Tokenizer(str(folder))
    vocabulary = read_vocabulary(folder, lambda: None)
    assert vocabulary is not None and vocabulary.style == style
    for text in TEXTS:
        ids = ids_of(tokenizer, text)
        joined = vocabulary.join(ids)
        assert ids_of(tokenizer, joined) == ids, (text, joined)
        if style == BYTE_LEVEL:
            assert joined == text  # byte-level BPE loses nothing


def test_sentencepiece_pieces_continue_words_and_bytes_come_back() -> None:
    vocabulary = Vocabulary(["▁Hel", "lo", "▁w", "<0xC3>", "<0xB6>", "rld", "<0x0A>", "▁ok"], SENTENCEPIECE)
    assert vocabulary.join(range(8)) == "Hello wörld\n ok"


def test_a_vocabulary_of_another_family_is_not_joined(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1}}}))
    assert read_vocabulary(tmp_path, lambda: None) is None
    assert read_vocabulary(tmp_path / "missing", lambda: None) is None
    (tmp_path / "vocab.txt").write_text("[PAD]\nhello\n##s\n")
    (tmp_path / "tokenizer.json").unlink()
    assert read_vocabulary(tmp_path, lambda: None) == Vocabulary(["[PAD]", "hello", "##s"], WORDPIECE)


def test_added_tokens_outside_the_vocabulary_are_their_literal_text(tmp_path: Path) -> None:
    """Qwen's tokenizer.json keeps <|endoftext|> (and other specials) only in added_tokens."""
    (tmp_path / "tokenizer.json").write_text(json.dumps({
        "model": {"type": "BPE", "vocab": {"Hi": 0, "Ġthere": 1}},
        "decoder": {"type": "ByteLevel"},
        "added_tokens": [{"id": 5, "content": "<|endoftext|>", "special": True}]}))
    vocabulary = read_vocabulary(tmp_path, lambda: None)
    assert vocabulary.style == BYTE_LEVEL and len(vocabulary.pieces) == 6
    assert vocabulary.join([0, 1, 5]) == "Hi there<|endoftext|>"
