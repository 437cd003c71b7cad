"""The <think> block goes to reasoning_content, whole or split anywhere; no marker leaks."""

from __future__ import annotations

import pytest

from server.services import reasoning
from server.services.chat_deltas import ChatDeltas

CASES = [
    ("<think>\nThe user greets me.\n</think>\n\nHello!", False, ("The user greets me.", "Hello!")),
    ("The user greets me.\n</think>\n\nHello!", True, ("The user greets me.", "Hello!")),
    ("Hello without thinking.", False, ("", "Hello without thinking.")),
    ("<think>cut off by max_tokens", False, ("cut off by max_tokens", "")),
    ("  <thinking is a word> here", False, ("", "  <thinking is a word> here")),
    ("<think></think>Answer", False, ("", "Answer")),
]


@pytest.mark.parametrize(("text", "inside", "expected"), CASES)
def test_split_whole_and_at_every_position(text: str, inside: bool, expected: tuple[str, str]) -> None:
    assert reasoning.split(text, starts_inside=inside) == expected
    for cut in range(len(text) + 1):
        stream = reasoning.ReasoningStream(starts_inside=inside)
        events = stream.feed(text[:cut]) + stream.feed(text[cut:]) + stream.finish()
        got = ("".join(e.text for e in events if isinstance(e, reasoning.Reasoning)),
               "".join(e.text for e in events if isinstance(e, reasoning.Answer)))
        assert got == expected, cut


def test_reasoning_then_a_tool_call_streams_as_separate_deltas() -> None:
    text = ('<think>Need the weather.</think>\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}'
            '</tool_call>')
    chat = ChatDeltas(tool_parser="hermes", reasoning_parser="think", starts_in_reasoning=False)
    deltas = [delta for char in text for delta in chat.feed(char)] + chat.finish()
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Need the weather."
    assert not any(d.get("content") for d in deltas)
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert "".join(c["function"].get("arguments", "") for c in calls) == '{"city": "Paris"}'
    assert chat.finish_reason("stop") == "tool_calls" and chat.finish_reason("length") == "length"


def test_plain_text_passes_through() -> None:
    chat = ChatDeltas(tool_parser=None, reasoning_parser=None, starts_in_reasoning=False)
    assert chat.feed("Hello") + chat.feed("") + chat.finish() == [{"content": "Hello"}]
    assert chat.finish_reason("stop") == "stop"
