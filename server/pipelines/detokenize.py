"""Incremental detokenization: text for new tokens as soon as it is complete.

Decodes a short window of recent tokens twice (without and with the new ones) and emits the
difference, holding it back only while it ends in an incomplete UTF-8 sequence (U+FFFD). Unlike
openvino_genai.TextStreamer, this emits a token's text at the step that produced it: the streamer
was measured holding the first text back for 2-3 steps, which showed up directly in TTFT.
"""

from __future__ import annotations

from typing import Callable

_INCOMPLETE = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # window start: decoding from here keeps spacing that depends on the previous token
        self._read = 0  # tokens whose text has been emitted

    def push(self, token_ids: list[int]) -> str:
        self._ids.extend(token_ids)
        return self._advance(final=False)

    def flush(self) -> str:
        """At the end of generation: whatever is held back, even an incomplete character."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        emitted = self._decode(self._ids[self._prefix : self._read]) if self._read > self._prefix else ""
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(emitted) or (text.endswith(_INCOMPLETE) and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(emitted) :]
