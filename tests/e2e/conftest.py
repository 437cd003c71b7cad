from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.harness import ServerProcess, copy_model, test_models_dir

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def models() -> Path:
    return test_models_dir()


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real server per test module, on a repository that starts with tiny-chat and minilm;
    each test then works on model ids of its own."""
    root = tmp_path_factory.mktemp("repository")
    copy_model(models / "tiny-chat", root / "tiny-chat")
    copy_model(models / "minilm", root / "sentence-transformers" / "minilm")
    process = ServerProcess(root, root.parent / "server.log").start()
    yield process
    process.stop()
    log = (root.parent / "server.log").read_text()
    assert "Traceback" not in log, log[-4000:]
