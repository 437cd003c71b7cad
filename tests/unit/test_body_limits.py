"""Bounds on request bodies (server/api/body.py) and the sampling/stop checks of planning."""

from __future__ import annotations

import json

import pytest

from server.api.body import parse_json
from server.errors import BadRequest
from server.settings import Limits

LIMITS = Limits()


def error_of(raw: bytes, limits: Limits = LIMITS) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_json(raw, limits)
    return info.value


def test_json_nested_ten_thousand_deep_is_a_400_not_a_recursion_error() -> None:
    raw = b'{"model": "m", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    assert "nested" in error_of(raw).message


def test_depth_limit_names_the_field() -> None:
    raw = json.dumps({"model": "m", "messages": [{"content": [[[[1]]]]}]}).encode()
    error = error_of(raw, Limits(max_json_depth=4))
    assert error.param == "messages[0]"


def test_whole_floats_become_integers_and_fractions_stay() -> None:
    body = parse_json(b'{"n": 2.0, "big": 1e20, "t": 0.5, "ids": [1.0, 2.0]}', LIMITS)
    assert body == {"n": 2, "big": 10**20, "t": 0.5, "ids": [1, 2]}
    assert type(body["n"]) is int and type(body["ids"][0]) is int


@pytest.mark.parametrize("raw", [b'{"t": NaN}', b'{"t": Infinity}', b'{"t": 1e999}'])
def test_non_finite_numbers_are_refused(raw: bytes) -> None:
    error_of(raw)


def test_lone_surrogate_is_a_400_naming_the_field() -> None:
    error = error_of(b'{"input": ["ok", "\\ud800"]}')
    assert error.param == "input[1]" and error.code == "invalid_unicode"
    assert parse_json(b'{"input": "\\ud83d\\ude00"}', LIMITS) == {"input": "\U0001F600"}  # a valid pair


def test_lists_and_strings_are_bounded() -> None:
    assert error_of(json.dumps({"input": ["a"] * 11}).encode(), Limits(max_list_items=10)).param == "input"
    assert error_of(json.dumps({"prompt": "x" * 11}).encode(), Limits(max_string_chars=10)).param == "prompt"


@pytest.mark.parametrize("raw", [b"[1]", b'"x"', b"{", b"\xff\xfe", b'{"n": ' + b"9" * 5000 + b"}"])
def test_not_an_object_or_not_json(raw: bytes) -> None:
    error_of(raw)


def test_sampling_filters_without_temperature_sample_at_openais_default() -> None:
    from types import SimpleNamespace

    from server.pipelines.settings import GenerationSettings
    from server.services.generation_plan import _sampling_params

    model = SimpleNamespace(eos_token_id=2, stop_token_ids=[2], settings=GenerationSettings())
    for field, value in (("top_p", 0.9), ("top_k", 5), ("min_p", 0.1)):
        params = _sampling_params(model, {field: value}, 8, 0, False, None)
        assert params["do_sample"] is True and params["temperature"] == 1.0 and params[field] == value
    assert "do_sample" not in _sampling_params(model, {"temperature": 0, "top_p": 0.9}, 8, 0, False, None)
    assert "do_sample" not in _sampling_params(model, {}, 8, 0, False, None)


def test_total_values_are_bounded() -> None:
    raw = json.dumps({"input": [[1] * 1000] * 11}).encode()
    assert error_of(raw, Limits(max_total_values=10_000)).code == "too_many_values"


def test_huge_keys_are_refused_and_never_echoed() -> None:
    key = "k" * 900_000
    for body in ({key: 1}, {"a": {key: "\ud800"}}, {"messages": [{key: 1}]}):
        error = error_of(json.dumps(body).encode())
        assert len(error.message) < 300 and len(error.param or "") < 300
    error = error_of(json.dumps({"a" * 200: "\ud800"}).encode())  # under the key limit: the path is cut
    assert len(error.param) < 100


def test_prompt_lookup_models_give_every_request_its_proposal_sizes() -> None:
    from types import SimpleNamespace

    from server.pipelines.settings import GenerationSettings
    from server.services.generation_plan import _sampling_params

    settings = GenerationSettings(prompt_lookup=True, num_assistant_tokens=4, max_ngram_size=2)
    model = SimpleNamespace(eos_token_id=2, stop_token_ids=[2], settings=settings)
    params = _sampling_params(model, {"temperature": 0.5}, 8, 0, False, None)
    assert (params["num_assistant_tokens"], params["max_ngram_size"]) == (4, 2)
    plain = SimpleNamespace(eos_token_id=2, stop_token_ids=[2], settings=GenerationSettings())
    assert "num_assistant_tokens" not in _sampling_params(plain, {}, 8, 0, False, None)
