"""POST /v3/embeddings (OpenAI), also under /v3/v1."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from server.api.tasks import check_task
from server.api.vectors_json import vectors_json
from server.api.deadline import deadline_for, within
from server.api.validation import read_body
from server.services import embeddings

bp = Blueprint.group(
    Blueprint("embeddings", url_prefix="/v3"),
    Blueprint("embeddings_v1", url_prefix="/v3/v1"),
)


async def create_embeddings(request: Request) -> HTTPResponse:
    body = await read_body(request, "embeddings")
    if body.get("user"):
        request.ctx.user = body["user"]
    async with request.app.ctx.manager.lease(body["model"]) as instance:
        check_task(instance, "embeddings", "/v3/embeddings")
        model = instance.model
        embedder = model.embedder
        texts = await embeddings.prepare_input(embedder, body["input"], token_ids=model.settings.token_ids)
        vectors, tokens = await within(deadline_for(request, instance), embeddings.embed(
            embedder, texts, truncate=model.settings.truncate, param="input"))
        vectors = embeddings.resize(vectors, body.get("dimensions"), embedder.dimension,
                                    normalize=model.settings.normalize, param="dimensions")
        return vectors_json(embeddings.openai_response(body["model"], vectors, tokens, body.get("encoding_format") or "float"))


for _bp in bp.blueprints:
    _bp.add_route(create_embeddings, "/embeddings", methods=["POST"], name="create_embeddings")
