"""Responses and stream chunks against the component schemas of OpenAI's own OpenAPI document
(tests/contract/openai_components.json: a copy, with its source commit in `x-source`), so a field
cannot drift from the contract the openai SDKs are generated from."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import referencing
import requests

from tests.e2e.harness import ServerProcess



def _nullable(node):
    """The document says 3.1 but still marks some fields OpenAPI 3.0 style (`nullable: true`), which JSON
    Schema ignores: read it as "or null", as the SDK generators do."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


DOCUMENT = _nullable(json.loads((Path(__file__).parents[1] / "contract" / "openai_components.json").read_text()))
REGISTRY = referencing.Registry().with_resource(
    "urn:openai", referencing.Resource.from_contents(DOCUMENT, default_specification=referencing.jsonschema.DRAFT202012))
CHAT = "tiny-chat"
EMBED = "sentence-transformers/minilm"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]}}}


def check(component: str, instance: dict) -> None:
    validator = jsonschema.Draft202012Validator({"$ref": f"urn:openai#/components/schemas/{component}"},
                                                registry=REGISTRY)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors[:5]]


def chunks(server: ServerProcess, path: str, body: dict) -> list[dict]:
    response = requests.post(server.url(path), json={**body, "stream": True}, stream=True, timeout=60)
    assert response.status_code == 200, response.text
    events = [line[6:] for line in response.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    return [json.loads(event) for event in events[:-1]]


CHAT_BODIES = [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 1, "n": 2, "max_tokens": 4},
    {"messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER], "tool_choice": "required",
     "parallel_tool_calls": False, "max_tokens": 100},
]


@pytest.mark.parametrize("body", CHAT_BODIES)
def test_chat_completions(server: ServerProcess, body: dict) -> None:
    response = server.post("/v3/chat/completions", json={"model": CHAT, **body})
    assert response.status_code == 200, response.text
    check("CreateChatCompletionResponse", response.json())
    for chunk in chunks(server, "/v3/chat/completions", {"model": CHAT, **body,
                                                         "stream_options": {"include_usage": True}}):
        check("CreateChatCompletionStreamResponse", chunk)


@pytest.mark.parametrize("body", [{"prompt": "Once upon a time"}, {"prompt": ["a", "b"], "logprobs": 1, "max_tokens": 4},
                                  {"prompt": "hey", "echo": True, "max_tokens": 3}])
def test_completions(server: ServerProcess, body: dict) -> None:
    response = server.post("/v3/completions", json={"model": CHAT, **body})
    assert response.status_code == 200, response.text
    check("CreateCompletionResponse", response.json())
    finishes = []
    for chunk in chunks(server, "/v3/completions", {"model": CHAT, **body}):
        # The document reuses the unary schema for stream chunks, whose finish_reason is null until a
        # choice ends (as OpenAI's own streams send it): checked as the value it will take.
        choice = chunk["choices"][0]
        finishes.append(choice["finish_reason"])
        check("CreateCompletionResponse", {**chunk, "choices": [{**choice, "finish_reason": choice["finish_reason"] or "stop"}]})
    assert finishes[-1] in ("stop", "length")


def test_embeddings(server: ServerProcess) -> None:
    response = server.post("/v3/embeddings", json={"model": EMBED, "input": ["hello", "world"],
                                                   "encoding_format": "float"})
    assert response.status_code == 200, response.text
    check("CreateEmbeddingResponse", response.json())
