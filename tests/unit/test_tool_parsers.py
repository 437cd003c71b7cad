"""Tool-call parsers on recorded outputs of each family, whole and split at every position."""

from __future__ import annotations

import json

import pytest

from server.services import tool_parsers
from server.services.tool_parsers import ParsedOutput, ToolCall

WEATHER = ToolCall("get_weather", '{"city": "Paris", "unit": "celsius"}')
TIME = ToolCall("get_time", '{"zone": "Europe/Paris"}')

RECORDED = {
    "hermes": [
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>',
         ParsedOutput("", [WEATHER])),
        ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
         '</tool_call>\n<tool_call>\n{"arguments": {"zone": "Europe/Paris"}, "name": "get_time"}\n</tool_call>',
         ParsedOutput("Let me check.\n", [WEATHER, TIME])),
        ("The answer is 4 < 5, no tools needed.", ParsedOutput("The answer is 4 < 5, no tools needed.")),
        ("I would write <tool_call> here but not JSON", ParsedOutput("I would write <tool_call> here but not JSON")),
        ('<tool_call>{"name": "noargs"}</tool_call>', ParsedOutput("", [ToolCall("noargs", "{}")])),
        ('<tool_call>{"name": "s", "arguments": "{\\"q\\": \\"x}\\"}"}</tool_call>',
         ParsedOutput("", [ToolCall("s", '{"q": "x}"}')])),
    ],
    "mistral": [
        ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
         '{"name": "get_time", "arguments": {"zone": "Europe/Paris"}}]', ParsedOutput("", [WEATHER, TIME])),
        ("Plain [answer] with [brackets].", ParsedOutput("Plain [answer] with [brackets].")),
    ],
    "llama3_json": [
        ('{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}', ParsedOutput("", [WEATHER])),
        ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}; '
         '{"name": "get_time", "parameters": {"zone": "Europe/Paris"}}', ParsedOutput("", [WEATHER, TIME])),
        ("Paris is sunny {mostly}.", ParsedOutput("Paris is sunny {mostly}.")),
    ],
    "pythonic": [
        ('[get_weather(city="Paris", unit="celsius"), get_time(zone="Europe/Paris")]',
         ParsedOutput("", [ToolCall("get_weather", json.dumps({"city": "Paris", "unit": "celsius"})),
                           ToolCall("get_time", json.dumps({"zone": "Europe/Paris"}))])),
        ("[1] is a citation, not a call.", ParsedOutput("[1] is a citation, not a call.")),
    ],
    "json": [
        ('[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]', ParsedOutput("", [WEATHER])),
        ('{"name": "get_time", "arguments": {"zone": "Europe/Paris"}}', ParsedOutput("", [TIME])),
        ("Just text.", ParsedOutput("Just text.")),
        ('{\n  "tool_calls": [\n    {\n      "name": "get_weather",\n      "arguments": {"city": "Paris", "unit": "celsius"}'
         ',\n      "id": "call_1"\n    }\n  ],\n  "content": ""\n}', ParsedOutput("", [WEATHER])),
        ('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
         '{"name": "get_time", "arguments": {"zone": "Europe/Paris"}}]}', ParsedOutput("", [WEATHER, TIME])),
        ('{"tool": "not the wrapper"}', ParsedOutput('{"tool": "not the wrapper"}')),
    ],
}
CASES = [(parser, text, expected) for parser, cases in RECORDED.items() for text, expected in cases]


@pytest.mark.parametrize(("parser", "text", "expected"), CASES)
def test_whole_output(parser: str, text: str, expected: ParsedOutput) -> None:
    assert tool_parsers.parse(parser, text) == expected


@pytest.mark.parametrize(("parser", "text", "expected"), CASES)
def test_split_at_every_position(parser: str, text: str, expected: ParsedOutput) -> None:
    for cut in range(len(text) + 1):
        stream = tool_parsers.new_stream(parser)
        events = stream.feed(text[:cut]) + stream.feed(text[cut:]) + stream.finish()
        assert tool_parsers.gather(events) == expected, cut


@pytest.mark.parametrize(("parser", "text", "expected"), CASES)
def test_character_by_character_never_leaks_markup(parser: str, text: str, expected: ParsedOutput) -> None:
    stream = tool_parsers.new_stream(parser)
    events = [event for char in text for event in stream.feed(char)] + stream.finish()
    assert tool_parsers.gather(events) == expected
    if expected.calls:  # the name comes before any argument fragment of its call
        starts = {e.index: i for i, e in enumerate(events) if isinstance(e, tool_parsers.CallStart)}
        for i, event in enumerate(events):
            if isinstance(event, tool_parsers.Arguments):
                assert starts[event.index] < i


def test_arguments_cut_short_stay_partial() -> None:
    parsed = tool_parsers.parse("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": "Pa')
    assert parsed.calls == [ToolCall("get_weather", '{"city": "Pa')]
