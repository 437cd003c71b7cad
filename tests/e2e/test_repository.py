"""The model repository, live: real server process, real tiny OpenVINO models, real file operations."""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from openai import OpenAI

from tests.e2e.harness import ServerProcess, copy_model, wait_for


def test_initial_repository_is_served(server: ServerProcess) -> None:
    index = server.index()
    assert index[("tiny-chat", "1")]["state"] == "READY"
    assert index[("sentence-transformers/minilm", "1")]["state"] == "READY"
    assert server.get("/v1/models/sentence-transformers/minilm").json() == {
        "model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
    }
    client = OpenAI(base_url=server.url("/v3"), api_key="unused")
    assert sorted(m.id for m in client.models.list()) == ["sentence-transformers/minilm", "tiny-chat"]
    assert client.models.retrieve("sentence-transformers/minilm").id == "sentence-transformers/minilm"


def test_metadata_is_read_from_the_ir(server: ServerProcess) -> None:
    metadata = server.get("/v2/models/sentence-transformers/minilm").json()
    assert metadata["platform"] == "openvino"
    assert metadata["versions"] == ["1"]
    assert metadata["task"] == "embeddings"
    inputs = {i["name"]: i for i in metadata["inputs"]}
    assert inputs["input_ids"] == {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}
    assert metadata["outputs"][0]["name"] == "last_hidden_state"
    assert metadata["outputs"][0]["shape"] == [-1, -1, 384]


def test_model_folder_added(server: ServerProcess, models: Path) -> None:
    copy_model(models / "tiny-embed", server.repository / "added" / "embed")
    server.wait_states("added/embed", {"1": "AVAILABLE"})
    assert server.get("/v2/models/added/embed/ready").status_code == 200
    assert "added/embed" in [m["id"] for m in server.get("/v3/models").json()["data"]]


def test_version_added_then_deleted(server: ServerProcess, models: Path) -> None:
    model = copy_model(models / "tiny-embed", server.repository / "versions")
    server.wait_states("versions", {"1": "AVAILABLE"})
    copy_model(model / "1", model / "2")
    server.wait_states("versions", {"1": "END", "2": "AVAILABLE"})
    assert server.get("/v2/models/versions").json()["versions"] == ["2"]
    assert server.get("/v2/models/versions/versions/1/ready").status_code == 503
    shutil.rmtree(model / "2")
    server.wait_states("versions", {"1": "AVAILABLE"})  # latest-1 policy falls back to version 1


def test_model_deleted_is_unloaded(server: ServerProcess, models: Path) -> None:
    model = copy_model(models / "tiny-rerank", server.repository / "deleted")
    server.wait_states("deleted", {"1": "AVAILABLE"})
    shutil.rmtree(model)
    wait_for(lambda: server.get("/v1/models/deleted").status_code == 404, what="model gone")
    assert ("deleted", "1") not in server.index()
    ends = [e for e in server.log_events("model_version_transition") if e["model"] == "deleted" and e["to"] == "UNLOADING"]
    assert ends and ends[-1]["reason"] == "model folder removed"


def test_config_edits_valid_invalid_truncated_then_valid(server: ServerProcess, models: Path) -> None:
    model = copy_model(models / "tiny-embed", server.repository / "edited")
    server.wait_states("edited", {"1": "AVAILABLE"})
    loads_before = len([e for e in server.log_events("model_version_transition")
                        if e["model"] == "edited" and e["to"] == "AVAILABLE"])

    # valid edit of a pipeline setting: reloaded (load-then-swap), still AVAILABLE
    (model / "config.json").write_text(json.dumps({"task": "embeddings", "embeddings": {"pooling": "mean"}}))
    wait_for(lambda: len([e for e in server.log_events("model_version_transition")
                          if e["model"] == "edited" and e["to"] == "AVAILABLE"]) == loads_before + 1, what="reload")
    server.wait_states("edited", {"1": "AVAILABLE"})

    # invalid edit: keeps serving, the status names the field
    (model / "config.json").write_text(json.dumps({"task": "embeddings", "embeddings": {"pooling": "max"}}))
    def shows_error() -> bool:
        (status,) = server.get("/v1/models/edited").json()["model_version_status"]
        return status["state"] == "AVAILABLE" and status["status"]["error_code"] == "INVALID_ARGUMENT" \
            and "/embeddings/pooling" in status["status"]["error_message"]
    wait_for(shows_error, what="invalid config reported")
    assert server.get("/v2/models/edited/ready").status_code == 200

    # truncated file: same
    (model / "config.json").write_text('{"task": "embeddings", "embed')
    wait_for(lambda: "not valid JSON" in server.get("/v1/models/edited").json()["model_version_status"][0]["status"]["error_message"],
             what="truncated config reported")
    assert server.get("/v2/models/edited/ready").status_code == 200

    # the next valid edit is picked up and clears the error
    (model / "config.json").write_text(json.dumps({"task": "embeddings"}))
    wait_for(lambda: server.get("/v1/models/edited").json()["model_version_status"][0]["status"]["error_code"] == "OK",
             what="error cleared")


def test_corrupt_version_fails_alone(server: ServerProcess, models: Path) -> None:
    model = copy_model(models / "tiny-embed", server.repository / "corrupt", )
    server.wait_states("corrupt", {"1": "AVAILABLE"})
    staging = server.repository / ".corrupt-2"
    shutil.copytree(model / "1", staging)
    (staging / "openvino_model.bin").write_bytes(b"\0" * 100)  # truncated weights
    staging.rename(model / "2")

    def failed() -> dict | None:
        status = {s["version"]: s for s in server.get("/v1/models/corrupt").json()["model_version_status"]}
        return status if status.get("2", {}).get("state") == "END" else None
    status = wait_for(failed, what="version 2 failed")
    assert status["2"]["status"]["error_code"] == "UNKNOWN"
    assert "failed to load" in status["2"]["status"]["error_message"]
    assert status["1"]["state"] == "AVAILABLE"  # the old version keeps serving
    assert "Traceback" not in status["2"]["status"]["error_message"]
    index = server.index()
    assert index[("tiny-chat", "1")]["state"] == "READY"
    assert index[("sentence-transformers/minilm", "1")]["state"] == "READY"


@pytest.fixture
def patient_server(tmp_path: Path):
    """A server of its own with a 2 s settle time: the test's writer thread may stall for up to 1.8 s on
    a loaded machine without the pauses below reading as a finished copy (with the module server's
    0.5 s, a 0.35 s stall was enough)."""
    root = tmp_path / "repository"
    root.mkdir()
    process = ServerProcess(root, tmp_path / "server.log", settle=2.0, settle_max=10.0).start()
    yield process
    process.stop()


def test_model_copied_slowly_file_by_file(patient_server: ServerProcess, models: Path) -> None:
    """Each file arrives 0.3 s after the previous one, in two halves 0.15 s apart (settle is 2 s): the
    server must not try the half-copied folder, and ends with the model AVAILABLE."""
    server = patient_server
    source = models / "tiny-embed"
    target = server.repository / "slow"
    seen_states: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for status in server.get("/v1/models/slow").json().get("model_version_status", []):
                seen_states.add(f'{status["state"]}/{status["status"]["error_code"]}')
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for path in sorted(source.rglob("*")):
            destination = target / path.relative_to(source)
            if path.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as reader, open(destination, "wb") as writer:
                data = reader.read()
                half = len(data) // 2
                writer.write(data[:half])
                writer.flush()
                time.sleep(0.15)
                writer.write(data[half:])
            time.sleep(0.15)
        server.wait_states("slow", {"1": "AVAILABLE"})
    finally:
        stop.set()
        watcher.join()
    assert seen_states <= {"LOADING/OK", "AVAILABLE/OK", "START/OK"}, seen_states


def test_task_inferred_without_config(server: ServerProcess, models: Path) -> None:
    staging = server.repository / ".inferred"
    shutil.copytree(models / "tiny-rerank", staging)
    (staging / "config.json").unlink()
    staging.rename(server.repository / "inferred")
    server.wait_states("inferred", {"1": "AVAILABLE"})
    assert server.get("/v2/models/inferred").json()["task"] == "rerank"


def test_odd_folders_are_ignored_with_a_warning(server: ServerProcess, models: Path) -> None:
    model = copy_model(models / "tiny-embed", server.repository / "odd")
    (model / "01").mkdir()
    (model / "latest").mkdir()
    server.wait_states("odd", {"1": "AVAILABLE"})
    warnings = [e["message"] for e in server.log_events("repository_warning") if e.get("model") == "odd"]
    assert any("'01'" in w for w in warnings) and any("'latest'" in w for w in warnings)


def test_concurrent_explicit_loads_have_exact_outcomes(server: ServerProcess, models: Path) -> None:
    copy_model(models / "minilm", server.repository / "explicit")
    server.wait_states("explicit", {"1": "AVAILABLE"})
    barrier = threading.Barrier(6)

    def load(_: int) -> int:
        barrier.wait()
        return server.post("/v2/repository/models/explicit/load").status_code

    with ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(load, range(6)))
    assert codes == [200, 409, 409, 409, 409, 409]
    conflict = server.post("/v2/repository/models/explicit/load")  # nothing in progress now: succeeds
    assert conflict.status_code == 200

    assert server.post("/v2/repository/models/explicit/unload").status_code == 200
    server.wait_states("explicit", {"1": "END"})
    assert server.get("/v2/models/explicit/ready").status_code == 503
    time.sleep(1.0)  # a rescan happens meanwhile: an explicit unload is not undone by the watcher
    assert server.get("/v2/models/explicit/ready").status_code == 503
    assert server.post("/v2/repository/models/explicit/load").status_code == 200
    server.wait_states("explicit", {"1": "AVAILABLE"})


def test_config_reload_endpoint(server: ServerProcess) -> None:
    response = server.post("/v1/config/reload")
    assert response.status_code == 200
    assert response.json()["tiny-chat"]["model_version_status"][0]["state"] == "AVAILABLE"
    assert "sentence-transformers/minilm" in server.get("/v1/config").json()


def test_request_log_events(server: ServerProcess) -> None:
    server.get("/v2/health/live", headers={"x-request-id": "e2e-req-1"})
    wait_for(lambda: [e for e in server.log_events("request") if e.get("request_id") == "e2e-req-1"], what="request log")
    (event,) = [e for e in server.log_events("request") if e.get("request_id") == "e2e-req-1"]
    assert event["method"] == "GET" and event["path"] == "/v2/health/live" and event["status"] == 200
    assert event["latency_ms"] >= 0
    transitions = server.log_events("model_version_transition")
    assert {"model", "version", "from", "to", "reason", "duration_ms"} <= set(transitions[0])
