"""Unloading releases memory: load and delete the real all-MiniLM-L6-v2 several times."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Callable

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
    # Each side is the least of two releases (one release can keep a 15-20 MB region for a while; see below).
    assert min(unloaded[2:]) - min(unloaded[:2]) < 45, (loaded, unloaded)
    assert loaded[-1] - loaded[0] < 45, (loaded, unloaded)


def _load_and_unload(server: ServerProcess, models: Path, serve: Callable[[], None]) -> float:
    """RSS after minilm was loaded, given `serve`'s traffic, deleted and released."""
    released = len([e for e in server.log_events("model_version_released") if e["model"] == "traffic"])
    model = copy_model(models / "minilm", server.repository / "traffic")
    server.wait_states("traffic", {"1": "AVAILABLE"})
    serve()
    shutil.rmtree(model)
    wait_for(lambda: len([e for e in server.log_events("model_version_released") if e["model"] == "traffic"])
             == released + 1, what="release logged")
    return server.rss_mb()


def test_serving_leaves_no_memory_behind(empty_server: ServerProcess, models: Path) -> None:
    """Embedding traffic of varied shapes, then unloading: the server ends where a server that only
    loaded and unloaded the model ends. Before inputs were padded to bounded shapes and oneDNN's
    process-wide primitive cache was turned off, this traffic left 64 MB behind (6 MB now).

    Some releases, served or not, keep a 15-20 MB anonymous region resident whose content is the
    released model's weights, until a later load and release frees it (seen in /proc/PID/smaps in about
    a third to a half of MiniLM's releases; not explained; a CI run failed on one at 27 MB). So each side
    is the least of four releases: what serving leaves behind stays through the plain load-and-release
    cycles after it, and is still there in the least of them."""
    server = empty_server
    rng = random.Random(5)
    words = "the quick brown fox jumps over a lazy dog while models serve tokens".split()

    def traffic() -> None:
        for _ in range(200):
            texts = [" ".join(rng.choices(words, k=rng.randint(1, 100))) for _ in range(rng.randint(1, 12))]
            response = server.post("/v3/embeddings", json={"model": "traffic", "input": texts})
            assert response.status_code == 200, response.text

    def plain() -> None:
        pass

    _load_and_unload(server, models, plain)  # the first load brings in what any load keeps
    unserved = [_load_and_unload(server, models, plain) for _ in range(4)]
    served = [_load_and_unload(server, models, serve) for serve in (traffic, plain, plain, plain)]
    print(f"after unloading: {[round(x) for x in unserved]} MB unserved, "
          f"{[round(x) for x in served]} MB after 200 requests of varied shapes and three plain cycles")
    assert min(served) - min(unserved) < 25, (unserved, served)
