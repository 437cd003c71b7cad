"""The structured-output schema check against the real grammar compiler: every schema the check lets
through compiles in a real ContinuousBatchingPipeline, and every one it refuses was measured to break
the engine's step() (openvino-genai 2026.4.1). A fresh pipeline per case: one failed step ruins it."""

from __future__ import annotations

import json
from pathlib import Path

import openvino_genai as ov_genai
import pytest

from server.errors import BadRequest
from server.services.structured_output import check_json_schema
from server.settings import Limits


def nested(levels: int) -> dict:
    schema: dict = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


ACCEPTED = {
    "object": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
               "additionalProperties": False},
    "not": {"not": {"type": "string"}},
    "if_then": {"if": {"type": "string"}, "then": {"minLength": 2}},
    "pattern_properties": {"type": "object", "patternProperties": {"^a": {"type": "integer"}}},
    "unique_items": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    "format": {"type": "string", "format": "email"},
    "mixed_enum": {"enum": [1, "a", None, {"x": 1}]},
    "type_list": {"type": ["string", "null"]},
    "empty": {},
    "recursive_ref": {"$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}}},
                      "$ref": "#/$defs/n"},
    "closed_tuple": {"type": "array", "prefixItems": [{"type": "integer"}], "items": False},
    "simple_pattern": {"type": "string", "pattern": "^[a-z]{2,4}$"},
    "nested_15": nested(14),
    "non_capturing_group": {"type": "string", "pattern": "^(?:ab)+$"},
    "escaped_parentheses": {"type": "string", "pattern": "^\\(?\\d{3}\\)?-\\d{4}$"},
    "large_repetition": {"type": "string", "pattern": "^[a-z]{1,100000}$"},
    "huge_max_length": {"type": "string", "maxLength": 1000000000},
    "many_min_items": {"type": "array", "items": {"type": "integer"}, "minItems": 100000},
    "int64_bounds": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
    "exclusive_integer_bounds": {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 3},
    "number_with_fractional_bounds": {"type": "number", "minimum": 1.5, "maximum": 1.7},
    "int64_max_length": {"type": "string", "maxLength": 2**63 - 1},
    "number_bound_past_int64": {"type": "number", "minimum": 2**70},
    "huge_float_bounds": {"type": "number", "minimum": 1e300, "maximum": 1.5e300},
    "const_past_int64": {"const": 10**30},
}
REFUSED = {
    "nonsense_type": {"type": "nonsense"},
    "bad_regex": {"type": "string", "pattern": "(unclosed"},
    "lookahead": {"type": "string", "pattern": "^(?=a)a+$"},
    "backreference": {"type": "string", "pattern": "^(a)\\1$"},
    "unicode_class": {"type": "string", "pattern": "^\\p{L}+$"},
    "named_group": {"type": "string", "pattern": "^(?P<x>a)$"},
    "inline_flags": {"type": "string", "pattern": "(?i)abc"},
    "missing_ref": {"$ref": "#/$defs/nope"},
    "min_above_max": {"type": "integer", "minimum": 5, "maximum": 1},
    "no_integer_between": {"type": "integer", "minimum": 1.5, "maximum": 1.7},
    "fractional_integer_bound": {"type": "integer", "minimum": 1.5, "maximum": 2},
    "exclusive_integer_bounds_empty": {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2},
    "inclusive_and_exclusive_minimum_empty": {"type": "integer", "minimum": 1, "exclusiveMinimum": 5, "maximum": 5},
    "exclusive_empty": {"type": "integer", "exclusiveMinimum": 5, "maximum": 5},
    "min_items_above_max": {"type": "array", "minItems": 3, "maxItems": 1},
    "min_length_above_max": {"type": "string", "minLength": 5, "maxLength": 2},
    "min_properties_above_max": {"type": "object", "minProperties": 3, "maxProperties": 1},
    "false_property": {"type": "object", "properties": {"a": False}},
    "empty_enum": {"enum": []},
    # integers the engine cannot hold: beyond int64 in an integer bound or a count, beyond a double anywhere
    "integer_bound_past_int64": {"type": "integer", "maximum": 2**63},
    "integer_bound_below_int64": {"type": "integer", "minimum": -(2**63) - 1},
    "exclusive_bound_past_int64": {"type": "integer", "exclusiveMinimum": 2**63},
    "huge_integer_bounds": {"type": "integer", "minimum": 10**400, "maximum": 10**401},
    "max_length_past_int64": {"type": "string", "maxLength": 2**64},
    "min_items_past_int64": {"type": "array", "minItems": 2**63},
    "min_properties_past_int64": {"type": "object", "minProperties": 2**64},
    "number_bound_past_double": {"type": "number", "exclusiveMaximum": 10**400},
    "const_past_double": {"const": 10**400},
    "enum_past_double": {"enum": [10**400]},
    "default_past_double": {"type": "integer", "default": 10**400},
}


def compiles(model_path: Path, schema: dict) -> bool:
    scheduler = ov_genai.SchedulerConfig()
    scheduler.max_num_seqs, scheduler.max_num_batched_tokens, scheduler.cache_size = 2, 256, 0
    pipeline = ov_genai.ContinuousBatchingPipeline(str(model_path), scheduler, "CPU")
    config = ov_genai.GenerationConfig()
    config.max_new_tokens = 2
    config.structured_output_config = ov_genai.StructuredOutputConfig(json_schema=json.dumps(schema))
    try:
        handle = pipeline.add_request(0, "hi", config)  # noqa: F841 - dropping the handle drops the request
        while pipeline.has_non_finished_requests():
            pipeline.step()
    except (RuntimeError, OverflowError):  # integers beyond a double fail the step with OverflowError
        return False
    return True


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_schemas_compile(models: Path, name: str) -> None:
    check_json_schema(ACCEPTED[name], Limits())
    assert compiles(models / "tiny-chat" / "1", ACCEPTED[name])


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_schemas_break_the_engine(models: Path, name: str) -> None:
    with pytest.raises(BadRequest) as info:
        check_json_schema(REFUSED[name], Limits())
    assert info.value.param == "response_format.json_schema"
    assert not compiles(models / "tiny-chat" / "1", REFUSED[name])


def test_size_and_depth_limits() -> None:
    with pytest.raises(BadRequest, match="levels deep"):
        check_json_schema(nested(300), Limits())
    with pytest.raises(BadRequest, match="bytes"):
        check_json_schema({"enum": ["x" * 100] * 400}, Limits())
