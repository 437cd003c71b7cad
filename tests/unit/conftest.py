"""Fixtures of the manager's unit tests: a fake loader and a manager on a temp repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.repository.manager import ModelManager
from tests.unit.fakes import FakeLoader


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
async def manager(tmp_path: Path, loader: FakeLoader):
    manager = ModelManager(tmp_path, loader)
    yield manager
    for gate in loader.gates.values():  # a failed test must not leave a load held at its gate
        gate.open()
    await manager.close()
