"""In-process app on a fake loader, served by sanic-testing's ReusableClient (one server per test)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sanic_testing.reusable import ReusableClient

from server.app import create_app
from server.settings import Settings
from tests.e2e.harness import free_port
from tests.unit.fakes import FakeLoader, write_model


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    write_model(tmp_path, "org/chat", versions=(1, 2), config={"task": "text_generation"})
    write_model(tmp_path, "embed", versions=(1,), config={"task": "embeddings"})
    write_model(tmp_path, "broken", versions=(1,), config={"task": "nope"})
    return tmp_path


@pytest.fixture
def client(repository: Path):
    app = create_app(Settings(model_repository=repository), loader=FakeLoader(), watch=False)
    client = ReusableClient(app, port=free_port())
    with client:
        deadline = time.monotonic() + 10
        while client.get("/v2/health/ready")[1].status != 200:
            assert time.monotonic() < deadline, "app never became ready"
            time.sleep(0.02)
        yield client
