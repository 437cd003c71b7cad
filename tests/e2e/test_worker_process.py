"""The generation worker process: a crash fails only the requests it was running, the server
reloads the version by itself, and no worker outlives the server."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from tests.e2e.harness import ServerProcess, copy_model, wait_for

REPLY = "Hello! I am a tiny test model."
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def chat_server(models: Path, tmp_path: Path):
    root = tmp_path / "repository"
    copy_model(models / "tiny-chat", root / "chat")
    process = ServerProcess(root, tmp_path / "server.log").start()
    yield process
    process.stop()


def test_killed_worker_fails_its_streams_and_the_version_reloads(chat_server: ServerProcess) -> None:
    server = chat_server
    client = OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)
    (worker,) = server.worker_pids()
    started = threading.Event()
    outcome: dict[str, BaseException | str] = {}

    def stream() -> None:
        try:
            chunks = client.chat.completions.create(model="chat", messages=HI, stream=True, max_tokens=1000,
                                                    extra_body={"ignore_eos": True})
            for chunk in chunks:
                started.set()
            outcome["result"] = "finished"
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome["result"] = exc

    thread = threading.Thread(target=stream)
    thread.start()
    assert started.wait(30)
    os.kill(worker, signal.SIGKILL)
    thread.join(30)
    assert isinstance(outcome["result"], openai.APIError), outcome
    assert "worker" in str(outcome["result"])

    def answers() -> bool:
        try:
            response = client.chat.completions.create(model="chat", messages=HI)
        except openai.APIStatusError as exc:
            assert exc.status_code == 503, exc  # reloading: not ready yet, never a 500
            return False
        return response.choices[0].message.content == REPLY

    wait_for(answers, timeout=60, what="a reloaded worker answering")
    (new_worker,) = server.worker_pids()
    assert new_worker != worker
    assert server.version_states("chat") == {"1": "AVAILABLE"}
    assert server.log_events("model_version_broken")


def test_killed_idle_worker_is_replaced_without_traffic(chat_server: ServerProcess) -> None:
    (worker,) = chat_server.worker_pids()
    os.kill(worker, signal.SIGKILL)
    # The periodic rescan (3 s in these tests) finds the dead worker; no request is needed.
    wait_for(lambda: [p for p in chat_server.worker_pids() if p != worker], timeout=60, what="a new worker")
    chat_server.wait_states("chat", {"1": "AVAILABLE"})
    response = OpenAI(base_url=chat_server.url("/v3"), api_key="unused").chat.completions.create(
        model="chat", messages=HI)
    assert response.choices[0].message.content == REPLY


def test_no_worker_outlives_the_server(chat_server: ServerProcess) -> None:
    workers = chat_server.worker_pids()
    assert len(workers) == 1
    chat_server.stop()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), timeout=15, what="workers gone")
