"""oneDNN's process-wide primitive cache is off in the server process, on in generation workers."""

from __future__ import annotations

import os

import pytest

from server import native_memory


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(native_memory, "_chosen_by_operator", None)
    return monkeypatch


def test_server_turns_the_cache_off_and_workers_get_the_default(fresh: pytest.MonkeyPatch) -> None:
    fresh.delenv(native_memory.PRIMITIVE_CACHE_VARIABLE, raising=False)
    native_memory.limit_primitive_cache()
    assert os.environ[native_memory.PRIMITIVE_CACHE_VARIABLE] == "0"
    worker = native_memory.worker_environment(dict(os.environ))
    assert worker[native_memory.PRIMITIVE_CACHE_VARIABLE] == "1024"


def test_an_operators_capacity_is_kept_everywhere(fresh: pytest.MonkeyPatch) -> None:
    fresh.setenv(native_memory.PRIMITIVE_CACHE_VARIABLE, "64")
    native_memory.limit_primitive_cache()
    assert os.environ[native_memory.PRIMITIVE_CACHE_VARIABLE] == "64"
    assert native_memory.worker_environment(dict(os.environ))[native_memory.PRIMITIVE_CACHE_VARIABLE] == "64"
