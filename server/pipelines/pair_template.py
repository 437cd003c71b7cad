"""How a cross-encoder frames a (query, text) pair: its tokenizer's own pair template.

The tokenizer IR encodes one text at a time, so the pair is put together here, from the post-processor
of the tokenizer.json exported beside the IR: BERT frames `[CLS] q [SEP] t [SEP]` with token types
0 then 1; RoBERTa and XLM-R (bge-reranker) frame `<s> q </s></s> t </s>` with type 0 throughout. A
reranker scored under another model's framing gives other scores without any error. Without a
tokenizer.json the BERT layout is built from how the tokenizer frames a single text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

QUERY, TEXT, SPECIAL = "A", "B", "special"


@dataclass(frozen=True)
class PairTemplate:
    parts: tuple[tuple[str, tuple[int, ...], int], ...]  # (QUERY | TEXT | SPECIAL, special ids, type id)

    @property
    def special_tokens(self) -> int:
        return sum(len(ids) for kind, ids, _ in self.parts if kind == SPECIAL)

    def frame(self, query: list[int], text: list[int], max_length: int) -> tuple[list[int], list[int]]:
        """Token ids and token types of the pair, cut to max_length."""
        row: list[int] = []
        types: list[int] = []
        for kind, ids, type_id in self.parts:
            piece = query if kind == QUERY else text if kind == TEXT else list(ids)
            row += piece
            types += [type_id] * len(piece)
        return row[:max_length], types[:max_length]


def bert_layout(prefix: list[int], suffix: list[int]) -> PairTemplate:
    """prefix + query + suffix + text + suffix, types 0 up to the first suffix's end, then 1."""
    return PairTemplate(((SPECIAL, tuple(prefix), 0), (QUERY, (), 0), (SPECIAL, tuple(suffix), 0),
                         (TEXT, (), 1), (SPECIAL, tuple(suffix), 1)))


def _from_processor(processor: dict) -> PairTemplate | None:
    kind = processor.get("type")
    if kind == "Sequence":
        for inner in processor.get("processors") or []:
            template = _from_processor(inner)
            if template is not None:
                return template
        return None
    if kind in ("RobertaProcessing", "BertProcessing"):
        cls, sep = (int(processor["cls"][1]),), (int(processor["sep"][1]),)
        if kind == "RobertaProcessing":
            return PairTemplate(((SPECIAL, cls, 0), (QUERY, (), 0), (SPECIAL, sep + sep, 0), (TEXT, (), 0),
                                 (SPECIAL, sep, 0)))
        return bert_layout(list(cls), list(sep))
    if kind == "TemplateProcessing":
        specials = processor.get("special_tokens") or {}
        parts = []
        for item in processor.get("pair") or []:
            if "Sequence" in item:
                sequence = item["Sequence"]
                parts.append((QUERY if sequence["id"] == "A" else TEXT, (), int(sequence.get("type_id", 0))))
            else:
                special = item["SpecialToken"]
                parts.append((SPECIAL, tuple(int(i) for i in specials[special["id"]]["ids"]),
                              int(special.get("type_id", 0))))
        kinds = [kind for kind, _, _ in parts]
        return PairTemplate(tuple(parts)) if kinds.count(QUERY) == 1 and kinds.count(TEXT) == 1 else None
    return None


def read_pair_template(folder: Path) -> PairTemplate | None:
    """The pair template of the tokenizer.json in `folder`, or None when there is none to read."""
    try:
        processor = json.loads((folder / "tokenizer.json").read_text()).get("post_processor")
        return _from_processor(processor) if isinstance(processor, dict) else None
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError):
        return None
