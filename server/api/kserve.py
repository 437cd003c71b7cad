"""KServe v2 (Open Inference Protocol) health, metadata and repository API under /v2, with the
model repository extension as Triton's clients (tritonclient.http) call it."""

from __future__ import annotations

import json as jsonlib
from importlib.metadata import version as package_version
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from server.api.body import check_bounds
from server.api.paths import ModelRoutes, known_models, parse_model_path
from server.api.validation import read_body
from server.errors import BadRequest, ModelNotReady, NotFound
from server.repository.manager import ModelView, VersionView
from server.repository.states import VersionState
from server.settings import Limits

bp = Blueprint("kserve", version=2)

SERVER_NAME = "ov-model-server"

MODEL_ROUTES = ModelRoutes(
    base="/v2/models/",
    usage="GET /v2/models/{id}[/versions/{v}], GET /v2/models/{id}[/versions/{v}]/ready, "
    "GET /v2/models/{id}[/versions/{v}]/config",
    actions=("ready", "config"),
)
REPOSITORY_ROUTES = ModelRoutes(
    base="/v2/repository/models/",
    usage="POST /v2/repository/models/{id}/load, POST /v2/repository/models/{id}/unload",
    actions=("load", "unload"),
    action_required=True,
)


@bp.get("/")
async def server_metadata(request: Request) -> HTTPResponse:
    return json({"name": SERVER_NAME, "version": package_version(SERVER_NAME), "extensions": ["model_repository"]})


@bp.get("/health/live")
async def live(request: Request) -> HTTPResponse:
    return empty(status=200)


@bp.get("/health/ready")
async def ready(request: Request) -> HTTPResponse:
    ready = request.app.ctx.manager.ready and not request.app.ctx.stopping  # 503 once SIGTERM arrived
    return empty(status=200 if ready else 503)


def _check_version(view: ModelView, version: int | None) -> None:
    if version is not None and not any(v.version == version for v in view.versions):
        raise NotFound(f"The model '{view.model_id}' has no version {version}", code="model_version_not_found")


def _is_ready(view: ModelView, version: int | None) -> bool:
    _check_version(view, version)
    return bool(view.available_versions) if version is None else version in view.available_versions


@bp.get("/models/<rest:path>")
async def model_routes(request: Request, rest: str) -> HTTPResponse:
    manager = request.app.ctx.manager
    path = parse_model_path(rest, MODEL_ROUTES, known_models(manager))
    view = manager.describe(path.model_id)
    if path.action == "ready":
        return empty(status=200 if _is_ready(view, path.version) else 503)
    if path.action == "config":
        _check_version(view, path.version)
        return json(manager.effective_config(path.model_id))  # what serves, every field, defaults filled in
    if not _is_ready(view, path.version):
        raise ModelNotReady(f"The model '{path.model_id}' has no available version to describe")
    instance = manager.resolve(path.model_id, path.version)
    versions = [str(path.version)] if path.version else [str(v) for v in view.available_versions]
    return json(
        {
            "name": path.model_id,
            "versions": versions,
            "platform": "openvino",
            "task": view.task,
            "inputs": [spec.to_json() for spec in instance.metadata.inputs],
            "outputs": [spec.to_json() for spec in instance.metadata.outputs],
        }
    )


def _reason(version: VersionView) -> str:
    if version.state is VersionState.AVAILABLE:  # serving: say what is pending on it (a reload built aside)
        return "; ".join(text for text in (version.pending, version.error_message) if text)
    return version.error_message or version.reason


def _index_entries(view: ModelView, ready_only: bool) -> list[dict]:
    if not view.versions:
        return [] if ready_only else [{"name": view.model_id, "state": "UNAVAILABLE", "reason": view.error or ""}]
    return [
        {"name": view.model_id, "version": str(v.version), "state": v.state.kserve, "reason": _reason(v)}
        for v in view.versions
        if not ready_only or v.state is VersionState.AVAILABLE
    ]


@bp.post("/repository/index")
async def repository_index(request: Request) -> HTTPResponse:
    body = await read_body(request, "repository_index") if request.body else {}  # "ready": a boolean, as Triton's
    ready_only = body.get("ready", False)
    return json([e for view in request.app.ctx.manager.describe_all() for e in _index_entries(view, ready_only)])


def config_override(body: dict[str, Any], limits: Limits) -> dict[str, Any] | None:
    """The config.json document of Triton's load body {"parameters": {"config": "<JSON text>"}}, or None."""
    text = body.get("parameters", {}).get("config")
    if text is None:
        return None
    param = "parameters.config"
    try:
        document = jsonlib.loads(text)
    except RecursionError:
        raise BadRequest(f"'{param}' is nested more than {limits.max_json_depth} levels deep", param=param) from None
    except jsonlib.JSONDecodeError as exc:
        raise BadRequest(f"'{param}' is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                         param=param) from None
    except ValueError:
        raise BadRequest(f"'{param}' is not valid JSON", param=param) from None
    if not isinstance(document, dict):
        raise BadRequest(f"'{param}' must hold a JSON object: a config.json document", param=param)
    check_bounds(document, limits)
    return document


@bp.post("/repository/models/<rest:path>")
async def repository_control(request: Request, rest: str) -> HTTPResponse:
    manager = request.app.ctx.manager
    path = parse_model_path(rest, REPOSITORY_ROUTES, known_models(manager))
    if path.version is not None:
        raise BadRequest(
            f"{path.action} applies to the whole model: POST /v2/repository/models/{path.model_id}/{path.action}. "
            "The versions a model serves are chosen by the model_version_policy of its config.json",
            param="version",
        )
    if path.action == "load":
        body = await read_body(request, "repository_load") if request.body else {}
        await manager.load_model(path.model_id, config=config_override(body, request.app.ctx.settings.limits))
    else:  # Triton's unload body ({"parameters": {"unload_dependents": ...}}) has nothing to act on here
        await manager.unload_model(path.model_id)
    return empty(status=200)
