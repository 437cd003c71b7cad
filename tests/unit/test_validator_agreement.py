"""The fast validator (jsonschema-rs) decides which bodies pass; jsonschema only explains rejections.
So the two must agree on every body: one that jsonschema rejects and jsonschema-rs accepted would
reach a handler unchecked. Derandomized: a disagreement found here is a bug, never luck."""

from __future__ import annotations

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings

from server.api.validation import _valid, _validator
from tests.schema_strategies import bodies

SCHEMAS = ["chat_completions", "completions", "embeddings", "cohere_embed_v1", "cohere_embed_v2", "rerank",
           "repository_index", "repository_load"]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_both_validators_give_the_same_verdict(schema: str) -> None:
    validator = _validator(schema)
    seen = {True: 0, False: 0}

    @settings(max_examples=400, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(bodies(schema))
    def agree(body: dict) -> None:
        verdict = validator.is_valid(body)
        assert _valid(schema, body) == verdict, (body, [e.message for e in validator.iter_errors(body)][:3])
        seen[verdict] += 1

    agree()
    assert seen[True] and seen[False], seen  # both kinds of body were tried


@pytest.mark.parametrize("body, valid", [
    ({"model": "m", "input": [2**70]}, True),  # beyond 64 bits: still an integer >= 0
    ({"model": "m", "input": [-2**70]}, False),
    ({"model": "m", "input": [1.0]}, True),  # JSON Schema: a whole float is an integer
    ({"model": "m", "input": [1.5]}, False),
    ({"model": "m", "input": ""}, False),
    ({"model": "m", "input": "\ud800"}, True),  # a lone surrogate is still a string
    ({"model": "m", "input": "x", "dimensions": True}, False),  # a boolean is not an integer
])
def test_edge_values_get_the_same_verdict(body: dict, valid: bool) -> None:
    assert _validator("embeddings").is_valid(body) is valid
    assert _valid("embeddings", body) is valid
