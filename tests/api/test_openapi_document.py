"""GET /openapi.json: a valid OpenAPI 3.1 document that documents every Sanic route of the app, whose
request bodies are the validation schemas themselves and whose errors use each family's envelope."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from openapi_spec_validator import validate

from server.api import errors, openapi, security
from server.api.validation import SCHEMAS, _validator
from server.app import create_app
from server.settings import Settings
from tests.unit.fakes import FakeLoader

SAMPLES = {"model": "org%2Fchat", "version": "1"}  # a model id with a slash, sent as clients send it
METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
ENVELOPES = {errors.openai_envelope: "OpenAIError", errors.cohere_envelope: "CohereError",
             errors.plain_envelope: "StatusError"}


@pytest.fixture(scope="module")
def document() -> dict:
    return openapi.build_document()


def _operations(document: dict):
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], path)


def test_served_document_is_valid_openapi_3_1(client, document: dict) -> None:
    _, response = client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert response.json == document
    assert document["openapi"].startswith("3.1.")
    validate(response.json)  # openapi-spec-validator: the 3.1 meta-schema and every $ref resolves


def test_every_sanic_route_is_documented(tmp_path: Path, document: dict) -> None:
    """Each route and method of the app is reached by some documented operation, and each documented
    operation reaches a route: a new route without documentation fails here."""
    app = create_app(Settings(model_repository=tmp_path), loader=FakeLoader(), watch=False)
    app.router.finalize()
    reached: dict[tuple[str, str], list[str]] = {}
    for path, method, _ in _operations(document):
        route, _, _ = app.router.get(_concrete(path), method.upper(), None)  # raises NotFound: a stale doc
        reached.setdefault((route.path, method.upper()), []).append(path)
    missing = [(f"/{route.path}", method) for route in app.router.routes for method in route.methods
               if (route.path, method) not in reached]
    assert not missing, f"routes without an operation in server/api/openapi.py: {missing}"


def test_request_bodies_are_the_validation_schemas(document: dict) -> None:
    components = document["components"]["schemas"]
    names = set()
    for path in SCHEMAS.glob("*.schema.json"):
        name = openapi.component_name(path)
        expected = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("$schema", "$id")}
        assert components[name] == expected, name
        stem = path.name.removesuffix(".schema.json")
        assert {k: v for k, v in _validator(stem).schema.items() if k not in ("$schema", "$id")} == expected
        names.add(name)
    referenced = set()
    for path, method, operation in _operations(document):
        body = operation.get("requestBody")
        if body:
            schema = body["content"]["application/json"]["schema"]
            if "$ref" not in schema:  # Triton's unload parameters: read by no handler
                assert path.endswith("/unload"), path
                continue
            referenced.add(schema["$ref"].rsplit("/", 1)[1])
    assert referenced <= names
    assert names - referenced == {"ModelConfig"}  # a response (/v2/models/{model}/config) and a load parameter


def test_errors_use_the_envelope_of_the_route_family(document: dict) -> None:
    for path, method, operation in _operations(document):
        envelope = ENVELOPES[errors.envelope_for(_concrete(path))]
        responses = operation["responses"]
        assert "500" in responses, (method, path)
        for status, response in responses.items():
            if status.startswith("2"):
                continue
            content = response.get("content")
            if content is None:  # the bodiless 503 of the readiness probes
                assert status == "503" and path.endswith("ready"), (method, path, status)
                continue
            assert content == {"application/json": {"schema": {"$ref": f"#/components/schemas/{envelope}"}}}, \
                (method, path, status)


def test_streaming_routes_document_event_streams(document: dict) -> None:
    for path, method, operation in _operations(document):
        content = operation["responses"]["200"].get("content", {})
        streams = path.endswith("completions")
        assert ("text/event-stream" in content) == streams, path
        if streams:
            assert set(content) == {"application/json", "text/event-stream"}


def test_operation_ids_are_unique(document: dict) -> None:
    ids = [operation["operationId"] for _, _, operation in _operations(document)]
    assert len(ids) == len(set(ids))


def test_guard_errors_follow_the_security_rules(document: dict) -> None:
    """401 wherever server/api/security.py can ask for an API key (/metrics: with --protect-metrics), 403
    (Origin) everywhere, 415 (a non-JSON body) on every POST."""
    for path, method, operation in _operations(document):
        request = SimpleNamespace(path=_concrete(path), method=method.upper())
        responses = operation["responses"]
        assert ("401" in responses) == security.needs_key(request, protect_metrics=True), (method, path)
        assert ("415" in responses) == (method == "post"), (method, path)
        assert "403" in responses, (method, path)


def test_request_examples_are_valid_bodies(document: dict) -> None:
    stems = {openapi.component_name(path): path.name.removesuffix(".schema.json") for path in SCHEMAS.glob("*.schema.json")}
    checked = 0
    for path, method, operation in _operations(document):
        media = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        name = media.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
        for example in media.get("examples", {}).values():
            _validator(stems[name]).validate(example["value"])
            checked += 1
    assert checked >= 20
