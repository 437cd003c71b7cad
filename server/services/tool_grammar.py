"""The grammar required and named tool calls are generated under.

A plain JSON schema lets the engine's JSON grammar put any whitespace between tokens, and a small model
then loops on newlines until max_tokens (measured with tiny-chat: `{"tool_calls": ` then 190 newlines).
So the calls are a structural tag instead: the punctuation and keys are fixed strings, written as
json.dumps writes them, and only leaf values (strings, numbers, enums...) come from JSON schemas, which
have no whitespace to loop on. Objects with listed properties are written with all of them, in order
(valid for the schema: optional ones are allowed). What cannot be spelled out that way (arrays, free-form
objects, $ref) falls back to a JSON schema for that value.

The tree is plain data (it crosses to the generation worker): {"const": str}, {"json_schema": str},
{"concat": [...]}, {"union": [...]}; server/pipelines/sampling.py builds GenAI's structural tag from it.
"""

from __future__ import annotations

import json
from typing import Any

MAX_PARALLEL_CALLS = 2  # calls per answer with tool_choice "required": each one more adds ~1.5 s of grammar compile (SmolLM2, 4 tools)


def calls_tag(tools: list[dict], *, most: int) -> dict:
    """{"tool_calls": [call, ...]} with 1..most calls, each naming one of `tools`. Nested, not a union
    of whole answers, so each further call adds one copy of the call grammar, not one per answer length."""
    call = _union([_call(tool) for tool in tools])
    rest: dict = _const("]}")
    for _ in range(min(most, MAX_PARALLEL_CALLS) - 1):
        rest = _union([_const("]}"), _concat([_const(", "), call, rest])])
    return _concat([_const('{"tool_calls": ['), call, rest])


def _call(tool: dict) -> dict:
    function = tool["function"]
    return _concat([_const('{"name": ' + json.dumps(function["name"]) + ', "arguments": '),
                    _value(function["parameters"], function["parameters"]), _const("}")])


def _value(schema: Any, root: dict) -> dict:
    if not isinstance(schema, dict) or _refers(schema):
        return _json_schema(schema, root)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key] and len(schema) == 1:
            return _union([_value(branch, root) for branch in schema[key]])
    if schema.get("type") == "object" and "enum" not in schema and "const" not in schema:
        properties = schema.get("properties") or {}
        if not properties:
            return _const("{}") if schema.get("additionalProperties") is False or not schema.get("required") \
                else _json_schema(schema, root)
        if set(schema) - {"type", "properties", "required", "additionalProperties", "description", "title"}:
            return _json_schema(schema, root)  # property counts, dependencies...: leave them to the engine
        parts: list[dict] = []
        for index, (name, sub) in enumerate(properties.items()):
            parts += [_const(("{" if index == 0 else ", ") + json.dumps(name) + ": "), _value(sub, root)]
        return _concat(parts + [_const("}")])
    return _json_schema(schema, root)


def _refers(schema: dict) -> bool:
    return "$ref" in json.dumps(schema)


def _json_schema(schema: Any, root: dict) -> dict:
    if isinstance(schema, dict) and _refers(schema) and schema is not root and "$defs" in root:
        schema = {**schema, "$defs": root["$defs"]}
    return {"json_schema": json.dumps(schema)}


def _const(text: str) -> dict:
    return {"const": text}


def _concat(parts: list[dict]) -> dict:
    merged: list[dict] = []
    for part in parts:  # adjacent fixed strings become one
        if "const" in part and merged and "const" in merged[-1]:
            merged[-1] = _const(merged[-1]["const"] + part["const"])
        else:
            merged.append(part)
    return merged[0] if len(merged) == 1 else {"concat": merged}


def _union(options: list[dict]) -> dict:
    return options[0] if len(options) == 1 else {"union": options}
