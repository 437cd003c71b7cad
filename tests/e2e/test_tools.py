"""Tool calling on /v3/chat/completions with the official openai client, against tiny-chat.

tiny-chat's template knows no tools, so tools reach it in GenAI's generic rendering, and required /
named calls are generated under the calls schema: whatever the model, the name is one of the tools and
the arguments validate against that tool's parameters.
"""

from __future__ import annotations

import json
import shutil
from typing import Literal

import jsonschema
import openai
import pydantic
import pytest
import requests
from openai import OpenAI

from tests.e2e.harness import ServerProcess, running_server

MODEL = "tiny-chat"
REPLY = "Hello! I am a tiny test model."
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Rome"]}, "unit": {"enum": ["C", "F"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_PARAMETERS = {
    "type": "object",
    "properties": {"offset": {"type": "integer", "minimum": -12, "maximum": 14}},
    "required": ["offset"],
    "additionalProperties": False,
}
# Short: tiny-chat's 400-token vocabulary and 1024-token window leave little room for tool descriptions.
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMETERS}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": TIME_PARAMETERS}}
SCHEMAS = {"get_weather": WEATHER_PARAMETERS, "get_time": TIME_PARAMETERS}


@pytest.fixture(scope="module")
def server(wide_tiny_chat, tmp_path_factory: pytest.TempPathFactory):
    thinker = tmp_path_factory.mktemp("thinker") / "thinker"  # the same model with the reasoning parser on
    shutil.copytree(wide_tiny_chat, thinker)
    config = json.loads((thinker / "config.json").read_text())
    config["text_generation"]["reasoning_parser"] = "think"
    (thinker / "config.json").write_text(json.dumps(config))
    with running_server(tmp_path_factory.mktemp("repository"), {MODEL: wide_tiny_chat, "thinker": thinker}) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)


def check_calls(calls, names: set[str]) -> None:
    assert calls, "no tool calls"
    assert len({call.id for call in calls}) == len(calls)
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_call_is_valid(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME],
                                              tool_choice="required", max_tokens=200)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.refusal is None
    check_calls(choice.message.tool_calls, {"get_weather", "get_time"})


def test_named_call_calls_that_function_once(client: OpenAI) -> None:
    for name in ("get_weather", "get_time"):
        response = client.chat.completions.create(
            model=MODEL, messages=ASK, tools=[WEATHER, TIME], max_tokens=200,
            tool_choice={"type": "function", "function": {"name": name}})
        calls = response.choices[0].message.tool_calls
        check_calls(calls, {name})
        assert len(calls) == 1


def test_parallel_tool_calls_false_gives_one_call(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], max_tokens=200,
                                              tool_choice="required", parallel_tool_calls=False)
    assert len(response.choices[0].message.tool_calls) == 1


def test_streamed_call_reassembles_like_the_unary_one(client: OpenAI) -> None:
    one = {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 200}
    unary = client.chat.completions.create(model=MODEL, messages=ASK, **one)
    with client.chat.completions.stream(model=MODEL, messages=ASK, **one) as stream:
        chunks = list(stream)
        final = stream.get_final_completion()
    streamed = final.choices[0]
    assert streamed.finish_reason == "tool_calls"
    check_calls(streamed.message.tool_calls, {"get_weather"})
    expected = unary.choices[0].message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in streamed.message.tool_calls] == \
        [(c.function.name, c.function.arguments) for c in expected]  # greedy: the same call
    assert not [event.delta for event in chunks if event.type == "content.delta" and event.delta]  # no markup leaks
    assert not streamed.message.content


def test_stream_deltas_follow_openai_order(server: ServerProcess) -> None:
    """First delta of a call: index, id, type, name and arguments ''; then argument fragments only."""
    response = requests.post(server.url("/v3/chat/completions"), stream=True, timeout=60, json={
        "model": MODEL, "messages": ASK, "tools": [WEATHER], "tool_choice": "required", "stream": True,
        "parallel_tool_calls": False, "max_tokens": 200})
    assert response.status_code == 200
    deltas, finish = [], None
    for line in response.iter_lines():
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        choice = json.loads(line[6:])["choices"][0]
        finish = choice["finish_reason"] or finish
        deltas += choice["delta"].get("tool_calls", [])
    first, rest = deltas[0], deltas[1:]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert rest and all(set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} for d in rest)
    jsonschema.validate(json.loads("".join(d["function"]["arguments"] for d in rest)), WEATHER_PARAMETERS)
    assert finish == "tool_calls"


class Weather(pydantic.BaseModel):
    city: Literal["Paris", "Rome"]  # bounded: tiny-chat would fill a free string up to max_tokens
    unit: Literal["C", "F"]


def test_parse_with_pydantic_function_tool(client: OpenAI) -> None:
    tool = openai.pydantic_function_tool(Weather, name="get_weather")
    completion = client.chat.completions.parse(model=MODEL, messages=ASK, tools=[tool], tool_choice="required",
                                               parallel_tool_calls=False, max_tokens=200)
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert isinstance(call.function.parsed_arguments, Weather)


def test_tool_loop_feeds_results_back(client: OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                           max_tokens=200)
    call = first.choices[0].message.tool_calls[0]
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})},
    ]
    second = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], tool_choice="auto")
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == REPLY and second.choices[0].message.tool_calls is None


def test_auto_lets_the_model_answer_in_text(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="auto")
    message = response.choices[0].message
    assert message.content == REPLY and message.tool_calls is None
    assert response.choices[0].finish_reason == "stop"


def test_tool_choice_none_answers_in_text(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none")
    assert response.choices[0].message.content == REPLY


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                             "properties": {"a": False}}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
])
def test_bad_tool_requests_name_the_field(server: ServerProcess, body: dict, param: str) -> None:
    response = server.post("/v3/chat/completions", json={"model": MODEL, "messages": ASK, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"


def test_framework_fields_are_accepted_and_logged_once(server: ServerProcess) -> None:
    before = len(server.log_events("ignored_fields"))
    response = server.post("/v3/chat/completions", json={
        "model": MODEL, "messages": ASK, "metadata": {"app": "x"}, "service_tier": "auto", "store": False,
        "prompt_cache_key": "k", "parallel_tool_calls": True, "tool_choice": "none", "reasoning_effort": "low"})
    assert response.status_code == 200, response.text
    events = server.log_events("ignored_fields")[before:]
    assert len(events) == 1
    assert set(events[0]["fields"]) == {"metadata", "service_tier", "store", "prompt_cache_key",
                                        "parallel_tool_calls", "tool_choice", "reasoning_effort"}
    stored = server.post("/v3/chat/completions", json={"model": MODEL, "messages": ASK, "store": True})
    assert stored.status_code == 400 and stored.json()["error"]["param"] == "store"


def test_replayed_history_with_null_content(client: OpenAI) -> None:
    history = [{"role": "user", "content": "hi"},
               {"role": "assistant", "content": None,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
               {"role": "user", "content": "thanks"}]
    response = client.chat.completions.create(model=MODEL, messages=history)
    assert response.choices[0].message.content == REPLY


def test_refusal_is_null_in_messages_and_logprobs(client: OpenAI, server: ServerProcess) -> None:
    body = server.post("/v3/chat/completions", json={"model": MODEL, "messages": ASK, "logprobs": True}).json()
    choice = body["choices"][0]
    assert choice["message"]["refusal"] is None and "refusal" in choice["message"]
    assert choice["logprobs"]["refusal"] is None


def test_reasoning_parser_on_a_model_that_does_not_think(client: OpenAI, server: ServerProcess) -> None:
    """tiny-chat writes no <think> block: the answer stays content, reasoning_content is null and
    reasoning_tokens 0, unary and streamed; the fields pass the response schemas (test_openapi)."""
    response = server.post("/v3/chat/completions", json={"model": "thinker", "messages": ASK,
                                                          "reasoning_effort": "low"}).json()
    message = response["choices"][0]["message"]
    assert message["content"] == REPLY and message["reasoning_content"] is None
    assert response["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    stream = client.chat.completions.create(model="thinker", messages=ASK, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 0
