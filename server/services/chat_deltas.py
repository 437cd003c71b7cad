"""One streamed chat choice: generated text in, OpenAI `delta` objects out, with the thinking split off
(reasoning.py) and tool calls read out of the answer (tool_parsers.py)."""

from __future__ import annotations

from server.services import reasoning, tool_parsers
from server.services import tools as tool_calling


class ChatDeltas:
    def __init__(self, *, tool_parser: str | None, reasoning_parser: str | None, starts_in_reasoning: bool) -> None:
        self._thinking = reasoning.ReasoningStream(starts_inside=starts_in_reasoning) if reasoning_parser else None
        self._tools = tool_parsers.new_stream(tool_parser) if tool_parser else None
        self.called = False  # a tool call began
        self.reasoning_text: list[str] = []
        self._ids: list[str] = []

    def feed(self, text: str) -> list[dict]:
        return self._deltas(self._thinking.feed(text) if self._thinking else [reasoning.Answer(text)], final=False)

    def finish(self) -> list[dict]:
        return self._deltas(self._thinking.finish() if self._thinking else [], final=True)

    def finish_reason(self, finish: str) -> str:
        return "tool_calls" if self.called and finish == "stop" else finish

    def _deltas(self, parts: list, *, final: bool) -> list[dict]:
        deltas: list[dict] = []
        for part in parts:
            if isinstance(part, reasoning.Reasoning):
                self.reasoning_text.append(part.text)
                deltas.append({"reasoning_content": part.text})
            elif self._tools is None:
                deltas.append({"content": part.text})
            else:
                deltas += self._tool_deltas(self._tools.feed(part.text))
        if final and self._tools is not None:
            deltas += self._tool_deltas(self._tools.finish())
        return [delta for delta in deltas if delta.get("content") != "" and delta.get("reasoning_content") != ""]

    def _tool_deltas(self, events: list[tool_parsers.Event]) -> list[dict]:
        deltas = []
        for event in events:
            if isinstance(event, tool_parsers.Content):
                deltas.append({"content": event.text})
            elif isinstance(event, tool_parsers.CallStart):
                self.called = True
                self._ids.append(tool_calling.call_id())
                deltas.append({"tool_calls": [{"index": event.index, "id": self._ids[event.index], "type": "function",
                                               "function": {"name": event.name, "arguments": ""}}]})
            else:
                deltas.append({"tool_calls": [{"index": event.index, "function": {"arguments": event.fragment}}]})
        return deltas
