"""Reasoning output: the <think>...</think> block that Qwen3 and DeepSeek-R1 write before their answer
goes to reasoning_content, never into content. Parsed incrementally, as tool calls are, so streamed and
unary answers agree and no marker leaks into either field."""

from __future__ import annotations

from dataclasses import dataclass

OPEN, CLOSE = "<think>", "</think>"


@dataclass
class Reasoning:
    text: str


@dataclass
class Answer:
    text: str


def opens_in_prompt(prompt: str) -> bool:
    """DeepSeek-R1's template (and Qwen3's with thinking on, in some versions) ends the prompt with
    <think>: the generated text then starts inside the block."""
    return prompt.rstrip().endswith(OPEN)


def _held(text: str, marker: str) -> int:
    """How many trailing characters of `text` may begin `marker`."""
    return max((k for k in range(1, len(marker)) if text.endswith(marker[:k])), default=0)


class ReasoningStream:
    def __init__(self, *, starts_inside: bool) -> None:
        self._state = "reasoning" if starts_inside else "start"  # start | reasoning | answer
        self._pending = ""
        self._strip_next = True  # leading newlines of the block or of the answer after it go

    def feed(self, text: str) -> list[Reasoning | Answer]:
        self._pending += text
        events: list[Reasoning | Answer] = []
        if self._state == "start":
            stripped = self._pending.lstrip()
            if stripped.startswith(OPEN):
                self._state, self._pending = "reasoning", stripped[len(OPEN):]
            elif stripped and not OPEN.startswith(stripped):
                self._state, self._strip_next = "answer", False
            else:
                return events
        if self._state == "reasoning":
            if self._strip_next:
                self._pending = self._pending.lstrip("\n")
                if not self._pending:
                    return events
                self._strip_next = False
            at = self._pending.find(CLOSE)
            if at < 0:
                hold = _held(self._pending, CLOSE)
                sendable = self._pending[: len(self._pending) - hold].rstrip("\n")  # newlines before </think> go
                self._pending = self._pending[len(sendable):]
                return [Reasoning(sendable)] if sendable else []
            if at:
                events.append(Reasoning(self._pending[:at].rstrip("\n")))
            self._state, self._pending, self._strip_next = "answer", self._pending[at + len(CLOSE):], True
        if self._strip_next:
            self._pending = self._pending.lstrip("\n")
            if not self._pending:
                return events
            self._strip_next = False
        if self._pending:
            events.append(Answer(self._pending))
            self._pending = ""
        return events

    def finish(self) -> list[Reasoning | Answer]:
        text, self._pending = self._pending, ""
        if not text:
            return []
        return [Reasoning(text)] if self._state == "reasoning" else [Answer(text)]


def split(text: str, *, starts_inside: bool) -> tuple[str, str]:
    """(reasoning, answer) of a whole output."""
    stream = ReasoningStream(starts_inside=starts_inside)
    events = stream.feed(text) + stream.finish()
    return ("".join(e.text for e in events if isinstance(e, Reasoning)),
            "".join(e.text for e in events if isinstance(e, Answer)))
