"""Parsing of model paths in URLs: model ids contain slashes (`org/name`), so suffixes such as
`/versions/2` or `/ready` are split off the end rather than matched by the router."""

from __future__ import annotations

import re
from urllib.parse import unquote
from dataclasses import dataclass

from server.errors import BadRequest
from server.repository.manager import validate_model_id

_VERSION = re.compile(r"^(?P<model>.+)/versions/(?P<version>[^/]+)$")


@dataclass(frozen=True)
class ModelPath:
    model_id: str
    version: int | None
    action: str | None  # trailing word such as "ready", "load", "unload"


def parse_model_path(rest: str, actions: tuple[str, ...] = ()) -> ModelPath:
    # Clients encode the slash of `org/name` ids (the openai client sends org%2Fname); the router does not decode it.
    rest = unquote(rest).strip("/")
    action = None
    for candidate in actions:
        if rest.endswith("/" + candidate):
            rest, action = rest[: -len(candidate) - 1], candidate
            break
    version = None
    match = _VERSION.match(rest)
    if match:
        rest, raw = match["model"], match["version"]
        if not raw.isdigit() or raw.startswith("0"):
            raise BadRequest(f"'{raw}' is not a model version: versions are positive integers", param="version")
        version = int(raw)
    return ModelPath(validate_model_id(rest), version, action)
