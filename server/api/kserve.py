"""KServe v2 (Open Inference Protocol) health, metadata and repository API under /v2."""

from __future__ import annotations

from importlib.metadata import version as package_version

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, json

from server.api.paths import parse_model_path
from server.api.validation import read_body
from server.errors import ModelNotReady, NotFound
from server.repository.manager import ModelView
from server.repository.states import VersionState

bp = Blueprint("kserve", version=2)

SERVER_NAME = "ov-model-server"


@bp.get("/")
async def server_metadata(request: Request) -> HTTPResponse:
    return json({"name": SERVER_NAME, "version": package_version(SERVER_NAME), "extensions": ["model_repository"]})


@bp.get("/health/live")
async def live(request: Request) -> HTTPResponse:
    return empty(status=200)


@bp.get("/health/ready")
async def ready(request: Request) -> HTTPResponse:
    return empty(status=200 if request.app.ctx.manager.ready else 503)


def _is_ready(view: ModelView, version: int | None) -> bool:
    if version is None:
        return bool(view.available_versions)
    if not any(v.version == version for v in view.versions):
        raise NotFound(f"The model '{view.model_id}' has no version {version}", code="model_version_not_found")
    return version in view.available_versions


@bp.get("/models/<rest:path>")
async def model_metadata_or_ready(request: Request, rest: str) -> HTTPResponse:
    path = parse_model_path(rest, actions=("ready",))
    manager = request.app.ctx.manager
    view = manager.describe(path.model_id)
    if path.action == "ready":
        return empty(status=200 if _is_ready(view, path.version) else 503)
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


def _index_entries(view: ModelView, ready_only: bool) -> list[dict]:
    if not view.versions:
        return [] if ready_only else [{"name": view.model_id, "state": "UNAVAILABLE", "reason": view.error or ""}]
    entries = []
    for v in view.versions:
        if ready_only and v.state is not VersionState.AVAILABLE:
            continue
        reason = v.error_message or (v.reason if v.state is not VersionState.AVAILABLE else "")
        entries.append({"name": view.model_id, "version": str(v.version), "state": v.state.kserve, "reason": reason})
    return entries


@bp.post("/repository/index")
async def repository_index(request: Request) -> HTTPResponse:
    body = await read_body(request, "repository_index") if request.body else {}  # "ready": a boolean, as Triton's
    ready_only = body.get("ready", False)
    return json([e for view in request.app.ctx.manager.describe_all() for e in _index_entries(view, ready_only)])


@bp.post("/repository/models/<rest:path>")
async def repository_control(request: Request, rest: str) -> HTTPResponse:
    path = parse_model_path(rest, actions=("load", "unload"))
    manager = request.app.ctx.manager
    if path.action == "load":
        await manager.load_model(path.model_id)
    elif path.action == "unload":
        await manager.unload_model(path.model_id)
    else:
        raise NotFound("No such route: use /v2/repository/models/{name}/load or /unload")
    return empty(status=200)
