from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_server, test_models_dir

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def models() -> Path:
    return test_models_dir()


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real server per test module, on a repository that starts with tiny-chat and minilm;
    each test then works on model ids of its own."""
    root = tmp_path_factory.mktemp("repository")
    with running_server(root, {"tiny-chat": models / "tiny-chat",
                               "sentence-transformers/minilm": models / "minilm"}) as process:
        yield process
