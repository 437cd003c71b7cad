"""GET /openapi.json: an OpenAPI 3.1 document of every route, built at start-up from schemas/.

The request schemas are the very files server/api/validation.py validates bodies with, loaded into
`components.schemas` as they are, so the documentation and the behaviour cannot drift apart; the
response schemas live beside them in schemas/responses/ and tests/e2e/test_openapi.py checks real
responses against them. Every operation lists each status it can answer with the error envelope of
its family: OpenAI {"error": {"message", "type", "param", "code"}}, Cohere {"message"}, /v1, /v2 and
the operations routes {"error": "..."} (server/api/errors.py), including what server/api/security.py
answers before any handler (401, 403, 415). Streams are text/event-stream, each event's `data`
described by its chunk schema. tests/api/test_openapi_document.py fails when a Sanic route has no
operation here.

Model ids contain slashes (`org/name`) while an OpenAPI path parameter is one segment: `{model}` is
documented as one parameter whose slashes are sent percent-encoded (`org%2Fname`, as the openai client
does; server/api/paths.py decodes them), which is also how generated clients and schemathesis send it.
"""

from __future__ import annotations

import copy
import json
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, raw

from server.api.kserve import SERVER_NAME
from server.api.validation import SCHEMAS

RESPONSES = SCHEMAS / "responses"
OPENAPI_VERSION = "3.1.0"

bp = Blueprint("openapi")

_ACRONYMS = {"openai": "OpenAI", "tfs": "TFS", "kserve": "KServe"}


# ----------------------------------------------------------------------------- components


def component_name(path: Path) -> str:
    """schemas/chat_completions.schema.json -> ChatCompletionsRequest; responses/tfs_model_status -> TFSModelStatus."""
    stem = path.name.removesuffix(".schema.json")
    name = "".join(_ACRONYMS.get(word, word.capitalize()) for word in stem.split("_"))
    if path.parent == SCHEMAS and stem != "model_config":  # every other top-level schema is a request body
        name += "Request"
    return name


def _rewrite_refs(node: Any, own: str, names: dict[str, str]) -> Any:
    """Point a schema file's $refs into components: `#/$defs/X` and `file.schema.json#/$defs/X` (hoisted
    $defs) -> #/components/schemas/X, `file.schema.json` -> that file's component."""
    if isinstance(node, list):
        return [_rewrite_refs(item, own, names) for item in node]
    if not isinstance(node, dict):
        return node
    result = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            target, _, fragment = value.partition("#")
            if fragment.startswith("/$defs/"):
                value = "#/components/schemas/" + fragment.removeprefix("/$defs/")
            else:
                value = f"#/components/schemas/{names[target] if target else own}{fragment}"
        result[key] = _rewrite_refs(value, own, names)
    return result


def load_components() -> dict[str, dict]:
    """Every schema of schemas/ and schemas/responses/, keyed by component name, their $defs hoisted."""
    files = sorted(SCHEMAS.glob("*.schema.json")) + sorted(RESPONSES.glob("*.schema.json"))
    names = {path.name: component_name(path) for path in files}
    components: dict[str, dict] = {}
    for path in files:
        schema = json.loads(path.read_text())
        own = names[path.name]
        for key in ("$schema", "$id"):  # the document's dialect applies; ids would re-base the refs
            schema.pop(key, None)
        for name, definition in schema.pop("$defs", {}).items():
            assert name not in components, f"$defs name {name} of {path.name} is defined twice"
            components[name] = _rewrite_refs(definition, own, names)
        assert own not in components, f"component {own} is defined twice"
        components[own] = _rewrite_refs(schema, own, names)
    return components


# ----------------------------------------------------------------------------- responses

ENVELOPES = {"openai": "OpenAIError", "cohere": "CohereError", "status": "StatusError"}

ERRORS = {
    400: "The request is wrong: body schema, limits, context length, a field this server does not implement, "
         "a model of another task, a malformed id or version (`param` names the field on OpenAI routes).",
    401: "An API key is required (the server runs with --api-key-file or API_KEY): send "
         "`Authorization: Bearer <key>`.",
    403: "The request carries an Origin header that --allowed-origins does not list.",
    404: "Unknown model, model version or route.",
    409: "Another load or unload of this model is under way (`model_busy`), or the model changed meanwhile.",
    413: "The body is over --max-body-bytes, or one request holds more work than the model's whole queue.",
    415: "A POST body must be JSON: send `Content-Type: application/json`.",
    429: "The model's waiting work is full (`queue_full`): retry after `Retry-After` seconds.",
    500: "The server or the engine failed on an accepted request; the error was logged with the request id.",
    503: "The model is loading or has no available version (`model_not_ready`): retry after `Retry-After` seconds.",
    504: "The request did not finish within its deadline (--request-timeout, request_timeout_s); its work was cancelled.",
}
HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}},
}
# server/api/security.py: with API keys set, /v3 and the mutating /v1 and /v2 routes need one (and
# /metrics with --protect-metrics); an Origin outside --allowed-origins is refused on every route.
KEYED = ("/v3/", "/metrics")
KEYED_POST = ("/v1/config/reload", "/v2/repository/models/")

MODEL_ERRORS = (400, 404, 413, 429, 500, 503, 504)  # what a request that runs on a model can meet


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _error(family: str, status: int) -> dict:
    response = _json(ENVELOPES[family], ERRORS[status])
    if status in HEADERS:
        response["headers"] = copy.deepcopy(HEADERS[status])
    return response


def _add_guard_errors(paths: dict) -> dict:
    """What server/api/security.py answers before any handler runs: 403 (Origin) everywhere, 415 on a POST
    whose body is not JSON, 401 where an API key is needed; in each route's own envelope."""
    for path, item in paths.items():
        for method, operation in item.items():
            responses = operation["responses"]
            family = next(f for f, name in ENVELOPES.items()
                          if responses["500"]["content"]["application/json"]["schema"] == _ref(name))
            guards = [403]
            if method == "post":
                guards.append(415)
            if path.startswith(KEYED) or (method == "post" and path.startswith(KEYED_POST)):
                guards.append(401)
                operation["security"] = [{}, {"apiKey": []}]  # only when the server runs with API keys
            for status in guards:
                responses[str(status)] = _error(family, status)
            operation["responses"] = dict(sorted(responses.items()))
    return paths


def _event_stream(chunk: str) -> dict:
    """text/event-stream: each event's data is a JSON chunk, an error frame (an error after the headers went
    out) or the final [DONE]. In OpenAPI 3.1 the media type's schema describes one event."""
    return {
        "schema": {
            "description": f"`data: <{chunk} JSON>` events, then `data: [DONE]`. An error after the headers "
                           "went out is a `data: {\"error\": {...}}` event (OpenAIError), then `[DONE]`.",
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "string",
                    "if": {"const": "[DONE]"},
                    "else": {"contentMediaType": "application/json",
                             "contentSchema": {"oneOf": [_ref(chunk), _ref("OpenAIError")]}},
                },
            },
        }
    }


def _responses(family: str, ok: dict, errors: tuple[int, ...], overrides: dict[int, dict] | None = None) -> dict:
    """200, the given errors in the family's envelope (or as `overrides` says), and 500."""
    overrides = overrides or {}
    responses = {"200": ok}
    for status in errors:
        responses[str(status)] = overrides.get(status) or _error(family, status)
    if "500" not in responses:
        responses["500"] = _error(family, 500)
    return responses


EMPTY_OK = {"description": "Done (no body)."}


# ----------------------------------------------------------------------------- examples and parameters

# Request examples, with the demo repository's model ids (model_repository/).
CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RERANK_MODEL = "sentence-transformers/all-MiniLM-L6-v2-rerank"
_MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
_TEXTS = ["OpenVINO runs models on CPUs.", "Paris is in France."]
EXAMPLES = {
    "ChatCompletionsRequest": {
        "chat": {"model": CHAT_MODEL, "messages": _MESSAGES, "max_tokens": 16},
        "stream": {"model": CHAT_MODEL, "messages": _MESSAGES, "max_tokens": 16, "stream": True,
                   "stream_options": {"include_usage": True}},
        "sampling": {"model": CHAT_MODEL, "messages": _MESSAGES, "max_tokens": 16, "n": 2, "temperature": 0.7,
                     "seed": 7, "logprobs": True, "top_logprobs": 1, "stop": ["\n"]},
        "json": {"model": CHAT_MODEL, "messages": _MESSAGES, "max_tokens": 16, "response_format": {"type": "json_object"}},
    },
    "CompletionsRequest": {
        "completion": {"model": CHAT_MODEL, "prompt": "Once upon a time", "max_tokens": 16},
        "stream": {"model": CHAT_MODEL, "prompt": "Once upon a time", "max_tokens": 16, "stream": True, "logprobs": 1,
                   "stream_options": {"include_usage": True}},
        "echo": {"model": CHAT_MODEL, "prompt": "Once upon a time", "max_tokens": 16, "echo": True, "stream": True},
    },
    "EmbeddingsRequest": {
        "texts": {"model": EMBED_MODEL, "input": _TEXTS},
        "base64": {"model": EMBED_MODEL, "input": "OpenVINO", "encoding_format": "base64", "dimensions": 128},
    },
    "RerankRequest": {
        "rerank": {"model": RERANK_MODEL, "query": "Where is Paris?", "documents": [*_TEXTS, {"text": "Lyon is a city."}],
                   "top_n": 2, "return_documents": True},
    },
    "CohereEmbedV1Request": {
        "floats": {"model": EMBED_MODEL, "texts": _TEXTS, "input_type": "search_document"},
        "by_type": {"model": EMBED_MODEL, "texts": _TEXTS, "input_type": "search_query", "embedding_types": ["float"]},
    },
    "CohereEmbedV2Request": {
        "embed": {"model": EMBED_MODEL, "texts": _TEXTS, "input_type": "search_document", "embedding_types": ["float"]},
    },
    "RepositoryIndexRequest": {"ready": {"ready": True}},
    "RepositoryLoadRequest": {
        "from_folder": {},
        "config": {"parameters": {"config": json.dumps({"task": "embeddings", "embeddings": {"pooling": "mean"}})}},
    },
}



PARAMETERS = {
    "Model": {
        "name": "model", "in": "path", "required": True,
        "description": "Model id: the model folder's path relative to the repository root, such as "
                       "`HuggingFaceTB/SmolLM2-135M-Instruct`. A path parameter is one segment, so send the "
                       "slashes of an id percent-encoded (`HuggingFaceTB%2FSmolLM2-135M-Instruct`, as the openai "
                       "client does); the server decodes them, and the raw slashes name the same model. Only the "
                       "canonical spelling names a model (`./x`, `a//b`, `x/`, hidden parts answer 404); ids over 256 "
                       "characters answer 400 without being echoed.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
        "example": CHAT_MODEL,
    },
    "Version": {
        "name": "version", "in": "path", "required": True,
        "description": "Model version: a positive integer in ASCII digits without leading zeros (else 400).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    },
    "TFSVersion": {
        "name": "version", "in": "path", "required": True,
        "description": "Model version: ASCII digits without leading zeros; 0 means unspecified (the newest "
                       "available version), as TF Serving and ovmsclient use it.",
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    },
}


def _params(*names: str) -> list[dict]:
    return [{"$ref": f"#/components/parameters/{name}"} for name in names]


def _body(name: str, *, required: bool = True, description: str | None = None) -> dict:
    media = {"schema": _ref(name)}
    if name in EXAMPLES:
        media["examples"] = {key: {"value": copy.deepcopy(value)} for key, value in EXAMPLES[name].items()}
    body = {"required": required, "content": {"application/json": media}}
    if description:
        body["description"] = description
    return body


# ----------------------------------------------------------------------------- operations


def _op(tag: str, operation_id: str, summary: str, responses: dict, **extra: Any) -> dict:
    return {"tags": [tag], "operationId": operation_id, "summary": summary, **extra, "responses": responses}


def _openai_paths() -> dict:
    paths: dict[str, dict] = {}
    for prefix in ("/v3", "/v3/v1"):
        key = prefix.strip("/").replace("/", "_")
        alias = "" if prefix == "/v3" else " (alias under /v3/v1)"
        for route, request, unary, chunk, summary in (
            ("chat/completions", "ChatCompletionsRequest", "ChatCompletion", "ChatCompletionChunk", "Chat completion"),
            ("completions", "CompletionsRequest", "Completion", "CompletionChunk", "Text completion"),
        ):
            ok = {"description": "The completion; with `stream: true` a text/event-stream of chunks.",
                  "content": {"application/json": {"schema": _ref(unary)}, "text/event-stream": _event_stream(chunk)}}
            paths[f"{prefix}/{route}"] = {"post": _op(
                "OpenAI", f"{key}_{route.replace('/', '_')}", summary + alias,
                _responses("openai", ok, MODEL_ERRORS),
                requestBody=_body(request))}
        paths[f"{prefix}/embeddings"] = {"post": _op(
            "OpenAI", f"{key}_embeddings", "Embeddings" + alias,
            _responses("openai", _json("EmbeddingList", "The embeddings, in input order."), MODEL_ERRORS),
            requestBody=_body("EmbeddingsRequest"))}
        paths[f"{prefix}/models"] = {"get": _op(
            "OpenAI", f"{key}_list_models", "Models with an AVAILABLE version" + alias,
            _responses("openai", _json("ModelList", "The models that serve."), ()))}
        paths[f"{prefix}/models/{{model}}"] = {"get": _op(
            "OpenAI", f"{key}_retrieve_model", "One model" + alias,
            _responses("openai", _json("Model", "The model, if it has an AVAILABLE version."), (400, 404)),
            parameters=_params("Model"))}
    return paths


def _cohere_paths() -> dict:
    paths: dict[str, dict] = {}
    for path, api in (("/v3/rerank", "1"), ("/v3/v1/rerank", "1"), ("/v3/v2/rerank", "2")):
        paths[path] = {"post": _op(
            "Cohere", path.strip("/").replace("/", "_"), f"Rerank documents (Cohere API version {api})",
            _responses("cohere", _json("RerankResponse", "Documents by relevance, best first."), MODEL_ERRORS),
            requestBody=_body("RerankRequest"),
            description="`model` may be left out when exactly one rerank model serves (the v1 SDK makes it optional).")}
    for path, request, response in (("/v3/v1/embed", "CohereEmbedV1Request", "CohereEmbedV1Response"),
                                    ("/v3/v2/embed", "CohereEmbedV2Request", "CohereEmbedV2Response")):
        paths[path] = {"post": _op(
            "Cohere", path.strip("/").replace("/", "_"), f"Embed texts (Cohere {path.split('/')[2]})",
            _responses("cohere", _json(response, "The embeddings, in input order."), MODEL_ERRORS),
            requestBody=_body(request))}
    return paths


def _tfs_paths() -> dict:
    # One handler serves every /v1/models/... path: each can answer what the handler answers.
    errors = (400, 404, 503)
    paths: dict[str, dict] = {}
    for suffix, version in (("", False), ("/versions/{version}", True)):
        params = _params("Model", "TFSVersion") if version else _params("Model")
        which = "one version" if version else "every version"
        paths[f"/v1/models/{{model}}{suffix}"] = {"get": _op(
            "TF Serving (/v1)", "v1_model_status" + ("_version" if version else ""), f"Model status: {which}",
            _responses("status", _json("TFSModelStatus", "GetModelStatusResponse."), errors), parameters=params)}
        paths[f"/v1/models/{{model}}{suffix}/metadata"] = {"get": _op(
            "TF Serving (/v1)", "v1_model_metadata" + ("_version" if version else ""),
            "Model metadata" + (" of one version" if version else " of the newest available version"),
            _responses("status", _json("TFSModelMetadata", "GetModelMetadataResponse in proto3 JSON."), errors),
            parameters=params)}
    paths["/v1/config"] = {"get": _op(
        "TF Serving (/v1)", "v1_config", "Status of every model",
        _responses("status", _json("TFSConfigStatus", "Model id -> GetModelStatusResponse."), ()))}
    paths["/v1/config/reload"] = {"post": _op(
        "TF Serving (/v1)", "v1_config_reload", "Rescan the repository now",
        _responses("status", _json("TFSConfigStatus", "The resulting status of every model."), ()))}
    return paths


def _kserve_paths() -> dict:
    tag = "KServe v2 (/v2)"
    not_ready = {"description": "Not ready (no body)."}
    paths: dict[str, dict] = {
        "/v2": {"get": _op(tag, "v2_server_metadata", "Server metadata",
                           _responses("status", _json("KServeServerMetadata", "Name, version, extensions."), ()))},
        "/v2/health/live": {"get": _op(tag, "v2_health_live", "Liveness", _responses("status", EMPTY_OK, ()))},
        "/v2/health/ready": {"get": _op(
            tag, "v2_health_ready", "Readiness: 200 once the initial scan's loads have finished, 503 once shutdown began",
            _responses("status", {"description": "Ready (no body)."}, (503,), {503: not_ready}))},
    }
    errors = (400, 404, 503)  # one handler serves every /v2/models/... path
    for suffix, version in (("", False), ("/versions/{version}", True)):
        params = _params("Model", "Version") if version else _params("Model")
        op = "_version" if version else ""
        paths[f"/v2/models/{{model}}{suffix}"] = {"get": _op(
            tag, f"v2_model_metadata{op}", "Model metadata",
            _responses("status", _json("KServeModelMetadata", "Versions, task, inputs and outputs."), errors),
            parameters=params)}
        paths[f"/v2/models/{{model}}{suffix}/ready"] = {"get": _op(
            tag, f"v2_model_ready{op}", "Model readiness",
            _responses("status", {"description": "Ready (no body)."}, errors, {503: not_ready}), parameters=params)}
        paths[f"/v2/models/{{model}}{suffix}/config"] = {"get": _op(
            tag, f"v2_model_config{op}", "The effective config.json of what serves (defaults filled in)",
            _responses("status", _json("ModelConfig", "The config.json document in effect."), errors),
            parameters=params)}
    paths["/v2/repository/index"] = {"post": _op(
        tag, "v2_repository_index", "Every model version and its state",
        _responses("status", _json("KServeRepositoryIndex", "One entry per version."), (400, 413)),
        requestBody=_body("RepositoryIndexRequest", required=False))}
    control = (400, 404, 409, 413)
    paths["/v2/repository/models/{model}/load"] = {"post": _op(
        tag, "v2_repository_load", "(Re)load a model from its folder, or with the config.json given",
        _responses("status", {"description": "The model serves (no body)."}, control), parameters=_params("Model"),
        requestBody=_body("RepositoryLoadRequest", required=False))}
    paths["/v2/repository/models/{model}/unload"] = {"post": _op(
        tag, "v2_repository_unload", "Unload a model: routing stops at once, versions drain in the background",
        _responses("status", {"description": "Routing stopped (no body)."}, control), parameters=_params("Model"),
        requestBody={"required": False, "description": "Triton's unload parameters (unload_dependents): accepted "
                     "and ignored.", "content": {"application/json": {"schema": {"type": "object"}}}})}
    return paths


def _operations_paths() -> dict:
    return {
        "/metrics": {"get": _op(
            "Operations", "metrics", "Prometheus metrics",
            _responses("status", {"description": "Prometheus text exposition format.",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}, ()))},
        "/openapi.json": {"get": _op(
            "Operations", "openapi", "This document",
            _responses("status", {"description": "The OpenAPI 3.1 document.",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}, ()))},
    }


def build_document() -> dict:
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": SERVER_NAME,
            "version": package_version(SERVER_NAME),
            "description": "OpenVINO model server: OpenAI (/v3, /v3/v1) and Cohere (/v3 rerank, embed) APIs for "
                           "generation, embeddings and rerank; TF Serving (/v1) and KServe v2 (/v2) status and "
                           "repository APIs. Request bodies are validated against exactly the schemas below.",
        },
        "tags": [{"name": "OpenAI", "description": 'Errors: {"error": {"message", "type", "param", "code"}}.'},
                 {"name": "Cohere", "description": 'Errors: {"message"}.'},
                 {"name": "TF Serving (/v1)", "description": 'Errors: {"error": "..."}.'},
                 {"name": "KServe v2 (/v2)", "description": 'Errors: {"error": "..."}.'},
                 {"name": "Operations", "description": 'Errors: {"error": "..."}.'}],
        "paths": _add_guard_errors(
            {**_openai_paths(), **_cohere_paths(), **_tfs_paths(), **_kserve_paths(), **_operations_paths()}),
        "components": {
            "schemas": load_components(),
            "parameters": copy.deepcopy(PARAMETERS),
            "securitySchemes": {"apiKey": {
                "type": "http", "scheme": "bearer",
                "description": "Only when the server runs with --api-key-file or API_KEY: then /v3, POST "
                               "/v1/config/reload, POST /v2/repository/models/... (and /metrics with "
                               "--protect-metrics) need `Authorization: Bearer <key>`."}},
        },
    }


# ----------------------------------------------------------------------------- route


@bp.before_server_start
async def build(app: Sanic) -> None:
    """Built once at start-up: a broken schema file stops the server here, not on the first request."""
    app.ctx.openapi_body = json.dumps(build_document(), ensure_ascii=False, separators=(",", ":")).encode()


@bp.get("/openapi.json")
async def openapi_document(request: Request) -> HTTPResponse:
    return raw(request.app.ctx.openapi_body, content_type="application/json")
