"""Detokenization by vocabulary lookup in Python, for the tokenizers where that is exactly what the
detokenizer model does.

Why: the generation worker decodes every step's new tokens between two pipeline steps, where nothing
else runs. One Tokenizer.decode call (it runs the detokenizer model) took 0.38-0.47 ms right after a
step on the 2-core VM, against 0.07-0.11 ms back to back: its inference threads fall asleep during the
step. At one stream of SmolLM2 (8-12 ms per token) that was the largest share of the server's extra
time per token. Many detokenizers (byte-level BPE: GPT-2, Llama 3, Qwen, SmolLM) only look each token up
in a table of byte strings, leave special tokens out, join the bytes and check them as UTF-8, replacing
or skipping invalid bytes. Python does that in microseconds.

Exact or not used: VocabDecoder.verified() builds the table from Tokenizer.get_vocab() and compares
its output with the tokenizer's own decode on every single token, on random sequences (biased towards
tokens that hold partial UTF-8 characters) and on every prefix of a multilingual sample. Any difference,
and the worker keeps the tokenizer's decode; detokenizers that do more (SentencePiece's "▁" and
leading-space strip, space clean-up) fail the check. A batch holding an id outside the table goes to
the tokenizer.
"""

from __future__ import annotations

import random
from typing import Protocol, Sequence

_REPLACEMENT = "\ufffd".encode()
_MIN_CODE_POINT = {2: 0x80, 3: 0x800, 4: 0x10000}  # shorter forms of smaller code points are invalid
_RANDOM_SEQUENCES = 600  # per kind (any tokens / partial-character tokens): a few ms of decoding at load
_MAX_RANDOM_LENGTH = 8
SAMPLE = ("Hello, world! Grüße aus München: 5 € or £4. Привет, как дела? 你好，世界。こんにちは。"
          "안녕하세요. مرحبا بالعالم. שלום עולם. नमस्ते दुनिया। 🙂👍🏽🇫🇷 café naïve — «quotes» … "
          "def f(x):\n    return x ** 2  # tabs\tand\r\nnewlines\n\n   spaces   "
          "what a clean-up would change : it 's , isn 't . they 're ! ok ? ")


class _Tokenizer(Protocol):
    def get_vocab(self) -> dict: ...
    def decode(self, tokens: list[list[int]]) -> list[str]: ...
    def encode(self, text: str, **kwargs: object) -> object: ...


def openvino_utf8(data: bytes, replace: bool) -> bytes:
    """Invalid UTF-8 handled as openvino_tokenizers' UTF8Validate does: a byte that cannot start a
    character, a character cut short (the byte that cut it starts over) and a too-long form (one mark
    per byte) are each replaced by U+FFFD or (replace=False) left out. Its lead-byte masks let F5-F7
    and surrogates through; the conversion to Python text then replaces each of their bytes, as
    bytes.decode(errors="replace") does."""
    mark = _REPLACEMENT if replace else b""
    out = bytearray()
    position, size = 0, len(data)
    while position < size:
        lead = data[position]
        if lead < 0x80:
            out.append(lead)
            position += 1
            continue
        length = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 0
        if not length:
            out += mark
            position += 1
            continue
        end = position + 1
        while end < position + length and end < size and data[end] >> 6 == 0b10:
            end += 1
        if end < position + length:  # cut short: by a byte that is not a continuation, or by the end
            out += mark
            position = end
            continue
        code_point = lead & (0x7F >> length)
        for byte in data[position + 1 : end]:
            code_point = (code_point << 6) | (byte & 0x3F)
        out += mark * length if code_point < _MIN_CODE_POINT[length] else data[position:end]
        position = end
    return bytes(out)


class VocabDecoder:
    """A batched decode (the shape of Tokenizer.decode's) by table lookup; decode() returns None for a
    batch it cannot reproduce, which then goes to the tokenizer."""

    def __init__(self, pieces: Sequence[bytes], replace: bool) -> None:
        self._pieces = list(pieces)  # by token id; b"" for the tokens decode leaves out (special tokens)
        self._size = len(self._pieces)
        self.replace = replace

    def decode(self, batch: list[list[int]]) -> list[str] | None:
        pieces, texts = self._pieces, []
        for ids in batch:
            if ids and (min(ids) < 0 or max(ids) >= self._size):
                return None
            data = b"".join([pieces[token] for token in ids])
            try:
                texts.append(data.decode())
            except UnicodeDecodeError:  # rare: the model output partial or invalid characters
                texts.append(openvino_utf8(data, self.replace).decode(errors="replace"))
        return texts

    @classmethod
    def verified(cls, tokenizer: _Tokenizer, seed: int = 0) -> "VocabDecoder | None":
        """A decoder that agrees with `tokenizer.decode` on every check, or None."""
        try:
            vocabulary = tokenizer.get_vocab()
            size = max(vocabulary.values()) + 1
            if len(vocabulary) != size or not all(isinstance(piece, bytes) for piece in vocabulary):
                return None  # holes in the ids, or pieces that are text rather than bytes
            pieces = [b""] * size
            for piece, token in vocabulary.items():
                pieces[token] = piece
            each_token = [[token] for token in range(size)]
            singles = tokenizer.decode(each_token)
            sample = [int(token) for token in _first_row(tokenizer.encode(SAMPLE, add_special_tokens=False))]
        except Exception:  # noqa: BLE001 - any tokenizer that cannot be inspected keeps its own decode
            return None
        # Tokens with text of their own that decode to nothing alone are the ones decode leaves out.
        kept = [piece if text or not openvino_utf8(piece, replace=False) else b""
                for piece, text in zip(pieces, singles)]
        checks = _check_sequences(kept, sample, random.Random(seed))
        try:
            expected = tokenizer.decode(checks)
        except Exception:  # noqa: BLE001
            return None
        for replace in (True, False):
            decoder = cls(kept, replace)
            if decoder.decode(each_token) == singles and decoder.decode(checks) == expected:
                return decoder
        return None


def _first_row(encoded: object) -> list:
    ids = encoded.input_ids.data  # openvino_genai TokenizedInputs: a [1, n] tensor
    return list(ids[0])


def _check_sequences(pieces: list[bytes], sample: list[int], rng: random.Random) -> list[list[int]]:
    """Every prefix of the sample, and random sequences of any tokens and of partial-character tokens."""
    size = len(pieces)
    partial = [token for token, piece in enumerate(pieces) if piece and not _is_utf8(piece)] or [0]
    left_out = [token for token, piece in enumerate(pieces) if not piece] or [0]
    sequences = [sample[:end] for end in range(1, len(sample) + 1)]
    for _ in range(_RANDOM_SEQUENCES):
        sequences.append([rng.randrange(size) for _ in range(rng.randint(1, _MAX_RANDOM_LENGTH))])
        sequences.append([rng.choice(partial) if rng.random() < 0.7 else
                          rng.choice(left_out) if rng.random() < 0.2 else rng.randrange(size)
                          for _ in range(rng.randint(1, _MAX_RANDOM_LENGTH))])
    return sequences


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
        return True
    except UnicodeDecodeError:
        return False
