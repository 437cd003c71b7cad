"""Sampling parameters cross to the generation worker as a dict; build_config turns them into a GenerationConfig."""

from __future__ import annotations

import json

import pytest

ov_genai = pytest.importorskip("openvino_genai")

from server.pipelines.sampling import build_config  # noqa: E402


def test_fields_and_structured_output() -> None:
    schema = json.dumps({"type": "object"})
    config = build_config({"max_new_tokens": 7, "do_sample": True, "temperature": 0.5, "top_k": 3, "rng_seed": 11,
                           "eos_token_id": 2, "stop_token_ids": [2, 5], "logprobs": 1, "json_schema": schema})
    assert (config.max_new_tokens, config.do_sample, config.top_k, config.rng_seed, config.logprobs) == (7, True, 3, 11, 1)
    assert config.temperature == pytest.approx(0.5)
    assert config.stop_token_ids == {2, 5}
    assert config.structured_output_config.json_schema == schema
    config.validate()


def test_defaults_are_greedy_without_structured_output() -> None:
    config = build_config({"max_new_tokens": 3})
    assert not config.do_sample and config.structured_output_config is None
