"""Tool calling through a chat template that takes `tools`: tiny-tools answers in the Hermes format
(<tool_call>{...}</tool_call>) whenever tools are offered, and "It is sunny." after a tool result. The
parser is detected from the template; tool_choice auto reads the model's own calls."""

from __future__ import annotations

import json

import pytest
import requests
from openai import OpenAI

from tests.e2e.harness import ServerProcess, running_server

MODEL = "tiny-tools"
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
TOOLS = [TIME, WEATHER]  # as tools/make_test_models.py checks it (a 2-layer model: other lists may sway it)


@pytest.fixture(scope="module")
def server(models, tmp_path_factory: pytest.TempPathFactory):
    with running_server(tmp_path_factory.mktemp("repository"), {MODEL: models / MODEL}) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)


def test_auto_reads_the_models_own_calls(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, n=2)
    ids = set()
    for choice in response.choices:
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        (call,) = choice.message.tool_calls
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        ids.add(call.id)
    assert len(ids) == 2


def test_streamed_calls_leak_no_markup(server: ServerProcess, client: OpenAI) -> None:
    response = requests.post(server.url("/v3/chat/completions"), stream=True, timeout=60, json={
        "model": MODEL, "messages": ASK, "tools": TOOLS, "stream": True})
    contents, calls, finish = [], [], None
    for line in response.iter_lines():
        if line.startswith(b"data: {"):
            choice = json.loads(line[6:])["choices"][0]
            contents.append(choice["delta"].get("content") or "")
            calls += choice["delta"].get("tool_calls", [])
            finish = choice["finish_reason"] or finish
    assert "".join(contents) == "" and finish == "tool_calls"
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads("".join(c["function"].get("arguments", "") for c in calls)) == {"city": "Paris"}
    with client.chat.completions.stream(model=MODEL, messages=ASK, tools=TOOLS) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.parsed_arguments is None  # not a strict tool
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}


def test_two_step_loop(client: OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    history = ASK + [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    second = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS)
    assert second.choices[0].message.content == "It is sunny." and second.choices[0].message.tool_calls is None
    assert second.choices[0].finish_reason == "stop"


def test_without_tools_the_answer_is_text(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert response.choices[0].message.content == "Hello! I am a tiny test model."


def test_required_is_constrained_on_a_native_template_too(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=120,
                                              tool_choice={"type": "function", "function": {"name": "get_time"}})
    (call,) = response.choices[0].message.tool_calls
    assert call.function.name == "get_time" and json.loads(call.function.arguments) == {}


def test_auto_calls_are_finished_under_the_tools_schema(client: OpenAI) -> None:
    """tiny-tools always writes {"city": "Paris"}; once it opens <tool_call>, the grammar holds it to
    the offered schema, where Paris is not allowed."""
    only_north = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"enum": ["Oslo", "Tromso"]}}, "required": ["city"]}}}
    for stream in (False, True):
        if stream:
            with client.chat.completions.stream(model=MODEL, messages=ASK, tools=[TIME, only_north]) as events:
                message = events.get_final_completion().choices[0].message
        else:
            message = client.chat.completions.create(model=MODEL, messages=ASK, tools=[TIME, only_north]).choices[0].message
        (call,) = message.tool_calls
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments)["city"] in ("Oslo", "Tromso")
        assert not message.content


def test_required_calls_are_written_in_the_models_own_format(client: OpenAI) -> None:
    """Held to the generic {"tool_calls": [...]} format it was never trained on, tiny-tools repeated
    "Paris" until max_tokens; in its own <tool_call> framing the call comes out whole."""
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                              max_tokens=120)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
