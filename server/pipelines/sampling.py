"""Sampling parameters as a plain dict, so they can cross the process boundary to the generation
worker (GenerationConfig cannot be pickled), and the one place that turns them into a GenerationConfig."""

from __future__ import annotations

import openvino_genai as ov_genai


def build_config(params: dict) -> ov_genai.GenerationConfig:
    """`params` holds GenerationConfig field names, plus `json_schema` for structured output."""
    fields = dict(params)
    json_schema = fields.pop("json_schema", None)
    if "stop_token_ids" in fields:
        fields["stop_token_ids"] = set(fields["stop_token_ids"])
    config = ov_genai.GenerationConfig()
    config.update_generation_config(**fields)
    if json_schema is not None:
        config.structured_output_config = ov_genai.StructuredOutputConfig(json_schema=json_schema)
    return config
