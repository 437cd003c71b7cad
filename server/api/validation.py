"""Request bodies are validated once, at the edge, against the JSON Schemas in schemas/.

A body is first parsed within bounds (server/api/body.py), then checked against its schema:
jsonschema-rs decides (0.3 us for an embeddings body where jsonschema took 57 us, 0.4 against 109
for a chat body: a sixth of the event loop's time per embeddings request), and only a body it rejects
goes through jsonschema, whose errors name the field and the reason. A
schema's `x-unsupported` map names OpenAI fields this server knowingly does not implement: they
get a 400 naming the field instead of being silently ignored. Other unknown fields are ignored with
a log line, as OpenAI-compatible servers commonly do. Large bodies are parsed and validated on a
worker thread, so the event loop keeps serving other clients meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import jsonschema
import jsonschema_rs
import structlog
from sanic import Request

from server.api.body import field_path, parse_json
from server.errors import BadRequest, Unsupported
from server.settings import Limits

log = structlog.get_logger("server.api")

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
OFF_LOOP_BYTES = 64 * 1024  # smaller bodies validate in well under a millisecond: not worth a thread hop
OFF_PROCESS_BYTES = 1024 * 1024  # larger ones are parsed in the helper process (server/api/parse_pool.py)


@lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


@lru_cache(maxsize=None)
def _accepts(name: str) -> Callable[[Any], bool]:  # the schema compiled by jsonschema-rs: a verdict, no reasons
    return jsonschema_rs.validator_for(_validator(name).schema).is_valid


def _valid(schema_name: str, body: Any) -> bool:
    try:
        return _accepts(schema_name)(body)
    except Exception:  # a value it cannot convert (an integer beyond 64 bits): let jsonschema judge
        return False


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
    if error.validator in ("maxLength", "maxItems"):
        return f"Invalid value for {where}: at most {error.validator_value} {'characters' if error.validator == 'maxLength' else 'items'} allowed"
    return f"Invalid value for {where}: {str(error.message)[:200]}"


def validate_body(request: Request, schema_name: str, limits: Limits | None = None) -> dict[str, Any]:
    return validate_parsed(parse_json(request.body, limits or Limits()), request.path, schema_name)


def validate_parsed(body: dict[str, Any], path: str, schema_name: str) -> dict[str, Any]:
    validator = _validator(schema_name)
    unsupported = validator.schema.get("x-unsupported", {})
    for field, reason in unsupported.items():
        if body.get(field) not in (None, False, "", [], {}):  # an explicit "off" asks for nothing unsupported
            raise Unsupported(f"'{field}' is not supported by this server: {reason}", param=field)
    errors = [] if _valid(schema_name, body) else sorted(
        validator.iter_errors(body), key=lambda e: (len(list(e.absolute_path)), list(map(str, e.absolute_path))))
    if errors:
        error = errors[0]
        while error.context:  # oneOf: report the branch that matched deepest
            depth = max(len(e.absolute_path) for e in error.context)
            error = jsonschema.exceptions.best_match(e for e in error.context if len(e.absolute_path) == depth)
        param = field_path(error.absolute_path)
        raise BadRequest(_message(error, param), param=param)
    unknown = sorted(set(body) - set(validator.schema["properties"]) - set(unsupported))
    if unknown:
        log.info("unknown_fields_ignored", path=path, fields=[field[:64] for field in unknown[:20]])
    return body


async def read_body(request: Request, schema_name: str) -> dict[str, Any]:
    """The validated body of a request; large bodies are handled off the event loop."""
    limits = request.app.ctx.settings.limits
    size = len(request.body or b"")
    if size < OFF_LOOP_BYTES:
        return validate_body(request, schema_name, limits)
    if size < OFF_PROCESS_BYTES:
        return await asyncio.to_thread(validate_body, request, schema_name, limits)
    body = await request.app.ctx.parse_pool.parse(request.body, limits)
    return await asyncio.to_thread(validate_parsed, body, request.path, schema_name)
