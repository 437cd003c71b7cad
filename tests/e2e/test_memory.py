"""Unloading releases memory: load and delete the real all-MiniLM-L6-v2 several times."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.harness import ServerProcess, copy_model, wait_for


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("empty-repository")
    process = ServerProcess(root, root.parent / "server.log").start()
    yield process
    process.stop()


def test_deleted_model_memory_is_released(empty_server: ServerProcess, models: Path) -> None:
    server = empty_server
    baseline = server.rss_mb()
    loaded, unloaded = [], []
    for cycle in range(4):
        model = copy_model(models / "minilm", server.repository / "cycle")
        server.wait_states("cycle", {"1": "AVAILABLE"})
        loaded.append(server.rss_mb())
        shutil.rmtree(model)
        wait_for(lambda: server.get("/v1/models/cycle").status_code == 404, what="unloaded")
        wait_for(lambda: len([e for e in server.log_events("model_version_released") if e["model"] == "cycle"])
                 == cycle + 1, what="release logged")
        unloaded.append(server.rss_mb())
    print(f"baseline {baseline:.0f} MB, loaded {[round(x) for x in loaded]}, unloaded {[round(x) for x in unloaded]}")
    # Memory does not grow with each cycle: a leak of one model copy per cycle would add ~90 MB each time.
    assert unloaded[-1] - unloaded[0] < 45, (loaded, unloaded)
    assert loaded[-1] - loaded[0] < 45, (loaded, unloaded)
