"""OpenAI-compatible routes under /v3 (and /v3/v1): models. Generation and embeddings join later."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from server.errors import ModelNotFound
from server.api.paths import parse_model_path

OWNER = "ov-model-server"

bp = Blueprint.group(
    Blueprint("openai", url_prefix="/v3"),
    Blueprint("openai_v1", url_prefix="/v3/v1"),
)


def _model_object(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}


def _available(request: Request) -> list[dict]:
    manager = request.app.ctx.manager
    objects = []
    for view in manager.describe_all():
        if view.available_versions:
            objects.append(_model_object(view.model_id, manager.resolve(view.model_id).created))
    return objects


async def list_models(request: Request) -> HTTPResponse:
    return json({"object": "list", "data": _available(request)})


async def retrieve_model(request: Request, model_id: str) -> HTTPResponse:
    model_id = parse_model_path(model_id).model_id
    for obj in _available(request):
        if obj["id"] == model_id:
            return json(obj)
    raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")


for _bp in bp.blueprints:
    _bp.add_route(list_models, "/models", methods=["GET"], name="list_models")
    _bp.add_route(retrieve_model, "/models/<model_id:path>", methods=["GET"], name="retrieve_model")
