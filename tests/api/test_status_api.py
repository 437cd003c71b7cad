"""Shapes and status codes of the /v1, /v2 and /v3/models routes."""

from __future__ import annotations

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
