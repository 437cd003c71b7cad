"""Bounded property-based fuzz of every POST route on the real server: bodies generated from the
request schemas (tests/schema_strategies.py), half of them then broken in one field with arbitrary JSON.
No answer may be a 5xx, and streams may not end in an internal error. Derandomized, so every run
sends the same bodies: a failure here is a bug, never luck."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings

from tests.e2e.harness import ServerProcess, copy_model
from tests.schema_strategies import MODELS, bodies

ROUTES = {
    "/v3/chat/completions": "chat_completions",
    "/v3/completions": "completions",
    "/v3/embeddings": "embeddings",
    "/v3/rerank": "rerank",
    "/v3/v1/rerank": "rerank",
    "/v3/v2/rerank": "rerank",
    "/v3/v1/embeddings": "embeddings",
    "/v2/repository/index": "repository_index",
    "/v3/v1/embed": "cohere_embed_v1",
    "/v3/v2/embed": "cohere_embed_v2",
}
EXAMPLES = 100


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("repository")
    for name in MODELS:
        copy_model(models / name, root / name)
    process = ServerProcess(root, root.parent / "server.log").start()
    yield process
    process.stop()


def check(server: ServerProcess, route: str, body: dict) -> None:
    streaming = bool(body.get("stream")) is True
    response = requests.post(server.url(route), json=body, timeout=120, stream=streaming)
    with response:
        assert response.status_code < 500, (route, body, response.text[:300])
        if streaming and response.status_code == 200:
            for line in response.iter_lines():
                if line.startswith(b"data: {"):
                    frame = json.loads(line[6:])
                    assert frame.get("error", {}).get("type") != "internal_error", (route, body, frame)


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_no_5xx(server: ServerProcess, route: str) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(bodies(ROUTES[route]))
    def run(body: dict) -> None:
        check(server, route, body)

    run()
