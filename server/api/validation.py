"""Request bodies are validated once, at the edge, against the JSON Schemas in schemas/.

A schema's `x-unsupported` map names OpenAI fields this server knowingly does not implement:
they get a 400 naming the field instead of being silently ignored. Other unknown fields are
ignored with a log line, as OpenAI-compatible servers commonly do.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import structlog
from sanic import Request

from server.errors import BadRequest, Unsupported

log = structlog.get_logger("server.api")

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


def _param(path: Any) -> str | None:
    """JSON path as OpenAI names params: messages[0].content."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _message(error: jsonschema.ValidationError, param: str | None) -> str:
    where = f"'{param}'" if param else "The request body"
    if error.validator == "required":
        return f"{error.message} ({where})" if param else error.message
    if error.validator in ("type", "oneOf", "anyOf") and param:
        return f"Invalid type for {where}: {json.dumps(error.instance)[:100]} is not allowed"
    if error.validator == "enum":
        return f"Invalid value for {where}: {json.dumps(error.instance)[:100]}; expected one of {error.validator_value}"
    if error.validator == "const":
        return f"Invalid value for {where}: {json.dumps(error.instance)[:100]}; {error.schema.get('description', 'expected ' + json.dumps(error.validator_value))}"
    return f"Invalid value for {where}: {error.message}"


def parse_json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


def validate_body(request: Request, schema_name: str) -> dict[str, Any]:
    body = parse_json_body(request)
    validator = _validator(schema_name)
    unsupported = validator.schema.get("x-unsupported", {})
    for field, reason in unsupported.items():
        if body.get(field) not in (None, False, "", [], {}):  # an explicit "off" asks for nothing unsupported
            raise Unsupported(f"'{field}' is not supported by this server: {reason}", param=field)
    errors = sorted(validator.iter_errors(body), key=lambda e: (len(list(e.absolute_path)), list(map(str, e.absolute_path))))
    if errors:
        error = errors[0]
        while error.context:  # oneOf: report the branch that matched deepest
            depth = max(len(e.absolute_path) for e in error.context)
            error = jsonschema.exceptions.best_match(e for e in error.context if len(e.absolute_path) == depth)
        param = _param(error.absolute_path)
        raise BadRequest(_message(error, param), param=param)
    unknown = sorted(set(body) - set(validator.schema["properties"]) - set(unsupported))
    if unknown:
        log.info("unknown_fields_ignored", path=request.path, fields=unknown)
    return body
