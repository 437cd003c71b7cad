"""API keys and browser safety, in-process on a fake loader."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sanic_testing.reusable import ReusableClient

from server.api.security import ApiKeys
from server.app import create_app
from server.settings import Settings
from tests.e2e.harness import free_port
from tests.unit.fakes import FakeLoader

KEY = "sk-test-0123456789"
EVIL = "http://evil.example"


@pytest.fixture
def make_client(repository: Path):
    clients = []

    def make(**settings) -> ReusableClient:
        app = create_app(Settings(model_repository=repository, **settings), loader=FakeLoader(), watch=False)
        client = ReusableClient(app, port=free_port())
        client.__enter__()
        clients.append(client)
        deadline = time.monotonic() + 10
        while client.get("/v2/health/ready")[1].status != 200:
            assert time.monotonic() < deadline, "app never became ready"
            time.sleep(0.02)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _ready(client: ReusableClient, model: str) -> int:
    return client.get(f"/v2/models/{model}/ready")[1].status


def test_a_cross_origin_simple_request_cannot_unload(make_client) -> None:
    client = make_client()
    # text/plain needs no browser preflight: it must never reach the handler
    _, response = client.post("/v2/repository/models/embed/unload", content=b"{}",
                              headers={"Content-Type": "text/plain"})
    assert response.status == 415
    assert response.json == {"error": "Request bodies must be JSON: send 'Content-Type: application/json'"}
    # a body-less POST from a web page carries an Origin
    _, response = client.post("/v2/repository/models/embed/unload", headers={"Origin": EVIL})
    assert response.status == 403
    assert _ready(client, "embed") == 200
    # a preflight is refused while CORS is off
    _, response = client.options("/v2/repository/models/embed/unload",
                                 headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert response.status == 403
    assert "access-control-allow-origin" not in response.headers
    # curl without a body, and JSON bodies, still work
    assert client.post("/v2/repository/index", json={"ready": True})[1].status == 200
    assert client.post("/v2/repository/models/embed/unload")[1].status == 200


def test_each_family_answers_415_in_its_envelope(make_client) -> None:
    client = make_client()
    for path, envelope in (("/v3/embeddings", "openai"), ("/v3/v2/rerank", "cohere"), ("/v1/config/reload", "plain")):
        _, response = client.post(path, content=b"model=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status == 415, path
        body = response.json
        if envelope == "openai":
            assert body["error"]["code"] == "unsupported_media_type"
        elif envelope == "cohere":
            assert set(body) == {"message"}
        else:
            assert set(body) == {"error"}
    _, response = client.post("/v3/embeddings", content=b'{"model": "embed", "input": "x"}',
                              headers={"Content-Type": "application/json; charset=utf-8"})
    assert response.status != 415


def test_allowed_origins_get_cors_answers(make_client) -> None:
    client = make_client(allowed_origins=("http://app.example",))
    _, response = client.options("/v3/embeddings", headers={"Origin": "http://app.example",
                                                            "Access-Control-Request-Method": "POST"})
    assert response.status == 204
    assert response.headers["access-control-allow-origin"] == "http://app.example"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "Authorization" in response.headers["access-control-allow-headers"]
    _, response = client.get("/v3/models", headers={"Origin": "http://app.example"})
    assert response.status == 200
    assert response.headers["access-control-allow-origin"] == "http://app.example"
    _, response = client.get("/v3/models", headers={"Origin": EVIL})
    assert response.status == 403


def test_api_key_guards_v3_and_mutations_only(make_client) -> None:
    client = make_client(api_key=KEY)
    bearer = {"Authorization": f"Bearer {KEY}"}
    _, response = client.get("/v3/models")
    assert response.status == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json["error"]["code"] == "invalid_api_key"
    assert client.get("/v3/models", headers={"Authorization": "Bearer wrong"})[1].status == 401
    assert client.get("/v3/models", headers={"Authorization": KEY})[1].status == 401  # no scheme
    assert client.get("/v3/models", headers=bearer)[1].status == 200
    _, response = client.post("/v3/v2/rerank", json={"model": "x", "query": "q", "documents": ["d"]})
    assert (response.status, set(response.json)) == (401, {"message"})
    _, response = client.post("/v2/repository/models/embed/unload")
    assert (response.status, set(response.json)) == (401, {"error"})
    assert client.post("/v1/config/reload")[1].status == 401
    # health, readiness, status reads, the index and metrics stay open
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/embed/ready", "/v1/models/embed", "/metrics"):
        assert client.get(path)[1].status == 200, path
    assert client.post("/v2/repository/index")[1].status == 200
    assert client.post("/v2/repository/models/embed/unload", headers=bearer)[1].status == 200


def test_protect_metrics(make_client) -> None:
    client = make_client(api_key=KEY, protect_metrics=True)
    assert client.get("/metrics")[1].status == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})[1].status == 200


def test_the_key_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# operators\nfirst-key\n\n  second-key  \n")
    keys = ApiKeys(key_file, None, reload_check_s=0)
    assert keys.enabled
    assert keys.accepts("Bearer first-key") and keys.accepts("bearer second-key")
    assert not keys.accepts("Bearer # operators") and not keys.accepts("Bearer ") and not keys.accepts(None)
    key_file.write_text("third-key\n")
    assert keys.accepts("Bearer third-key") and not keys.accepts("Bearer first-key")
    key_file.write_text("  # indented comment\nthird-key\n")
    assert not keys.accepts("Bearer # indented comment") and keys.accepts("Bearer third-key")
    key_file.unlink()  # deleting the file revokes its keys
    assert not keys.accepts("Bearer third-key")
    assert not ApiKeys(None, None).enabled
    assert ApiKeys(None, "env-key").accepts("Bearer env-key")


def test_oversized_headers_are_431_not_a_body_error(make_client) -> None:
    client = make_client()
    _, response = client.get("/v3/models", headers={"Authorization": "Bearer " + "a" * 20_000})
    assert response.status == 431
    # the headers could not be read, so neither could the route family: the plain envelope
    assert response.json == {"error": "The request headers are too large (8 KiB in all at most)"}
