"""Checks of a structured-output JSON schema, made before its request reaches a serving pipeline.

OpenVINO GenAI compiles the schema into a grammar (xgrammar) inside the engine's step(): a schema
it cannot compile fails that step for every request in the batch and leaves the pipeline unusable.
GenerationConfig.validate() does not look at the schema. So the server checks what was measured to
break the compiler (openvino-genai 2026.4.1; tests/unit/test_structured_output.py): the JSON Schema
meta-schema, `false` sub-schemas, empty enums, unsatisfiable bounds, integers past int64 (bounds and
counts) or past a double (anywhere), unresolvable `$ref`s and the regex constructs xgrammar's converter
rejects; plus size and nesting limits.
"""

from __future__ import annotations

import json
import re
import warnings

with warnings.catch_warnings():  # the parser re uses itself: the one way to see a pattern's structure
    warnings.simplefilter("ignore", DeprecationWarning)
    import sre_parse
from typing import Any, Iterator

import jsonschema

from server.errors import BadRequest
from server.settings import Limits

PARAM = "response_format.json_schema"

# Sub-schema positions: keyword -> how its value holds schemas.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_VALUES = ("not", "if", "then", "else", "contains", "propertyNames")
# Where `false` is common and compiles ("additionalProperties": false, a closed tuple's "items": false).
_MAY_BE_FALSE = ("items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "additionalItems")
_BOUNDS = (("minimum", "maximum"), ("minLength", "maxLength"), ("minItems", "maxItems"),
           ("minProperties", "maxProperties"))
# The compiler holds counts and integer bounds as int64, and every number as a double: past either the
# step fails (RuntimeError, or OverflowError for integers beyond a double).
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_NUMBER_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_INT64 = range(-(2**63), 2**63)
# What xgrammar's regex converter was measured to reject, by parsed construct (not by text: `(?:...)`
# and an escaped `\\(` compile fine).
_LOOKAROUND = {sre_parse.ASSERT, sre_parse.ASSERT_NOT}
_BACKREFERENCE = {sre_parse.GROUPREF, sre_parse.GROUPREF_EXISTS}


def _bad(message: str) -> BadRequest:
    return BadRequest(f"response_format.json_schema.schema: {message}", param=PARAM, code="invalid_json_schema")


def _children(schema: dict) -> Iterator[tuple[str, Any]]:
    """(path, sub-schema) pairs; sub-schemas that may be `false` are given as True (nothing to check)."""
    for key in _SCHEMA_MAPS:
        value = schema.get(key)
        if isinstance(value, dict):
            yield from ((f"{key}/{name}", sub) for name, sub in value.items())
    for key in _SCHEMA_LISTS:
        value = schema.get(key)
        if isinstance(value, list):
            yield from ((f"{key}/{i}", sub) for i, sub in enumerate(value))
    for key in _SCHEMA_VALUES:
        if key in schema:
            yield key, schema[key]
    for key in _MAY_BE_FALSE:
        if key in schema:
            yield key, schema[key] if schema[key] is not False else True


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer_schema(schema: dict) -> bool:
    kind = schema.get("type")
    return kind == "integer" or (isinstance(kind, list) and "integer" in kind)


def _check_int64(schema: dict, where: str) -> None:
    keys = _COUNTS + (_NUMBER_BOUNDS if _is_integer_schema(schema) else ())
    for key in keys:
        value = schema.get(key)
        if _number(value) and isinstance(value, int) and value not in _INT64:
            raise _bad(f"{where}: {key} is outside the 64-bit integer range that structured output supports")


def _check_doubles(schema: dict) -> None:
    """No integer anywhere in the schema (bounds, const, enum, default, ...) may be beyond a double."""
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, int) and not isinstance(node, bool):
            try:
                float(node)
            except OverflowError:
                raise _bad(f"holds an integer of {len(str(abs(node)))} digits, beyond what structured output "
                           "can represent") from None


def _check_bounds(schema: dict, where: str) -> None:
    _check_int64(schema, where)
    for low_key, high_key in _BOUNDS:
        low, high = schema.get(low_key), schema.get(high_key)
        if _number(low) and _number(high) and low > high:
            raise _bad(f"{where}: {low_key} {low} is above {high_key} {high}")
    if _is_integer_schema(schema):
        _check_integer_range(schema, where)
        return
    low = schema.get("exclusiveMinimum", schema.get("minimum"))
    high = schema.get("exclusiveMaximum", schema.get("maximum"))
    if _number(low) and _number(high) and low >= high and ("exclusiveMinimum" in schema or "exclusiveMaximum" in schema):
        raise _bad(f"{where}: no number lies between the bounds")


def _check_integer_range(schema: dict, where: str) -> None:
    """The compiler wants an integer schema's bounds whole, and a range that holds an integer."""
    bounds = {key: schema[key] for key in _NUMBER_BOUNDS if _number(schema.get(key))}
    for key, value in bounds.items():
        if isinstance(value, float):  # the body parser made whole floats ints already
            raise _bad(f"{where}: {key} {value} of an integer schema is not a whole number")
    lows = [bounds[k] + (k == "exclusiveMinimum") for k in ("minimum", "exclusiveMinimum") if k in bounds]
    highs = [bounds[k] - (k == "exclusiveMaximum") for k in ("maximum", "exclusiveMaximum") if k in bounds]
    if lows and highs and max(lows) > min(highs):
        raise _bad(f"{where}: no integer lies between the bounds")


def _unsupported_construct(parsed: sre_parse.SubPattern) -> str | None:
    if parsed.state.groupdict:
        return "named groups"
    if parsed.state.flags & ~(re.UNICODE | re.ASCII):
        return "inline flags such as (?i)"
    stack = [parsed]
    while stack:
        for op, value in stack.pop():
            if op in _LOOKAROUND:
                return "lookaround"
            if op in _BACKREFERENCE:
                return "backreferences"
            if op is sre_parse.SUBPATTERN and (value[1] or value[2]):
                return "inline flags such as (?i:...)"
            for item in value if isinstance(value, (tuple, list)) else ():
                if isinstance(item, sre_parse.SubPattern):
                    stack.append(item)
                elif isinstance(item, (tuple, list)):  # branches hold lists of sub-patterns
                    stack.extend(sub for sub in item if isinstance(sub, sre_parse.SubPattern))
    return None


def _check_pattern(pattern: Any, where: str) -> None:
    if not isinstance(pattern, str):
        return
    try:
        construct = _unsupported_construct(sre_parse.parse(pattern))
    except (re.error, RecursionError, OverflowError):
        raise _bad(f"{where}: pattern is not a valid regular expression (or uses \\p classes)") from None
    if construct:
        raise _bad(f"{where}: pattern uses {construct}, which structured output does not support")


def _resolves(document: dict, ref: str) -> bool:
    if ref == "#":
        return True
    if not ref.startswith("#/"):
        return False
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _check_depth(schema: dict, limit: int) -> None:
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > limit:
                raise _bad(f"nests sub-schemas more than {limit} levels deep")
            stack.extend((sub, depth + 1) for _, sub in _children(node))


def check_json_schema(schema: Any, limits: Limits) -> str:
    """The schema serialized for the engine, or a 400 naming response_format.json_schema."""
    if not isinstance(schema, dict):
        raise _bad("must be a JSON object")
    text = json.dumps(schema)
    if len(text.encode()) > limits.max_schema_bytes:
        raise _bad(f"is {len(text.encode())} bytes; at most {limits.max_schema_bytes} are allowed")
    _check_depth(schema, limits.max_schema_depth)  # first: the meta-schema check recurses
    _check_doubles(schema)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise _bad(f"is not a valid JSON Schema: {str(exc.message)[:200]}") from None
    except RecursionError:
        raise _bad("is nested too deeply to check") from None
    stack: list[tuple[Any, str, int]] = [(schema, "#", 1)]
    while stack:
        node, where, depth = stack.pop()
        if node is False:
            raise _bad(f"{where}: a false schema (matches nothing) is not supported")
        if not isinstance(node, dict):
            continue
        if node.get("enum") == []:
            raise _bad(f"{where}: an empty enum matches nothing")
        _check_bounds(node, where)
        _check_pattern(node.get("pattern"), where)
        ref = node.get("$ref")
        if isinstance(ref, str) and not _resolves(schema, ref):
            raise _bad(f"{where}: $ref {ref[:100]} does not point into this schema")
        for key in ("patternProperties",):
            for pattern in (node.get(key) or {}):
                _check_pattern(pattern, f"{where}/{key}")
        stack.extend((sub, f"{where}/{path}", depth + 1) for path, sub in _children(node))
    return text
