"""SIGTERM: the server stops accepting, lets in-flight streams finish (up to --shutdown-timeout), and
exits 0. The generation worker is SIGSTOPped while the signal arrives, so the stream is in flight by
construction, not by luck."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Iterator

import pytest
import requests
from openai import OpenAI

from tests.e2e.harness import ServerProcess, copy_model, wait_for

HI = [{"role": "user", "content": "hi"}]


def _start(models: Path, tmp_path: Path, timeout: float) -> ServerProcess:
    root = tmp_path / "repository"
    copy_model(models / "tiny-chat", root / "chat")
    return ServerProcess(root, tmp_path / "server.log", extra_args=("--shutdown-timeout", str(timeout))).start()


def _refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _held_stream(server: ServerProcess, worker: int, max_tokens: int) -> Iterator:
    """A chat stream past its first chunk, its worker SIGSTOPped before the request: in flight until
    SIGCONT. The first chunk (the role) comes from the server before the worker sees the request; a
    worker stopped only after it could finish a short stream first."""
    client = OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)
    os.kill(worker, signal.SIGSTOP)
    try:
        chunks = iter(client.chat.completions.create(model="chat", messages=HI, stream=True, max_tokens=max_tokens,
                                                     extra_body={"ignore_eos": True}))
        next(chunks)
    except BaseException:
        os.kill(worker, signal.SIGCONT)
        raise
    return chunks


def test_sigterm_lets_a_live_stream_finish_then_exits_0(models: Path, tmp_path: Path) -> None:
    server = _start(models, tmp_path, timeout=60)
    try:
        (worker,) = server.worker_pids()
        chunks = _held_stream(server, worker, max_tokens=100)
        try:
            server.process.send_signal(signal.SIGTERM)
            wait_for(lambda: server.log_events("shutdown_started"), what="the shutdown to start")
            wait_for(lambda: _refuses_connections(server.port), what="the listener closed")
            assert server.process.poll() is None  # still running: the stream is in flight
        finally:
            os.kill(worker, signal.SIGCONT)
        rest = list(chunks)
        assert rest[-1].choices[0].finish_reason == "length"
        text = "".join(c.choices[0].delta.content or "" for c in rest if c.choices)
        assert text  # the tokens kept coming after SIGTERM
        assert server.process.wait(timeout=60) == 0
        wait_for(lambda: not server.worker_pids(), what="the worker gone")
    finally:
        server.stop()
    assert "Traceback" not in server.log_path.read_text()


def test_readiness_answers_503_during_shutdown_on_an_open_connection(models: Path, tmp_path: Path) -> None:
    server = _start(models, tmp_path, timeout=60)
    try:
        (worker,) = server.worker_pids()
        session = requests.Session()
        chunks = _held_stream(server, worker, max_tokens=50)
        try:
            assert session.get(server.url("/v2/health/ready")).status_code == 200
            server.process.send_signal(signal.SIGTERM)
            wait_for(lambda: server.log_events("shutdown_started"), what="the shutdown to start")
            try:  # a kept-alive connection either hears 503 or is closed: never 200
                status = session.get(server.url("/v2/health/ready"), timeout=10).status_code
            except requests.ConnectionError:
                status = None
            assert status in (503, None)
        finally:
            os.kill(worker, signal.SIGCONT)
        assert list(chunks)[-1].choices[0].finish_reason == "length"
        assert server.process.wait(timeout=60) == 0
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_a_stream_longer_than_the_shutdown_timeout_is_cut_and_the_server_still_exits_0(models: Path,
                                                                                      tmp_path: Path) -> None:
    server = _start(models, tmp_path, timeout=1)
    (worker,) = server.worker_pids()
    try:
        chunks = _held_stream(server, worker, max_tokens=100)  # never resumed before the deadline
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=90) == 0
        with pytest.raises(Exception):
            list(chunks)  # the connection was closed at the deadline
    finally:
        try:
            os.kill(worker, signal.SIGCONT)
        except ProcessLookupError:
            pass
        server.stop()


def test_sigterm_while_a_generation_worker_is_still_loading_exits_promptly(models: Path, tmp_path: Path) -> None:
    """A load under way (here a worker SIGSTOPped while it builds its pipeline: compiling a large model
    takes minutes) held the exit until it ended, up to the 600 s start timeout: Kubernetes then kills
    the pod. The server stops such workers at shutdown; their load is discarded anyway."""
    root = tmp_path / "repository"
    root.mkdir()
    server = ServerProcess(root, tmp_path / "server.log",
                           extra_args=("--shutdown-timeout", "5", "--load-workers", "1")).start()
    worker = None
    try:
        copy_model(models / "tiny-chat", root / "chat-a")
        copy_model(models / "tiny-chat", root / "chat-b")  # queued behind chat-a's load (one load worker)
        (worker,) = wait_for(server.worker_pids, what="the worker being started")
        os.kill(worker, signal.SIGSTOP)  # its pipeline is never built now
        assert [server.version_states(m) for m in ("chat-a", "chat-b")] == [{"1": "LOADING"}] * 2
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0  # a bound only: it exits as soon as the worker is gone
        assert not os.path.exists(f"/proc/{worker}") or open(f"/proc/{worker}/stat").read().split()[2] == "Z"
        assert server.log_events("loads_abandoned") and not server.log_events("model_load_failed")
        assert len(server.log_events("generation_worker_ready")) == 0
    finally:
        if worker is not None:
            try:
                os.kill(worker, signal.SIGCONT)
            except ProcessLookupError:
                pass
        server.stop()
