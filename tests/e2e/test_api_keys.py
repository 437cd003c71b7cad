"""API keys on the real server, through the clients users have: the openai and cohere SDKs raise their
authentication errors without a key and work unchanged with one; the key file is re-read on change."""

from __future__ import annotations

from pathlib import Path

import cohere
import openai
import pytest
import requests
from cohere.errors import UnauthorizedError

from tests.e2e.harness import ServerProcess, running_server, wait_for

ENV_KEY = "sk-env-key"


@pytest.fixture(scope="module")
def keyed(models: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("keyed") / "repository"
    root.mkdir()
    key_file = root.parent / "keys.txt"
    key_file.write_text("sk-file-key-1\n")
    with running_server(root, {"embed": models / "tiny-embed", "rerank": models / "tiny-rerank"},
                        extra_args=("--api-key-file", str(key_file)), env={"API_KEY": ENV_KEY}) as process:
        process.key_file = key_file
        yield process


def _openai(server: ServerProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url("/v3"), api_key=key, max_retries=0)


def test_openai_client_without_a_valid_key_gets_its_authentication_error(keyed: ServerProcess) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        _openai(keyed, "wrong").embeddings.create(model="embed", input="hello")
    assert caught.value.code == "invalid_api_key"
    for key in (ENV_KEY, "sk-file-key-1"):
        assert len(_openai(keyed, key).embeddings.create(model="embed", input="hello").data) == 1


def test_cohere_client_without_a_valid_key_gets_its_authentication_error(keyed: ServerProcess) -> None:
    with pytest.raises(UnauthorizedError):
        cohere.ClientV2(api_key="wrong", base_url=keyed.url("/v3")).rerank(model="rerank", query="q", documents=["a"])
    result = cohere.ClientV2(api_key=ENV_KEY, base_url=keyed.url("/v3")).rerank(model="rerank", query="q",
                                                                               documents=["a", "b"])
    assert len(result.results) == 2


def test_health_and_status_stay_open_and_mutations_need_a_key(keyed: ServerProcess) -> None:
    assert keyed.get("/v2/health/ready").status_code == 200
    assert keyed.get("/v1/models/embed").status_code == 200
    assert keyed.get("/metrics").status_code == 200
    assert keyed.post("/v2/repository/models/embed/unload").status_code == 401
    assert keyed.get("/v2/models/embed/ready").status_code == 200


def test_the_key_file_is_reread_when_it_changes(keyed: ServerProcess) -> None:
    keyed.key_file.write_text("sk-file-key-2\n")

    def rotated() -> bool:
        new = requests.get(keyed.url("/v3/models"), headers={"Authorization": "Bearer sk-file-key-2"}, timeout=10)
        return new.status_code == 200
    wait_for(rotated, what="the new key accepted")
    with pytest.raises(openai.AuthenticationError):
        _openai(keyed, "sk-file-key-1").models.list()
