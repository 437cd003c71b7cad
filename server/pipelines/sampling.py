"""Sampling parameters as a plain dict, so they can cross the process boundary to the generation
worker (GenerationConfig cannot be pickled), and the one place that turns them into a GenerationConfig."""

from __future__ import annotations

import json
from typing import Any

import openvino_genai as ov_genai

_Tags = ov_genai.StructuredOutputConfig
CONSTRAINTS = ("json_schema", "structural_tag")  # the params keys that constrain the output


def structural_tag(tree: dict) -> Any:
    """GenAI's structural tag from the plain tree of server/services/tool_grammar.py."""
    if "const" in tree:
        return _Tags.ConstString(tree["const"])
    if "json_schema" in tree:
        return _Tags.JSONSchema(tree["json_schema"])
    if "concat" in tree:
        return _Tags.Concat(*[structural_tag(part) for part in tree["concat"]])
    if "union" in tree:
        return _Tags.Union(*[structural_tag(option) for option in tree["union"]])
    if "regex" in tree:
        return _Tags.Regex(tree["regex"])
    if "triggered" in tree:
        spec = tree["triggered"]
        tags = [_Tags.Tag(tag["begin"], structural_tag(tag["content"]), tag["end"]) for tag in spec["tags"]]
        return _Tags.TriggeredTags(spec["triggers"], tags, at_least_one=False,
                                   stop_after_first=spec["stop_after_first"])
    raise ValueError(f"unknown structural tag node {sorted(tree)}")


def build_config(params: dict) -> ov_genai.GenerationConfig:
    """`params` holds GenerationConfig field names, plus `json_schema` (a JSON schema's text) or
    `structural_tag` (a structural tag tree's JSON text) for structured output."""
    fields = dict(params)
    json_schema = fields.pop("json_schema", None)
    tag = fields.pop("structural_tag", None)
    if "stop_token_ids" in fields:
        fields["stop_token_ids"] = set(fields["stop_token_ids"])
    config = ov_genai.GenerationConfig()
    config.update_generation_config(**fields)
    if json_schema is not None:
        config.structured_output_config = ov_genai.StructuredOutputConfig(json_schema=json_schema)
    if tag is not None:
        config.structured_output_config = ov_genai.StructuredOutputConfig(structural_tags_config=structural_tag(json.loads(tag)))
    return config
