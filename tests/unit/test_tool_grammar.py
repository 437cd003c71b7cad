"""The grammars tool calls are generated under: their shape, and that GenAI accepts them."""

from __future__ import annotations

import json

import pytest

from server.services import tool_grammar

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def test_required_calls_are_one_wrapper_with_fixed_keys() -> None:
    tree = tool_grammar.calls_tag([WEATHER], most=1)
    assert tree == {"concat": [{"const": '{"tool_calls": [{"name": "get_weather", "arguments": {"city": '},
                               {"json_schema": '{"type": "string"}'}, {"const": "}}]}"}]}


def test_parallel_required_nests_a_second_call() -> None:
    tree = tool_grammar.calls_tag([WEATHER, TIME], most=5)
    text = json.dumps(tree)
    assert text.count('\\"get_time\\"') == tool_grammar.MAX_PARALLEL_CALLS  # one copy per call, capped


@pytest.mark.parametrize("parallel", [True, False])
def test_auto_guards_hermes_calls_from_their_opening(parallel: bool) -> None:
    guard = tool_grammar.triggered_calls([WEATHER, TIME], "hermes", parallel=parallel)["triggered"]
    assert guard["triggers"] == ["<tool_call>"] and guard["stop_after_first"] is not parallel
    (tag,) = guard["tags"]
    assert (tag["begin"], tag["end"]) == ("<tool_call>", "")
    assert '"name\\": \\"get_weather\\"' in json.dumps(tag["content"])


def test_auto_guards_the_generic_format_with_at_most_one_call_when_not_parallel() -> None:
    single = tool_grammar.triggered_calls([WEATHER], "json", parallel=False)["triggered"]
    assert single["triggers"] == ['{"tool_calls": [']
    (tag,) = single["tags"]
    assert tag["content"] == {"concat": [{"const": '{"name": "get_weather", "arguments": {"city": '},
                                         {"json_schema": '{"type": "string"}'}, {"const": "}}]}"}]}
    assert tag["end"] == ""  # the closing is in the content: the engine refuses empty strings there


@pytest.mark.parametrize("parser", ["mistral", "llama3_json", "pythonic"])
def test_other_formats_are_not_guarded(parser: str) -> None:
    assert tool_grammar.triggered_calls([WEATHER], parser, parallel=True) is None


@pytest.mark.parametrize("tree", [
    tool_grammar.calls_tag([WEATHER, TIME], most=2),
    tool_grammar.triggered_calls([WEATHER, TIME], "hermes", parallel=True),
    tool_grammar.triggered_calls([WEATHER, TIME], "json", parallel=False),
    tool_grammar.calls_tag([WEATHER, TIME], most=2, parser="hermes"),
])
def test_genai_accepts_the_grammars(tree: dict) -> None:
    pytest.importorskip("openvino_genai")
    from server.pipelines.sampling import build_config

    config = build_config({"max_new_tokens": 8, "structural_tag": json.dumps(tree)})
    config.validate()
    assert config.structured_output_config is not None


def test_hermes_models_are_held_to_their_own_framing() -> None:
    tree = tool_grammar.calls_tag([WEATHER], most=2, parser="hermes")
    text = json.dumps(tree)
    assert tree["concat"][0] == {"const": "<tool_call>"} and text.count('\\"get_weather\\"') == 2
    assert '"</tool_call>\\n<tool_call>"' in text and tree["concat"][-1]["union"][0] == {"const": "</tool_call>"}
