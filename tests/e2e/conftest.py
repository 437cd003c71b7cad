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


@pytest.fixture(scope="session")
def wide_tiny_chat(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-chat with a 4096-token window, for tool-calling tests: its 400-token vocabulary spends about
    one token per character of the tools' JSON (RoPE positions beyond the trained 1024 are fine here)."""
    import json

    from tests.e2e.harness import copy_model

    source = tmp_path_factory.mktemp("wide") / "tiny-chat"
    copy_model(models / "tiny-chat", source)
    config = json.loads((source / "config.json").read_text())
    config.setdefault("text_generation", {})["max_context_length"] = 4096
    (source / "config.json").write_text(json.dumps(config))
    return source
