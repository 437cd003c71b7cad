"""Request-body validation: OpenAI-style param names and messages, unsupported fields, unknown fields."""

import json
from types import SimpleNamespace

import pytest

from server.api.validation import validate_body
from server.errors import BadRequest, Unsupported


def request(body) -> SimpleNamespace:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return SimpleNamespace(body=raw, path="/v3/chat/completions")


def error_of(body, schema: str = "chat_completions") -> BadRequest:
    with pytest.raises(BadRequest) as info:
        validate_body(request(body), schema)
    return info.value


HI = [{"role": "user", "content": "hi"}]


def test_valid_body_passes_and_unknown_fields_are_ignored() -> None:
    body = {"model": "m", "messages": HI, "some_future_field": 1}
    assert validate_body(request(body), "chat_completions") == body


def test_param_names_follow_openai_paths() -> None:
    assert error_of({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).param == \
        "messages[0].content[0].type"
    assert error_of({"model": "m", "messages": HI, "temperature": 9}).param == "temperature"
    assert error_of({"model": "m"}).param is None
    assert "'messages' is a required property" in error_of({"model": "m"}).message


def test_unsupported_fields_are_named() -> None:
    error = error_of({"model": "m", "messages": HI, "logit_bias": {"42": 5}})
    assert isinstance(error, Unsupported)
    assert error.param == "logit_bias"
    assert error_of({"model": "m", "messages": HI, "store": True}).param == "store"
    for off in (None, False, [], {}):  # an explicit "off" is not a request for the feature
        assert validate_body(request({"model": "m", "messages": HI, "logit_bias": off, "store": off}),
                             "chat_completions")


def test_body_must_be_a_json_object() -> None:
    assert error_of(b"{nope").message == "The request body is not valid JSON"
    assert error_of([1, 2]).message == "The request body must be a JSON object"


def test_every_request_schema_loads_and_rejects_empty_bodies() -> None:
    for schema in ("chat_completions", "completions", "embeddings", "cohere_embed_v1", "cohere_embed_v2", "rerank"):
        assert isinstance(error_of({}, schema), BadRequest)
