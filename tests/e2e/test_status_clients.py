"""The /v1 and /v2 status APIs driven by their real clients: ovmsclient (OVMS's own client, /v1) and
tritonclient.http (/v2), against the real server on tiny real models."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
import tritonclient.http as triton
from ovmsclient import make_http_client
from ovmsclient.tfs_compat.base.errors import ModelNotFoundError
from tritonclient.utils import InferenceServerException

from tests.e2e.harness import ServerProcess, copy_model

CHAT_INPUTS = {"input_ids", "attention_mask", "position_ids", "beam_idx"}


@pytest.fixture
def ovms(server: ServerProcess):
    return make_http_client(f"127.0.0.1:{server.port}")


@pytest.fixture
def client(server: ServerProcess):
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield client
    client.close()


# ---------------------------------------------------------------- /v1 with ovmsclient

def test_ovmsclient_model_status(ovms) -> None:
    # without a version, ovmsclient sends /versions/0: "unspecified", every version's status
    available = {1: {"state": "AVAILABLE", "error_code": 0, "error_message": ""}}
    assert ovms.get_model_status(model_name="tiny-chat") == available
    assert ovms.get_model_status(model_name="sentence-transformers/minilm", model_version=1) == available


def test_ovmsclient_model_metadata(ovms) -> None:
    metadata = ovms.get_model_metadata(model_name="sentence-transformers/minilm")
    assert metadata == ovms.get_model_metadata(model_name="sentence-transformers/minilm", model_version=1)
    assert metadata["model_version"] == 1
    assert metadata["inputs"]["input_ids"] == {"dtype": "DT_INT64", "shape": [-1, -1]}
    assert metadata["outputs"] == {"last_hidden_state": {"dtype": "DT_FLOAT", "shape": [-1, -1, 384]}}
    chat = ovms.get_model_metadata(model_name="tiny-chat")
    assert chat["model_version"] == 1
    assert set(chat["inputs"]) == CHAT_INPUTS
    assert chat["outputs"]["logits"]["dtype"] == "DT_FLOAT"


def test_ovmsclient_unknown_model_and_version(ovms) -> None:
    with pytest.raises(ModelNotFoundError, match="The model 'nope' does not exist"):
        ovms.get_model_status(model_name="nope")
    with pytest.raises(ModelNotFoundError, match="The model 'nope' does not exist"):
        ovms.get_model_metadata(model_name="nope")
    with pytest.raises(ModelNotFoundError, match="has no version 9"):
        ovms.get_model_status(model_name="tiny-chat", model_version=9)
    with pytest.raises(ModelNotFoundError, match="has no version 9"):
        ovms.get_model_metadata(model_name="tiny-chat", model_version=9)


# ---------------------------------------------------------------- /v2 with tritonclient.http

def test_triton_health_metadata_and_index(client) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("tiny-chat")
    assert client.is_model_ready("sentence-transformers/minilm", "1")
    assert not client.is_model_ready("nope")
    metadata = client.get_model_metadata("sentence-transformers/minilm")
    assert metadata["name"] == "sentence-transformers/minilm"
    assert (metadata["versions"], metadata["platform"]) == (["1"], "openvino")
    assert metadata["outputs"] == [{"name": "last_hidden_state", "datatype": "FP32", "shape": [-1, -1, 384]}]
    assert client.get_model_metadata("tiny-chat", "1")["versions"] == ["1"]
    index = {(e["name"], e.get("version")): e for e in client.get_model_repository_index()}
    assert index[("tiny-chat", "1")] == {"name": "tiny-chat", "version": "1", "state": "READY", "reason": ""}
    assert index[("sentence-transformers/minilm", "1")]["state"] == "READY"
    with pytest.raises(InferenceServerException, match="The model 'nope' does not exist") as error:
        client.get_model_metadata("nope")
    assert error.value.status() == "404"


def test_triton_model_config(client) -> None:
    config = client.get_model_config("sentence-transformers/minilm")
    assert config["task"] == "embeddings"
    assert config["embeddings"]["pooling"] == "mean"  # from its config.json
    assert config["embeddings"]["max_length"] == 512  # a default, filled in
    assert config["model_version_policy"] == {"latest": {"num_versions": 1}}
    assert client.get_model_config("sentence-transformers/minilm", "1") == config
    assert client.get_model_config("tiny-chat")["task"] == "text_generation"
    with pytest.raises(InferenceServerException, match="The model 'nope' does not exist") as error:
        client.get_model_config("nope")
    assert error.value.status() == "404"
    with pytest.raises(InferenceServerException, match="No such route") as error:
        client.get_model_config("tiny-chat/foo")
    assert error.value.status() == "404"


def test_triton_unload_load_and_config_override(server: ServerProcess, models: Path, client) -> None:
    copy_model(models / "tiny-embed", server.repository / "triton" / "embed")
    server.wait_states("triton/embed", {"1": "AVAILABLE"})
    client.unload_model("triton/embed")
    assert not client.is_model_ready("triton/embed")
    client.load_model("triton/embed")
    assert client.is_model_ready("triton/embed")
    assert client.get_model_config("triton/embed")["embeddings"]["max_batch_size"] == 32

    override = {"task": "embeddings", "embeddings": {"pooling": "cls", "normalize": True, "max_batch_size": 7}}
    client.load_model("triton/embed", config=json.dumps(override))
    assert client.is_model_ready("triton/embed")
    assert client.get_model_config("triton/embed")["embeddings"]["max_batch_size"] == 7

    bad = {"task": "embeddings", "embeddings": {"pooling": "bogus"}}
    with pytest.raises(InferenceServerException, match="/embeddings/pooling") as error:
        client.load_model("triton/embed", config=json.dumps(bad))
    assert error.value.status() == "400"
    with pytest.raises(InferenceServerException, match="must hold a JSON object") as error:
        client.load_model("triton/embed", config="[1]")
    assert error.value.status() == "400"
    assert client.is_model_ready("triton/embed")  # a rejected load leaves what serves alone
    assert client.get_model_config("triton/embed")["embeddings"]["max_batch_size"] == 7

    client.load_model("triton/embed")  # without a config: the model's own config.json again
    assert client.get_model_config("triton/embed")["embeddings"]["max_batch_size"] == 32
    with pytest.raises(InferenceServerException, match="does not exist") as error:
        client.load_model("triton/missing")
    assert error.value.status() == "404"


# ---------------------------------------------------------------- spellings a normalizing client never sends

def _raw(server: ServerProcess, method: str, path: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path)  # sent as is: no dot-segment removal
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def test_literal_dot_segments_and_slashes_name_no_model(server: ServerProcess) -> None:
    for path in ("/v1/models/./tiny-chat", "/v1/models/tiny-chat/", "/v2/models/./tiny-chat/ready",
                 "/v2/models/sentence-transformers//minilm", "/v2/models/x/../tiny-chat", "/v3/models/./tiny-chat"):
        status, body = _raw(server, "GET", path)
        assert status == 404, path
        assert "does not exist" in json.dumps(body), (path, body)
    status, body = _raw(server, "POST", "/v2/repository/models/./tiny-chat/unload")
    assert (status, body) == (404, {"error": "The model './tiny-chat' does not exist"})
    assert server.get("/v2/models/tiny-chat/ready").status_code == 200
