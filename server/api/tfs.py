"""TensorFlow-Serving style status API under /v1 (shapes as OVMS documents them)."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from server.api.paths import parse_model_path
from server.errors import NotFound
from server.repository.manager import ModelView

bp = Blueprint("tfs", version=1)


def version_status(view: ModelView, version: int | None = None) -> dict:
    entries = [v for v in view.versions if version is None or v.version == version]
    if version is not None and not entries:
        raise NotFound(f"The model '{view.model_id}' has no version {version}", code="model_version_not_found")
    return {
        "model_version_status": [
            {
                "version": str(v.version),
                "state": v.state.value,
                "status": {"error_code": v.error_code, "error_message": v.error_message},
            }
            for v in entries
        ]
    }


@bp.get("/models/<rest:path>")
async def model_status(request: Request, rest: str) -> HTTPResponse:
    path = parse_model_path(rest)
    return json(version_status(request.app.ctx.manager.describe(path.model_id), path.version))


@bp.get("/config")
async def config_status(request: Request) -> HTTPResponse:
    return json({view.model_id: version_status(view) for view in request.app.ctx.manager.describe_all()})


@bp.post("/config/reload")
async def config_reload(request: Request) -> HTTPResponse:
    manager = request.app.ctx.manager
    await manager.rescan(wait=True)
    return json({view.model_id: version_status(view) for view in manager.describe_all()})
