"""VocabDecoder: the worker's Python detokenizer is used only where it gives exactly what the tokenizer's
own decode gives. UTF-8 handling follows openvino_tokenizers' UTF8Validate; the real tokenizers of the
test models (one replacing invalid bytes, one skipping them) are compared on sequences the verification
never saw; tokenizers whose decode does more than a lookup are refused."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from server.pipelines.vocab_decoder import VocabDecoder, openvino_utf8

MODELS = Path(os.environ.get("OVMS_TEST_MODELS", Path(__file__).resolve().parents[2] / ".cache" / "test-models"))
MARK = "\ufffd".encode()


@pytest.mark.parametrize(("data", "replaced", "skipped"), [
    ("Grüße € 🙂".encode(), "Grüße € 🙂".encode(), "Grüße € 🙂".encode()),
    (b"a\x80b", b"a" + MARK + b"b", b"ab"),  # a continuation byte with nothing to continue
    (b"\xe2\x82A", MARK + b"A", b"A"),  # cut short: the byte that cut it starts over
    (b"A\xe2\x82", b"A" + MARK, b"A"),  # cut short by the end
    (b"\xc0\x80", MARK * 2, b""),  # a too-long form: one mark per byte
    (b"\xe0\x80\x80z", MARK * 3 + b"z", b"z"),
    (b"\xf8x", MARK + b"x", b"x"),  # no character starts with F8
    (b"\xf5\x91\xa0\xae", b"\xf5\x91\xa0\xae", b"\xf5\x91\xa0\xae"),  # its masks let F5 through
])
def test_invalid_utf8_is_handled_as_openvino_tokenizers_does(data: bytes, replaced: bytes, skipped: bytes) -> None:
    assert openvino_utf8(data, replace=True) == replaced
    assert openvino_utf8(data, replace=False) == skipped


class FakeTokenizer:
    """A byte-level vocabulary whose decode joins the pieces, leaves special tokens out and replaces
    invalid bytes; `strip_first_space` (SentencePiece-like) and `clean_up` make it do more than a lookup."""

    def __init__(self, *, strip_first_space: bool = False, text_pieces: bool = False, clean_up: bool = False) -> None:
        self.pieces = [b"<s>", b"</s>", b" hello", b" world", b"!", b"\xe2\x82", b"\xac", b"a", b" "]
        self.special = {0, 1}
        self.strip_first_space, self.text_pieces, self.clean_up = strip_first_space, text_pieces, clean_up

    def get_vocab(self) -> dict:
        return {(piece.decode(errors="replace") if self.text_pieces else piece): token
                for token, piece in enumerate(self.pieces)}

    def decode(self, batch: list[list[int]]) -> list[str]:
        texts = []
        for ids in batch:
            data = b"".join(self.pieces[token] for token in ids if token not in self.special)
            text = openvino_utf8(data, replace=True).decode(errors="replace")
            if self.clean_up:  # as clean_up_tokenization_spaces does
                text = text.replace(" !", "!")
            texts.append(text[1:] if self.strip_first_space and text.startswith(" ") else text)
        return texts

    def encode(self, text: str, **kwargs: object) -> object:
        class Encoded:
            class input_ids:  # noqa: N801 - the shape of openvino_genai's TokenizedInputs
                data = [[2, 3, 4, 5, 6, 1, 7]]
        return Encoded()


def test_a_lookup_vocabulary_is_verified_and_leaves_special_tokens_out() -> None:
    decoder = VocabDecoder.verified(FakeTokenizer())
    assert decoder is not None and decoder.replace
    assert decoder.decode([[0, 2, 3, 1], [5, 6, 4], [5], [2, 5, 7]]) == [" hello world", "€!", "\ufffd", " hello\ufffda"]


@pytest.mark.parametrize("tokenizer", [FakeTokenizer(strip_first_space=True), FakeTokenizer(clean_up=True),
                                       FakeTokenizer(text_pieces=True)],
                         ids=["strips-the-first-space", "cleans-up-spaces", "pieces-are-text-not-bytes"])
def test_a_tokenizer_it_cannot_reproduce_keeps_its_own_decode(tokenizer: FakeTokenizer) -> None:
    assert VocabDecoder.verified(tokenizer) is None


def test_a_tokenizer_that_cannot_be_inspected_keeps_its_own_decode() -> None:
    class Opaque(FakeTokenizer):
        def get_vocab(self) -> dict:
            raise RuntimeError("no vocabulary")

    assert VocabDecoder.verified(Opaque()) is None


def test_ids_outside_the_vocabulary_go_to_the_tokenizer() -> None:
    decoder = VocabDecoder([b"a", b"b"], replace=True)
    assert decoder.decode([[0, 1]]) == ["ab"]
    assert decoder.decode([[0], [2]]) is None
    assert decoder.decode([[-1]]) is None


@pytest.mark.parametrize(("model", "replace"), [("tiny-chat", True), ("smollm2", False)])
def test_the_test_models_tokenizers_agree_on_sequences_the_check_never_saw(model: str, replace: bool) -> None:
    ov_genai = pytest.importorskip("openvino_genai")
    path = MODELS / model / "1"
    if not path.is_dir():
        pytest.skip(f"{model} test model not built")
    tokenizer = ov_genai.Tokenizer(str(path))
    decoder = VocabDecoder.verified(tokenizer)
    assert decoder is not None
    assert decoder.replace is replace  # each way of handling invalid bytes is exercised
    size = len(tokenizer.get_vocab())
    rng = random.Random(12345)  # not the verification's seed
    sequences = [[rng.randrange(size) for _ in range(rng.randint(1, 12))] for _ in range(3000)]
    assert decoder.decode(sequences) == tokenizer.decode(sequences)
