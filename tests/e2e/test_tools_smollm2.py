"""Tool calls on the real demo SmolLM2-135M-Instruct, whose chat template knows no tools: with
tool_choice "required" or a named function the arguments parse and validate against the tool's schema
every time, over several tools and prompts, unary and streamed, with the official openai client."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from openai import OpenAI

from tests.e2e.harness import running_server

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TOOLS = {
    "get_weather": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                     "unit": {"enum": ["C", "F"]}},
                    "required": ["city", "unit"]},
    "search_flights": {"type": "object", "properties": {
        "origin": {"type": "string", "maxLength": 40}, "destination": {"type": "string", "maxLength": 40},
        "passengers": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["origin", "destination", "passengers"]},
    "add_numbers": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                    "required": ["a", "b"]},
    "send_email": {"type": "object", "properties": {"to": {"type": "string", "maxLength": 60},
                                                    "subject": {"type": "string", "maxLength": 80},
                                                    "urgent": {"type": "boolean"}},
                   "required": ["to", "subject", "urgent"]},
}
DEFINITIONS = [{"type": "function", "function": {"name": name, "parameters": schema}} for name, schema in TOOLS.items()]
PROMPTS = {
    "get_weather": "What's the weather in Paris?",
    "search_flights": "Find me flights from Berlin to Rome for 2 people.",
    "add_numbers": "What is 17 plus 25?",
    "send_email": "Email bob@example.com that the meeting moved, it's urgent.",
}


@pytest.fixture(scope="module")
def client(models: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_server(tmp_path_factory.mktemp("repository"), {MODEL: models / "smollm2"}) as server:
        server.wait_states(MODEL, {"1": "AVAILABLE"})
        yield OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0, timeout=120)


def assert_valid(calls, allowed: set[str]) -> None:
    assert calls
    for call in calls:
        assert call.function.name in allowed
        jsonschema.validate(json.loads(call.function.arguments), TOOLS[call.function.name])


@pytest.mark.parametrize("name", list(TOOLS))
def test_named_calls_validate(client: OpenAI, name: str) -> None:
    for prompt in (PROMPTS[name], "Hello there!"):  # also when the prompt has nothing to do with the tool
        response = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], tools=DEFINITIONS, max_tokens=300,
            tool_choice={"type": "function", "function": {"name": name}})
        choice = response.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert_valid(choice.message.tool_calls, {name})
        assert len(choice.message.tool_calls) == 1


def test_required_calls_validate(client: OpenAI) -> None:
    for prompt in PROMPTS.values():
        response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}],
                                                  tools=DEFINITIONS, tool_choice="required", max_tokens=300)
        assert response.choices[0].finish_reason == "tool_calls"
        assert_valid(response.choices[0].message.tool_calls, set(TOOLS))


def test_streamed_named_call_validates(client: OpenAI) -> None:
    with client.chat.completions.stream(
            model=MODEL, messages=[{"role": "user", "content": PROMPTS["search_flights"]}], tools=DEFINITIONS,
            tool_choice={"type": "function", "function": {"name": "search_flights"}}, max_tokens=300) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert_valid(final.choices[0].message.tool_calls, {"search_flights"})


def test_parallel_calls_unary_and_streamed(client: OpenAI) -> None:
    """Two questions, two calls (greedy, so unary and streamed agree): each with its own id, streamed
    as index 0 then index 1, which the SDK reassembles."""
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Paris and in Rome?"}],
           "tools": DEFINITIONS[:1], "tool_choice": "required", "max_tokens": 300}
    unary = client.chat.completions.create(**ask).choices[0]
    assert unary.finish_reason == "tool_calls" and len(unary.message.tool_calls) == 2
    assert len({call.id for call in unary.message.tool_calls}) == 2
    assert_valid(unary.message.tool_calls, {"get_weather"})
    indexes = []
    with client.chat.completions.stream(**ask) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                indexes.append(event.index)
        streamed = stream.get_final_completion().choices[0]
    assert indexes == sorted(indexes) and set(indexes) == {0, 1}
    assert [(c.function.name, c.function.arguments) for c in streamed.message.tool_calls] == \
        [(c.function.name, c.function.arguments) for c in unary.message.tool_calls]
