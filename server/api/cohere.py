"""Cohere-compatible routes under /v3: rerank (v1, v2 and unversioned) and embed (v1, v2).

The Cohere SDK appends `v1/rerank`, `v2/rerank`, `v1/embed`, `v2/embed` to base_url; errors are
rendered as {"message": ...} for these paths (see api/errors.py)."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from server.api.tasks import check_task, model_or_default
from server.api.vectors_json import vectors_json
from server.api.deadline import deadline_for, within
from server.api.validation import read_body
from server.errors import Unsupported
from server.services import embeddings, rerank

bp = Blueprint("cohere", url_prefix="/v3")


async def _rerank(request: Request, api_version: str, route: str) -> HTTPResponse:
    body = await read_body(request, "rerank")
    manager = request.app.ctx.manager
    model_id = model_or_default(manager, body, "rerank")
    async with manager.lease(model_id) as instance:
        check_task(instance, "rerank", route)
        ranked = await within(deadline_for(request, instance), rerank.rerank(instance.model, body))
    return json(rerank.response(body, ranked, api_version))


@bp.post("/rerank")
async def rerank_unversioned(request: Request) -> HTTPResponse:
    return await _rerank(request, "1", "/v3/rerank")


@bp.post("/v1/rerank")
async def rerank_v1(request: Request) -> HTTPResponse:
    return await _rerank(request, "1", "/v3/v1/rerank")


@bp.post("/v2/rerank")
async def rerank_v2(request: Request) -> HTTPResponse:
    return await _rerank(request, "2", "/v3/v2/rerank")


async def _embed(request: Request, schema: str, route: str):
    body = await read_body(request, schema)
    if body.get("truncate") == "START":
        raise Unsupported("truncate START is not supported: inputs can only be truncated at the END",
                          param="truncate")
    manager = request.app.ctx.manager
    model_id = model_or_default(manager, body, "embeddings")
    async with manager.lease(model_id) as instance:
        check_task(instance, "embeddings", route)
        model = instance.model
        truncate = model.settings.truncate if body.get("truncate") is None else body["truncate"] == "END"
        _check_max_tokens(body, model.embedder.max_length)
        vectors, tokens = await within(deadline_for(request, instance), embeddings.embed(
            model.embedder, body["texts"], truncate=truncate, param="texts"))
        dimension = body.get("output_dimension")
        vectors = embeddings.resize(vectors, dimension, model.embedder.dimension,
                                    normalize=model.settings.normalize, param="output_dimension")
    return body, vectors, tokens


def _check_max_tokens(body: dict, max_length: int) -> None:
    """Cohere v2's per-input token cap: honoured when it is at or above the model's own limit (inputs are
    then handled as `truncate` says); a smaller cap would need truncating below the model's window."""
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and max_tokens < max_length:
        raise Unsupported(f"max_tokens below this model's input limit of {max_length} tokens is not supported",
                          param="max_tokens")


@bp.post("/v1/embed")
async def embed_v1(request: Request) -> HTTPResponse:
    body, vectors, tokens = await _embed(request, "cohere_embed_v1", "/v3/v1/embed")
    return vectors_json(embeddings.cohere_v1_response(body["texts"], vectors, tokens, by_type=bool(body.get("embedding_types"))))


@bp.post("/v2/embed")
async def embed_v2(request: Request) -> HTTPResponse:
    body, vectors, tokens = await _embed(request, "cohere_embed_v2", "/v3/v2/embed")
    return vectors_json(embeddings.cohere_v2_response(body["texts"], vectors, tokens))
