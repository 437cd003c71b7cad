"""Model paths in URLs: one spelling per model and per version.

Model ids contain slashes (`org/name`), so the router hands the rest of the path over as one string
and suffixes such as `/versions/2`, `/ready` or `/load` are split off its end here. The id left over
must be canonical: `./x`, `a//b`, `x/` and other spellings of `x` name no model (404), ids over 256
characters are refused without being echoed (400), and versions are ASCII decimal numbers without
leading zeros (400 otherwise). When the id is unknown but a leading part of it is a known model
(`/v2/models/tiny-chat/foo`), the path is a wrong route of that model, not another model: 404
"No such route" naming the routes that exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote

from server.errors import BadRequest, ModelNotFound, NotFound
from server.repository.manager import validate_model_id

_VERSION = re.compile(r"[0-9]{1,19}")  # [0-9], not \d: full-width and other Unicode digits are no version
_MAX_VERSION = 2**63 - 1


@dataclass(frozen=True)
class ModelRoutes:
    """The routes one API family serves under a model id."""

    base: str  # "/v2/models/"
    usage: str  # the routes, as the "No such route" error lists them
    actions: tuple[str, ...] = ()  # trailing words: "ready", "metadata", "load", ...
    action_required: bool = False
    versions: bool = True  # "/versions/{v}" may precede the action
    zero_is_default: bool = False  # version 0 means "unspecified" (TF Serving, OVMS)


@dataclass(frozen=True)
class ModelPath:
    model_id: str
    version: int | None  # None: unspecified
    action: str | None  # trailing word such as "ready", "load", "unload"


def parse_version(raw: str, *, zero_is_default: bool = False) -> int | None:
    if not _VERSION.fullmatch(raw) or (raw.startswith("0") and raw != "0") or int(raw) > _MAX_VERSION:
        shown = raw if len(raw) <= 32 else raw[:32] + "..."
        raise BadRequest(f"'{shown}' is not a model version: versions are positive integers in ASCII digits "
                         "(1, 2, ...), without leading zeros", param="version")
    if raw == "0":
        if zero_is_default:
            return None
        raise BadRequest("'0' is not a model version: versions are positive integers; leave the version out of the "
                         "path to address the default (newest available) one", param="version")
    return int(raw)


def _split(rest: str, routes: ModelRoutes) -> tuple[str, str | None, str | None]:
    action = None
    for candidate in routes.actions:
        if rest.endswith("/" + candidate):
            rest, action = rest[: -len(candidate) - 1], candidate
            break
    raw_version = None
    if routes.versions:
        parts = rest.rsplit("/", 2)
        if len(parts) == 3 and parts[1] == "versions":
            rest, raw_version = parts[0], parts[2]
    return rest, raw_version, action


def _no_such_route(routes: ModelRoutes, path: str, model_id: str) -> NotFound:
    return NotFound(f"No such route: {routes.base}{path}. The routes of model '{model_id}' are: {routes.usage}",
                    code="route_not_found")


def parse_model_path(rest: str, routes: ModelRoutes, known: Callable[[str], bool] | None = None) -> ModelPath:
    """Split the path after `routes.base` into a canonical model id, a version and an action.

    `known(model_id)` tells whether a model exists; with it, a path whose id is unknown but starts
    with a known model's id answers "No such route" instead of "model does not exist"."""
    # Clients encode the slash of `org/name` ids (the openai client sends org%2Fname); the router does not decode it.
    rest = unquote(rest)
    model, raw_version, action = _split(rest, routes)
    version = parse_version(raw_version, zero_is_default=routes.zero_is_default) if raw_version is not None else None
    model_id = validate_model_id(model)  # the one spelling, or an error
    if known is not None and not known(model_id):
        parts = model_id.split("/")
        for end in range(len(parts) - 1, 0, -1):  # models do not nest: a known leading part means a wrong route
            prefix = "/".join(parts[:end])
            if known(prefix):
                raise _no_such_route(routes, rest, prefix)
    if action is None and routes.action_required:
        raise NotFound(f"No such route: {routes.base}{rest}. The routes are: {routes.usage}", code="route_not_found")
    return ModelPath(model_id, version, action)


def known_models(manager) -> Callable[[str], bool]:
    """`known` for parse_model_path: whether the manager has a model of that id (a read, no side effects)."""

    def known(model_id: str) -> bool:
        try:
            manager.describe(model_id)
        except (ModelNotFound, BadRequest):
            return False
        return True

    return known
