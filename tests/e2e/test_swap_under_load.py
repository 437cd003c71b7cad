"""A new version swapped in under generation load: in-flight streams on the old version finish,
new requests go to the new version, nothing fails."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from openai import OpenAI

from tests.e2e.harness import ServerProcess, copy_model, wait_for

REPLY = "Hello! I am a tiny test model."


@pytest.fixture(scope="module")
def chat_server(models: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("swap-repository")
    copy_model(models / "tiny-chat", root / "chat")
    process = ServerProcess(root, root.parent / "server.log").start()
    yield process
    process.stop()


def tokens_of_version(server: ServerProcess, version: str) -> float:
    for line in server.get("/metrics").text.splitlines():
        if line.startswith("ovms_generated_tokens_total{") and f'version="{version}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_swap_under_streaming_load(chat_server: ServerProcess) -> None:
    server = chat_server
    client = OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)
    results: dict[int, tuple[str | None, int]] = {}
    errors: list[BaseException] = []
    first_chunk = threading.Barrier(9)
    # Version 1's worker is stopped until the swap was seen, so its 8 streams (and their leases) are open
    # during the swap however fast tiny-chat generates. (Clients that only paused reading did not hold
    # them: the server wrote all 1000 tokens into the loopback socket buffers and finished.) Each stream's
    # first chunk, the role, comes from the server before the worker sees the request.
    (version_1_worker,) = server.worker_pids()
    os.kill(version_1_worker, signal.SIGSTOP)

    def stream(i: int) -> None:
        try:
            chunks = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": f"hi {i}"}], stream=True, max_tokens=1000,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            finish, usage, started = None, 0, False
            for chunk in chunks:
                if not started:
                    started = True
                    first_chunk.wait(timeout=30)
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
                if chunk.usage:
                    usage = chunk.usage.completion_tokens
            results[i] = (finish, usage)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        first_chunk.wait(timeout=30)  # all 8 streams are open on version 1

        copy_model(server.repository / "chat" / "1", server.repository / "chat" / "2")
        server.wait_states("chat", {"1": "UNLOADING", "2": "AVAILABLE"}, timeout=30)  # 1 drains the 8 streams

        fresh = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert fresh.choices[0].message.content == REPLY
        assert tokens_of_version(server, "2") > 0  # the new request ran on version 2
    finally:
        os.kill(version_1_worker, signal.SIGCONT)

    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert results == {i: ("length", 1000) for i in range(8)}
    server.wait_states("chat", {"1": "END", "2": "AVAILABLE"}, timeout=30)
