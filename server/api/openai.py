"""OpenAI-compatible routes under /v3 (and /v3/v1): models. Generation and embeddings join later."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from server.api.paths import ModelRoutes, known_models, parse_model_path
from server.errors import ModelNotFound

OWNER = "ov-model-server"

bp = Blueprint.group(
    Blueprint("openai", url_prefix="/v3"),
    Blueprint("openai_v1", url_prefix="/v3/v1"),
)

ROUTES = {prefix: ModelRoutes(base=f"{prefix}/models/", usage=f"GET {prefix}/models/{{id}}", versions=False)
          for prefix in ("/v3", "/v3/v1")}


def _model_object(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}


def _available(request: Request) -> list[dict]:
    # Read from the views only: listing has no side effects and never fails because one model cannot serve.
    return [_model_object(view.model_id, view.created) for view in request.app.ctx.manager.describe_all()
            if view.available_versions and view.created is not None]


async def list_models(request: Request) -> HTTPResponse:
    return json({"object": "list", "data": _available(request)})


async def retrieve_model(request: Request, model_id: str) -> HTTPResponse:
    manager = request.app.ctx.manager
    routes = ROUTES["/v3/v1" if request.path.startswith("/v3/v1/") else "/v3"]
    model_id = parse_model_path(model_id, routes, known_models(manager)).model_id
    view = manager.describe(model_id)
    if not view.available_versions or view.created is None:  # only models that serve are listed
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
    return json(_model_object(model_id, view.created))


for _bp in bp.blueprints:
    _bp.add_route(list_models, "/models", methods=["GET"], name="list_models")
    _bp.add_route(retrieve_model, "/models/<model_id:path>", methods=["GET"], name="retrieve_model")
