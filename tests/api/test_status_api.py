"""Shapes and status codes of the /v1, /v2 and /v3/models routes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.unit.fakes import write_version


def test_tfs_model_status_shape(client) -> None:
    _, response = client.get("/v1/models/org/chat")
    assert response.status == 200
    assert response.json == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    _, response = client.get("/v1/models/org/chat/versions/2")
    assert response.json["model_version_status"][0]["version"] == "2"
    _, response = client.get("/v1/models/org/chat/versions/7")
    assert response.status == 404
    assert response.json == {"error": "The model 'org/chat' has no version 7"}


def test_tfs_shows_config_errors(client) -> None:
    _, response = client.get("/v1/models/broken")
    (status,) = response.json["model_version_status"]
    assert status["state"] == "END"
    assert status["status"]["error_code"] == "INVALID_ARGUMENT"
    assert "/task" in status["status"]["error_message"]


def test_tfs_config_and_reload(client, repository: Path) -> None:
    _, response = client.get("/v1/config")
    assert sorted(response.json) == ["broken", "embed", "org/chat"]
    write_version(repository / "embed", 2)
    _, response = client.post("/v1/config/reload")
    assert response.status == 200
    assert [s["version"] for s in response.json["embed"]["model_version_status"] if s["state"] == "AVAILABLE"] == ["2"]


def test_unknown_model_is_404_in_each_envelope(client) -> None:
    _, response = client.get("/v1/models/nope")
    assert (response.status, response.json) == (404, {"error": "The model 'nope' does not exist"})
    _, response = client.get("/v3/models/nope")
    assert response.status == 404
    assert response.json == {
        "error": {"message": "The model 'nope' does not exist", "type": "not_found_error", "param": "model",
                  "code": "model_not_found"}
    }


def test_traversal_ids_never_reach_the_filesystem(client) -> None:
    for path in ("/v1/models/..%2F..%2Fetc", "/v2/models/%2Fetc/ready", "/v3/models/..%2Fembed",
                 "/v1/models/org/..%2F..%2Fembed"):
        _, response = client.get(path)
        assert response.status == 404, path
    _, response = client.post("/v2/repository/models/..%2F..%2Ftmp/load")
    assert response.status == 404


def test_kserve_health_and_metadata(client) -> None:
    _, response = client.get("/v2/health/live")
    assert response.status == 200
    _, response = client.get("/v2")
    assert response.json["name"] == "ov-model-server"
    _, response = client.get("/v2/models/org/chat")
    assert response.json == {
        "name": "org/chat", "versions": ["2"], "platform": "openvino", "task": "text_generation",
        "inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, -1, 8]}],
    }
    _, response = client.get("/v2/models/org/chat/versions/2")
    assert response.json["versions"] == ["2"]


def test_kserve_ready(client) -> None:
    assert (client.get("/v2/models/org/chat/ready"))[1].status == 200
    assert (client.get("/v2/models/org/chat/versions/2/ready"))[1].status == 200
    assert (client.get("/v2/models/org/chat/versions/9/ready"))[1].status == 404
    assert (client.get("/v2/models/broken/ready"))[1].status == 503
    assert (client.get("/v2/models/nope/ready"))[1].status == 404


def test_repository_index(client) -> None:
    _, response = client.post("/v2/repository/index")
    by_name = {(e["name"], e.get("version")): e for e in response.json}
    assert by_name[("org/chat", "2")] == {"name": "org/chat", "version": "2", "state": "READY", "reason": ""}
    assert by_name[("broken", "1")]["state"] == "UNAVAILABLE"
    assert "config.json is invalid" in by_name[("broken", "1")]["reason"]
    _, response = client.post("/v2/repository/index", json={"ready": True})
    assert sorted(e["name"] for e in response.json) == ["embed", "org/chat"]


def test_repository_load_unload(client) -> None:
    _, response = client.post("/v2/repository/models/embed/unload")
    assert response.status == 200
    assert (client.get("/v2/models/embed/ready"))[1].status == 503
    _, response = client.get("/v3/models/embed")
    assert response.status == 404
    _, response = client.post("/v2/repository/models/embed/load")
    assert response.status == 200
    assert (client.get("/v2/models/embed/ready"))[1].status == 200
    _, response = client.post("/v2/repository/models/broken/load")
    assert response.status == 400
    assert "failed to load 'broken'" in response.json["error"]
    _, response = client.post("/v2/repository/models/missing/load")
    assert response.status == 404


def test_openai_models(client) -> None:
    for prefix in ("/v3", "/v3/v1"):
        _, response = client.get(f"{prefix}/models")
        assert response.status == 200
        body = response.json
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == ["embed", "org/chat"]
        assert set(body["data"][0]) == {"id", "object", "created", "owned_by"}
        _, response = client.get(f"{prefix}/models/org/chat")
        assert response.json["id"] == "org/chat"


def test_unknown_route_and_bad_json(client) -> None:
    _, response = client.get("/v3/nothing")
    assert response.status == 404
    assert response.json["error"]["message"] == "No such route"
    _, response = client.post("/v2/repository/index", data=b"{not json")
    assert response.status == 400
    assert "valid JSON" in response.json["error"]


def test_request_id_is_echoed_and_metrics_count(client) -> None:
    _, response = client.get("/v2/health/live", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    _, response = client.get("/metrics")
    assert 'ovms_http_requests_total{method="GET",route="v2/health/live",status="200"}' in response.text
    assert 'ovms_model_version_state{model="org/chat",state="AVAILABLE",version="2"} 1.0' in response.text


# ---------------------------------------------------------------- one spelling per model and version

OTHER_SPELLINGS = ("%2E/embed", "%2E%2Fembed", "embed/", "embed//", "org//chat", "org/%2E/chat", "org/chat/",
                   "/embed", "%2Fembed", "org%2F%2Fchat", "embed/%2E")


def test_other_spellings_of_an_id_do_not_exist(client) -> None:
    for spelling in OTHER_SPELLINGS:
        for path in (f"/v1/models/{spelling}", f"/v1/models/{spelling}/versions/1", f"/v2/models/{spelling}",
                     f"/v2/models/{spelling}/ready", f"/v2/models/{spelling}/config", f"/v3/models/{spelling}",
                     f"/v3/v1/models/{spelling}"):
            _, response = client.get(path)
            assert response.status == 404, path
            message = response.json["error"]["message"] if path.startswith("/v3") else response.json["error"]
            assert "does not exist" in message, (path, message)
        for action in ("load", "unload"):
            _, response = client.post(f"/v2/repository/models/{spelling}/{action}")
            assert response.status == 404, (spelling, action)
            assert "does not exist" in response.json["error"]
    # the canonical spellings, and the encoded slash the openai client sends
    assert client.get("/v1/models/embed")[1].status == 200
    assert client.get("/v2/models/org%2Fchat/ready")[1].status == 200
    assert client.get("/v3/models/org%2Fchat")[1].json["id"] == "org/chat"
    assert client.get("/v2/models/embed/ready")[1].status == 200  # the unloads above did not happen


def test_long_ids_are_refused_without_echo(client) -> None:
    long_id = "a" * 300
    for method, path in ((client.get, f"/v1/models/{long_id}"), (client.get, f"/v1/models/{long_id}/metadata"),
                         (client.get, f"/v2/models/{long_id}/ready"), (client.get, f"/v2/models/{long_id}/config"),
                         (client.post, f"/v2/repository/models/{long_id}/load"),
                         (client.post, f"/v2/repository/models/{long_id}/unload")):
        _, response = method(path)
        assert response.status == 400, path
        assert response.json == {"error": "The model id is 300 characters long; ids have at most 256"}


def test_ids_no_folder_can_have_are_404_not_500(client) -> None:
    # One path part over NAME_MAX (255 bytes) made the explicit load's scandir raise ENAMETOOLONG: a 500.
    for model_id in ("a" * 256, "é" * 130, "org/" + "é" * 128):
        _, response = client.post(f"/v2/repository/models/{model_id}/load")
        assert response.status == 404, model_id
        assert response.json == {"error": f"The model '{model_id}' does not exist"}


def test_versions_are_ascii_decimal(client) -> None:
    for raw in ("１", "١", "²", "01", "+1", "-1", "1.0", "1e0", " 1", "x", "9" * 20):
        for path in (f"/v1/models/org/chat/versions/{raw}", f"/v1/models/org/chat/versions/{raw}/metadata",
                     f"/v2/models/org/chat/versions/{raw}", f"/v2/models/org/chat/versions/{raw}/ready"):
            _, response = client.get(path)
            assert response.status == 400, path
            assert "is not a model version" in response.json["error"], path
    _, response = client.get("/v2/models/org/chat/versions/0")  # /v2 has no "unspecified" version number
    assert response.status == 400
    _, response = client.get("/v1/models/org/chat/versions/2")
    assert response.status == 200


def test_tfs_version_0_means_unspecified(client) -> None:
    # ovmsclient sends /versions/0 when the caller gives no version (as OVMS and TF Serving read it)
    _, all_versions = client.get("/v1/models/org/chat")
    _, zero = client.get("/v1/models/org/chat/versions/0")
    assert zero.status == 200
    assert zero.json == all_versions.json
    _, response = client.get("/v1/models/org/chat/versions/0/metadata")
    assert response.status == 200
    assert response.json["modelSpec"]["version"] == "2"


def test_load_and_unload_apply_to_the_whole_model(client) -> None:
    for action in ("unload", "load"):
        _, response = client.post(f"/v2/repository/models/org/chat/versions/1/{action}")
        assert response.status == 400, action
        assert response.json == {
            "error": f"{action} applies to the whole model: POST /v2/repository/models/org/chat/{action}. "
                     "The versions a model serves are chosen by the model_version_policy of its config.json"
        }
    assert client.get("/v2/models/org/chat/ready")[1].status == 200  # nothing was unloaded


def test_unknown_sub_resource_of_a_known_model(client) -> None:
    cases = {
        "/v2/models/org/chat/foo": "/v2/models/{id}[/versions/{v}]/config",
        "/v2/models/org/chat/versions/2/foo": "/v2/models/{id}[/versions/{v}]/ready",
        "/v2/models/embed/foo/ready": "/v2/models/{id}[/versions/{v}]",
        "/v1/models/org/chat/foo": "/v1/models/{id}[/versions/{v}]/metadata",
        "/v1/models/embed/labels/stable": "/v1/models/{id}/versions/{v}",
    }
    for path, route in cases.items():
        _, response = client.get(path)
        assert response.status == 404, path
        model = "embed" if "/embed/" in path else "org/chat"
        assert response.json["error"].startswith(f"No such route: {path}. The routes of model '{model}' are: "), path
        assert route in response.json["error"], path
    _, response = client.get("/v3/models/org/chat/foo")
    assert response.status == 404
    assert response.json["error"]["message"] == (
        "No such route: /v3/models/org/chat/foo. The routes of model 'org/chat' are: GET /v3/models/{id}")
    _, response = client.post("/v2/repository/models/org/chat/foo/load")
    assert response.status == 404
    assert response.json["error"].startswith("No such route: /v2/repository/models/org/chat/foo/load.")
    _, response = client.post("/v2/repository/models/embed")
    assert response.status == 404
    assert response.json["error"] == ("No such route: /v2/repository/models/embed. The routes are: "
                                      "POST /v2/repository/models/{id}/load, POST /v2/repository/models/{id}/unload")
    # an unknown model with no known leading part is still an unknown model
    _, response = client.get("/v2/models/nope/foo")
    assert (response.status, response.json) == (404, {"error": "The model 'nope/foo' does not exist"})


def test_repository_index_ready_must_be_boolean(client) -> None:
    for value in ("yes", 1, None, [True]):
        _, response = client.post("/v2/repository/index", json={"ready": value})
        assert response.status == 400, value
        assert "'ready'" in response.json["error"]


# ---------------------------------------------------------------- /v1 metadata, /v2 config and load overrides

def test_tfs_model_metadata_shape(client) -> None:
    expected = {
        "modelSpec": {"name": "org/chat", "signatureName": "", "version": "2"},
        "metadata": {"signature_def": {
            "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
            "signatureDef": {"serving_default": {
                "inputs": {"input_ids": {"name": "input_ids", "dtype": "DT_INT64",
                                         "tensorShape": {"dim": [{"size": "-1"}, {"size": "-1"}]}}},
                "outputs": {"logits": {"name": "logits", "dtype": "DT_FLOAT",
                                       "tensorShape": {"dim": [{"size": "-1"}, {"size": "-1"}, {"size": "8"}]}}},
                "methodName": "tensorflow/serving/predict",
            }},
        }},
    }
    for path in ("/v1/models/org/chat/metadata", "/v1/models/org/chat/versions/2/metadata",
                 "/v1/models/org%2Fchat/versions/0/metadata"):
        _, response = client.get(path)
        assert (response.status, response.json) == (200, expected), path
    _, response = client.get("/v1/models/org/chat/versions/7/metadata")
    assert (response.status, response.json) == (404, {"error": "The model 'org/chat' has no version 7"})
    _, response = client.get("/v1/models/nope/metadata")
    assert (response.status, response.json) == (404, {"error": "The model 'nope' does not exist"})
    _, response = client.get("/v1/models/broken/metadata")
    assert response.status == 503


def test_kserve_model_config(client) -> None:
    _, response = client.get("/v2/models/embed/config")
    assert response.status == 200
    config = response.json
    assert config["task"] == "embeddings"
    assert config["model_version_policy"] == {"latest": {"num_versions": 1}}
    assert config["embeddings"]["max_batch_size"] == 32  # defaults filled in
    _, response = client.get("/v2/models/embed/versions/1/config")
    assert (response.status, response.json) == (200, config)
    _, response = client.get("/v2/models/embed/versions/3/config")
    assert (response.status, response.json) == (404, {"error": "The model 'embed' has no version 3"})
    _, response = client.get("/v2/models/nope/config")
    assert (response.status, response.json) == (404, {"error": "The model 'nope' does not exist"})


def test_load_with_a_config_override(client) -> None:
    document = {"task": "embeddings", "embeddings": {"max_batch_size": 7}}
    _, response = client.post("/v2/repository/models/embed/load",
                              json={"parameters": {"config": json.dumps(document)}})
    assert response.status == 200, response.text
    assert client.get("/v2/models/embed/config")[1].json["embeddings"]["max_batch_size"] == 7
    # Triton's load without a config goes back to the model's own config.json
    _, response = client.post("/v2/repository/models/embed/load", json={})
    assert response.status == 200
    assert client.get("/v2/models/embed/config")[1].json["embeddings"]["max_batch_size"] == 32


def test_load_body_errors(client) -> None:
    cases = [
        ({"parameters": {"config": json.dumps({"task": "embeddings", "embeddings": {"pooling": "bogus"}})}},
         "/embeddings/pooling"),
        ({"parameters": {"config": json.dumps({"task": "nope"})}}, "/task"),
        ({"parameters": {"config": "{not json"}}, "'parameters.config' is not valid JSON"),
        ({"parameters": {"config": "[1, 2]"}}, "'parameters.config' must hold a JSON object"),
        ({"parameters": {"config": {"task": "embeddings"}}}, "'parameters.config'"),
        ({"parameters": {"file:1/openvino_model.xml": "PHhtbD4="}}, "only 'config'"),
        ({"parameters": "config"}, "'parameters'"),
    ]
    for body, needle in cases:
        _, response = client.post("/v2/repository/models/embed/load", json=body)
        assert response.status == 400, body
        assert needle in response.json["error"], (body, response.json)
    _, response = client.post("/v2/repository/models/embed/load", data=b"{not json")
    assert response.status == 400
    assert client.get("/v2/models/embed/ready")[1].status == 200  # a rejected load leaves what serves alone
    assert client.get("/v2/models/embed/config")[1].json["embeddings"]["max_batch_size"] == 32


def test_unload_accepts_tritons_body(client) -> None:
    _, response = client.post("/v2/repository/models/embed/unload", json={"parameters": {"unload_dependents": False}})
    assert response.status == 200
    assert client.get("/v2/models/embed/ready")[1].status == 503


def test_index_shows_a_pending_reload_of_a_serving_version(client, repository: Path) -> None:
    write_version(repository / "embed", 1, "w1-new", delay=1.5)  # a reload that takes 1.5 s
    client._run(client.app.ctx.manager.rescan(wait=False))  # as the watcher does: the reload runs in the background
    deadline = time.monotonic() + 10
    while True:
        _, response = client.post("/v2/repository/index")
        entry = {(e["name"], e.get("version")): e for e in response.json}[("embed", "1")]
        if entry["reason"]:
            break
        assert time.monotonic() < deadline, "no pending reason appeared"
        time.sleep(0.02)
    assert entry["state"] == "READY"
    assert entry["reason"].startswith("reloading"), entry
    assert client.get("/v2/models/embed/ready")[1].status == 200
    while entry["reason"]:
        assert time.monotonic() < deadline + 10, entry
        time.sleep(0.05)
        _, response = client.post("/v2/repository/index")
        entry = {(e["name"], e.get("version")): e for e in response.json}[("embed", "1")]
    assert entry == {"name": "embed", "version": "1", "state": "READY", "reason": ""}
