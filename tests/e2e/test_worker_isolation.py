"""The real server with tiny-chat: a stopped (SIGSTOP) generation worker is noticed, its streams end with
an error and the version reloads; admission beyond max_num_seqs + max_queued_requests is refused with 429.
(A bad grammar failing alone is tested on the real Worker in tests/unit/test_worker_recovery.py: the
edge rejects such schemas before they reach a worker.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import openai
import requests
from openai import OpenAI

from tests.e2e.harness import ServerProcess, copy_model, wait_for

REPLY = "Hello! I am a tiny test model."
HI = [{"role": "user", "content": "hi"}]


def start_server(models: Path, tmp_path: Path, settings: dict, *, rescan: float = 3.0) -> ServerProcess:
    staging = tmp_path / "source"
    shutil.copytree(models / "tiny-chat", staging)
    (staging / "config.json").write_text(json.dumps({"task": "text_generation", "text_generation": settings}))
    root = tmp_path / "repository"
    copy_model(staging, root / "chat")
    return ServerProcess(root, tmp_path / "server.log", rescan=rescan).start()


def test_a_stopped_worker_ends_its_streams_and_is_replaced(models: Path, tmp_path: Path) -> None:
    # No periodic rescan within the test: the replacement can only come from the engine telling the manager.
    server = start_server(models, tmp_path, {"stall_timeout_s": 3}, rescan=600)
    stopped: list[int] = []
    try:
        client = OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)
        (worker,) = server.worker_pids()
        started = threading.Event()
        outcome: dict[str, object] = {}

        def stream() -> None:
            try:
                for _ in client.chat.completions.create(model="chat", messages=HI, stream=True, max_tokens=900,
                                                        extra_body={"ignore_eos": True}):
                    started.set()
                outcome["result"] = "finished"
            except BaseException as exc:  # noqa: BLE001 - checked below
                outcome["result"] = exc

        thread = threading.Thread(target=stream)
        thread.start()
        assert started.wait(30)
        os.kill(worker, signal.SIGSTOP)
        stopped.append(worker)
        thread.join(15)
        assert not thread.is_alive(), "the stream still hangs 15 s after the worker stopped"
        assert isinstance(outcome["result"], openai.APIError), outcome
        assert "stopped responding" in str(outcome["result"])

        wait_for(lambda: [p for p in server.worker_pids() if p != worker], timeout=60, what="a new worker")
        server.wait_states("chat", {"1": "AVAILABLE"})
        assert server.log_events("model_version_broken")  # repaired on the engine's report, before any request
        assert client.chat.completions.create(model="chat", messages=HI).choices[0].message.content == REPLY
        assert server.log_events("generation_worker_stalled")
    finally:
        for pid in stopped:  # the server SIGKILLs it; make sure it can never linger stopped
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.stop()


def _active(server: ServerProcess) -> float:
    """Sequences open in the chat engine (the metric counts the engine's open requests)."""
    text = server.get("/metrics").text
    match = re.search(r'^ovms_generation_requests_active\{model="chat",version="1"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_generation_beyond_the_queue_bound_gets_429(models: Path, tmp_path: Path) -> None:
    server = start_server(models, tmp_path, {"max_num_seqs": 1, "max_queued_requests": 1})
    body = {"model": "chat", "messages": HI, "stream": True, "max_tokens": 200, "ignore_eos": True}
    (worker,) = server.worker_pids()
    results: dict[int, tuple[int, bytes]] = {}

    def chat(index: int) -> None:
        with requests.post(server.url("/v3/chat/completions"), json=body, stream=True, timeout=60) as response:
            results[index] = (response.status_code, response.content)

    # tiny-chat finishes 200 tokens in a fraction of a second: a stopped worker (admission is decided in the
    # server process) holds the first two requests open for as long as the test needs.
    os.kill(worker, signal.SIGSTOP)
    try:
        threads = [threading.Thread(target=chat, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        wait_for(lambda: _active(server) >= 2, timeout=30, what="two requests open in the engine")
        refused = requests.post(server.url("/v3/chat/completions"), json={**body, "stream": False}, timeout=30)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "queue_full"
        assert refused.headers.get("Retry-After")
        streamed = requests.post(server.url("/v3/chat/completions"), json=body, timeout=30)  # refused before headers
        assert streamed.status_code == 429 and streamed.json()["error"]["code"] == "queue_full"
        two = requests.post(server.url("/v3/chat/completions"), json={**body, "stream": False, "n": 2}, timeout=30)
        assert two.status_code == 429  # all n choices are admitted at once, or none
    finally:
        os.kill(worker, signal.SIGCONT)
    try:
        for thread in threads:
            thread.join(60)
        assert [results[i][0] for i in range(2)] == [200, 200]  # one running, one queued: neither refused
        assert all(b"[DONE]" in results[i][1] and b'"length"' in results[i][1] for i in range(2))
    finally:
        server.stop()
