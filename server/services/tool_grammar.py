"""The grammar required and named tool calls are generated under.

A plain JSON schema lets the engine's JSON grammar put any whitespace between tokens, and a small model
then loops on newlines until max_tokens (measured with tiny-chat: `{"tool_calls": ` then 190 newlines).
So the calls are a structural tag instead: the punctuation and keys are fixed strings, written as
json.dumps writes them, and only leaf values (strings, numbers, enums...) come from JSON schemas, which
have no whitespace to loop on. Objects with listed properties are written with all of them, in order
(valid for the schema: optional ones are allowed). What cannot be spelled out that way (arrays, free-form
objects, $ref) falls back to a JSON schema for that value.

The tree is plain data (it crosses to the generation worker): {"const": str}, {"regex": str},
{"json_schema": str}, {"concat": [...]}, {"union": [...]}, and at the top for tool_choice "auto"
{"triggered": {"triggers", "tags": [{"begin", "content", "end"}], "stop_after_first"}};
server/pipelines/sampling.py builds GenAI's structural tag from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_PARALLEL_CALLS = 2  # calls per list (required, and each call list auto begins): each one more adds ~1.5 s of grammar compile (SmolLM2, 4 tools)


@dataclass(frozen=True)
class _Frame:
    """How a format writes a list of calls: head call (separator call)* closing. The strings are
    non-empty (the engine refuses empty ones)."""
    head: str
    separator: str
    closing: str
    padding: str | None = None  # a regex allowed on both sides of each call object


# Formats generated in the model's own framing: hermes for required / named calls and the guard of
# "auto"; json (the generic format) for everything else. mistral's [TOOL_CALLS] is a special token the
# grammar cannot be relied on to see, llama3_json and pythonic calls begin like plain text: "auto" reads
# those unconstrained, and required / named calls use the generic format.
_FRAMES = {
    "json": _Frame('{"tool_calls": [', ", ", "]}"),
    "hermes": _Frame("<tool_call>", "</tool_call>\n<tool_call>", "</tool_call>", padding=r"\n?"),  # Qwen: newlines inside
}
FRAMED_FORMATS = tuple(_FRAMES)


def calls_tag(tools: list[dict], *, most: int, parser: str = "json") -> dict:
    """1..most calls in the framing of `parser` (a FRAMED_FORMATS name), each naming one of `tools`;
    json: {"tool_calls": [call, ...]}."""
    frame = _FRAMES[parser]
    return _concat([_const(frame.head), _call_list(tools, most, frame)])


def triggered_calls(tools: list[dict], parser: str, *, parallel: bool) -> dict | None:
    """For tool_choice "auto": free text until the model writes the head of a call list in its format,
    then that list under calls_tag's grammar; None for formats not in FRAMED_FORMATS."""
    frame = _FRAMES.get(parser)
    if frame is None:
        return None
    tag = {"begin": frame.head, "content": _call_list(tools, MAX_PARALLEL_CALLS if parallel else 1, frame), "end": ""}
    return {"triggered": {"triggers": [frame.head], "tags": [tag], "stop_after_first": not parallel}}


def _call_list(tools: list[dict], most: int, frame: _Frame) -> dict:
    """What follows the head: 1..most calls. Nested, not a union of whole lists, so each further call
    adds one copy of the call grammar, not one per list length."""
    call = _union([_call(tool) for tool in tools])
    if frame.padding:
        call = _concat([_regex(frame.padding), call, _regex(frame.padding)])
    rest: dict = _const(frame.closing)
    for _ in range(min(most, MAX_PARALLEL_CALLS) - 1):
        rest = _union([_const(frame.closing), _concat([_const(frame.separator), call, rest])])
    return _concat([call, rest])


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


def _regex(pattern: str) -> dict:
    return {"regex": pattern}


def _concat(parts: list[dict]) -> dict:
    merged: list[dict] = []
    flat = [inner for part in parts for inner in (part["concat"] if "concat" in part else [part])]
    for part in flat:  # nested sequences become one, adjacent fixed strings one string
        if "const" in part and merged and "const" in merged[-1]:
            merged[-1] = _const(merged[-1]["const"] + part["const"])
        else:
            merged.append(part)
    return merged[0] if len(merged) == 1 else {"concat": merged}


def _union(options: list[dict]) -> dict:
    return options[0] if len(options) == 1 else {"union": options}
