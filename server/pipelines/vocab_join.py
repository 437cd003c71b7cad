"""Token ids of an embedding model's own vocabulary, joined back into text.

TextEmbeddingPipeline takes text, and embedding models ship no detokenizer, so ids sent as `input`
(embeddings.token_ids "model") become text again from the vocabulary pieces, by the rules of the
vocabulary's family; the text then tokenizes back into the same pieces:
- WordPiece (BERT): a piece starts a word unless it begins with "##";
- byte-level BPE (GPT-2, Qwen, SmolLM): every piece is bytes written as characters (GPT-2's
  byte-to-unicode table: "Ġ" is a space, "Ċ" a newline), so the pieces join without spaces;
- SentencePiece (XLM-R, e5-multilingual, Llama): "▁" marks a space, "<0xNN>" pieces are raw bytes,
  other pieces continue the word; the leading space SentencePiece adds is dropped.
Added tokens (tokenizer.json `added_tokens`: special tokens such as Qwen's `<|endoftext|>`, often
outside `model.vocab`) are their literal text in any family.
A vocabulary of another kind is not joined (None: the request is refused).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

WORDPIECE, BYTE_LEVEL, SENTENCEPIECE = "wordpiece", "byte-level", "sentencepiece"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def _byte_of_character() -> dict[str, int]:
    """GPT-2's bytes_to_unicode table, inverted: printable bytes stand for themselves, the others are
    shifted above 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    characters = list(printable)
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + shifted)
            shifted += 1
    return {chr(c): b for b, c in zip(printable, characters)}


@dataclass(frozen=True)
class Vocabulary:
    pieces: list[str]
    style: str
    added: dict[int, str] = field(default_factory=dict)  # id -> literal text of an added token

    def join(self, ids: Iterable[int]) -> str:
        if self.style == WORDPIECE:
            return "".join(self._wordpiece(i) for i in ids).strip()
        data = bytearray()
        table = _byte_of_character()
        for i in ids:
            piece = self.pieces[i]
            if i in self.added:
                data += piece.encode()
            elif self.style == BYTE_LEVEL:
                data += bytes(table[c] for c in piece if c in table)
            elif byte := _BYTE_PIECE.fullmatch(piece):
                data += bytes([int(byte.group(1), 16)])
            else:
                data += piece.replace("\u2581", " ").encode()
        text = data.decode("utf-8", "replace")
        return text[1:] if self.style == SENTENCEPIECE and text.startswith(" ") else text

    def _wordpiece(self, i: int) -> str:
        piece = self.pieces[i]
        return piece[2:] if piece.startswith("##") and i not in self.added else " " + piece


def _style_of_tokenizer_json(document: dict) -> str | None:
    model = document.get("model") or {}
    kinds = {model.get("type")}
    for part in ("decoder", "pre_tokenizer"):
        section = document.get(part) or {}
        kinds.add(section.get("type"))
        kinds.update(step.get("type") for step in section.get("decoders", section.get("pretokenizers", [])) or [])
    if "WordPiece" in kinds:
        return WORDPIECE
    if "ByteLevel" in kinds:
        return BYTE_LEVEL
    if kinds & {"Metaspace", "Unigram", "ByteFallback"}:
        return SENTENCEPIECE
    return None


def _pieces_of(vocab: dict | list) -> list[str]:
    if isinstance(vocab, dict):
        pieces = [""] * (max(vocab.values()) + 1)
        for piece, index in vocab.items():
            pieces[index] = piece
        return pieces
    return [entry[0] for entry in vocab]  # unigram: [[piece, score], ...]


def _style_of_pieces(pieces: list[str]) -> str | None:
    if any(p.startswith("\u0120") for p in pieces):
        return BYTE_LEVEL
    if any(p.startswith("\u2581") for p in pieces):
        return SENTENCEPIECE
    if any(p.startswith("##") for p in pieces):
        return WORDPIECE
    return None


def read_vocabulary(path: Path, vocab_vector: Callable[[], list[str] | None]) -> Vocabulary | None:
    """The vocabulary of the model folder `path`: from the tokenizer.json that optimum exports beside the
    IR, else the detokenizer's pieces (`vocab_vector()`, asked only then), else vocab.txt (WordPiece).
    None when there is none, or its family is not one of the three joined here."""
    try:
        document = json.loads((path / "tokenizer.json").read_text())
        pieces = _pieces_of(document["model"]["vocab"])
        added = {int(t["id"]): str(t["content"]) for t in document.get("added_tokens") or []}
        if added:
            pieces += [""] * (max(added) + 1 - len(pieces))
            for index, content in added.items():
                pieces[index] = content
        style = _style_of_tokenizer_json(document)
        return Vocabulary(pieces, style, added) if style else None
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError):
        pass
    pieces = vocab_vector()
    if pieces:
        style = _style_of_pieces(pieces)
        return Vocabulary(pieces, style) if style else None
    try:
        pieces = (path / "vocab.txt").read_text().splitlines()
    except OSError:
        return None
    return Vocabulary(pieces, WORDPIECE) if pieces else None
