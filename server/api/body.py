"""Reading a JSON request body within bounds, before any schema or model sees it.

The JSON decoder and the schema validator recurse, tokenizers reject lone surrogates deep inside
a batch, and a 100,000-item list costs seconds in every later step: so the parsed body is walked
once, without recursion, and anything past the limits (server.settings.Limits) is a 400 that
names the field. Whole numbers sent as floats (`2.0`) become integers, so integer fields can use
them as such; NaN and Infinity are refused.
"""

from __future__ import annotations

import json
import math
from typing import Any

from server.errors import BadRequest
from server.settings import Limits


PART_CHARS = 64  # a path part longer than this is cut: an error never echoes a huge key


def field_path(path: Any) -> str | None:
    """A JSON path as OpenAI names params: messages[0].content."""
    text = ""
    for part in path:
        if isinstance(part, str) and len(part) > PART_CHARS:
            part = part[:PART_CHARS] + "..."
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _number(text: str) -> int | float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"The number {text[:40]} is out of range")
    return int(value) if value.is_integer() else value


def _constant(name: str) -> None:
    raise BadRequest(f"{name} is not a JSON number")


def parse_json(raw: bytes, limits: Limits) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"", parse_float=_number, parse_constant=_constant)
    except RecursionError:
        raise BadRequest(f"The request body is nested more than {limits.max_json_depth} levels deep") from None
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError, integers of over 4300 digits, bad UTF-8
        raise BadRequest("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    check_bounds(body, limits)
    return body


def _valid_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800), valid JSON but no character
        return False
    return True


def _check_string(text: str, path: list, limits: Limits) -> None:
    if len(text) > limits.max_string_chars:
        name = field_path(path)
        raise BadRequest(f"'{name}' has {len(text)} characters; strings have at most {limits.max_string_chars}",
                         param=name, code="string_too_long")
    if not _valid_unicode(text):
        name = field_path(path)
        raise BadRequest(f"'{name or 'a key'}' is not valid Unicode text (it holds a lone surrogate)",
                         param=name, code="invalid_unicode")


def check_bounds(body: dict, limits: Limits) -> None:
    """Depth, list lengths and strings of a parsed body, walked iteratively (no recursion)."""
    stack: list[tuple[Any, list, int]] = [(body, [], 1)]
    values = 0
    while stack:
        value, path, depth = stack.pop()
        values += 1
        if values > limits.max_total_values:
            raise BadRequest(f"The request body holds more than {limits.max_total_values} values",
                             code="too_many_values")
        if isinstance(value, str):
            _check_string(value, path, limits)
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth > limits.max_json_depth:
            name = field_path(path[:2])  # the field that holds the deep value, not a path as long as the body
            raise BadRequest(f"'{name}' is nested more than {limits.max_json_depth} levels deep", param=name,
                             code="too_deep")
        if isinstance(value, list):
            if len(value) > limits.max_list_items:
                name = field_path(path)
                raise BadRequest(f"'{name}' has {len(value)} items; lists have at most {limits.max_list_items}",
                                 param=name, code="too_many_items")
            stack.extend((item, [*path, index], depth + 1) for index, item in enumerate(value))
        else:
            for key, item in value.items():
                if len(key) > limits.max_key_chars:
                    raise BadRequest(f"'{field_path(path) or 'the body'}' has a key of {len(key)} characters; keys "
                                     f"have at most {limits.max_key_chars}", param=field_path(path), code="key_too_long")
                _check_string(key, [*path, key], limits)
                stack.append((item, [*path, key], depth + 1))
