"""The status tells the truth during changes, on the real server: a serving version stays ready and
listed while it reloads, listing never fails while a worker is dead, and an explicit unload answers
while a stream still drains."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests
from openai import OpenAI

from tests.e2e.harness import ServerProcess, copy_model, running_server, wait_for

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("repository")
    # tiny-rerank is the only rerank model here: Cohere's default
    with running_server(root, {"chat": models / "tiny-chat", "reranker": models / "tiny-rerank"}) as process:
        yield process


def _log_time(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def _loaded(server: ServerProcess, model: str) -> list[dict]:
    return [e for e in server.log_events("model_version_transition")
            if e["model"] == model and e["to"] == "AVAILABLE" and e["reason"] == "loaded"]


class Sampler:
    """Every 50 ms: readiness of each model, the /v3/models list and a Cohere rerank without `model`."""

    def __init__(self, server: ServerProcess, models: list[str]) -> None:
        self._server, self._models = server, models
        self.samples: list[tuple[float, str, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            now = time.time()
            for model in self._models:
                self.samples.append((now, f"ready {model}", session.get(self._server.url(f"/v2/models/{model}/ready")).status_code))
            listed = session.get(self._server.url("/v3/models"))
            ids = sorted(m["id"] for m in listed.json()["data"]) if listed.status_code == 200 else listed.status_code
            self.samples.append((now, "listed", ids))
            rerank = session.post(self._server.url("/v3/v1/rerank"), json={"query": "q", "documents": ["a", "b"]})
            self.samples.append((now, "default rerank model", rerank.status_code))
            self._stop.wait(0.05)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def bad(self, expected_ids: list[str]) -> list:
        good = {"listed": expected_ids}
        return [s for s in self.samples if s[2] != good.get(s[1], 200)]

    def during(self, start: float, end: float) -> int:
        return len([s for s in self.samples if start <= s[0] <= end])


def _reload_window(server: ServerProcess, model: str, after: float) -> tuple[float, float]:
    starts = [_log_time(e) for e in server.log_events("model_version_reloading") if e["model"] == model]
    start = min(t for t in starts if t >= after)
    end = min(_log_time(e) for e in _loaded(server, model) if _log_time(e) >= start)
    return start, end


def test_a_serving_version_stays_ready_and_listed_while_it_reloads(server: ServerProcess) -> None:
    models = ["chat", "reranker"]
    begin = time.time()
    with Sampler(server, models) as sampler:
        # A pipeline setting edited in config.json reloads each model (load-then-swap) ...
        for model, config in (("chat", {"task": "text_generation", "text_generation": {"max_num_seqs": 4}}),
                              ("reranker", {"task": "rerank", "rerank": {"max_length": 256}})):
            loads = len(_loaded(server, model))
            (server.repository / model / "config.json").write_text(json.dumps(config))
            wait_for(lambda: len(_loaded(server, model)) > loads, timeout=120, what=f"{model} reloaded")
        # ... and so does an explicit load.
        for model in models:
            loads = len(_loaded(server, model))
            assert server.post(f"/v2/repository/models/{model}/load").status_code == 200
            assert len(_loaded(server, model)) > loads
        taken = len(sampler.samples)
        wait_for(lambda: len(sampler.samples) > taken + 3 * (len(models) + 2), what="samples after the last reload")
    assert sampler.bad(["chat", "reranker"]) == []
    for model in models:
        start, end = _reload_window(server, model, begin)
        assert sampler.during(start, end) > 0, f"no sample fell inside {model}'s reload"
    assert server.version_states("chat") == {"1": "AVAILABLE"}


def test_the_index_shows_a_pending_reload_as_a_reason_on_a_ready_version(server: ServerProcess) -> None:
    """SIGSTOP holds the new chat worker's build, so the reload is pending for as long as the test needs."""
    loads = len(_loaded(server, "chat"))
    known = set(server.worker_pids())
    (server.repository / "chat" / "config.json").write_text(
        json.dumps({"task": "text_generation", "text_generation": {"max_num_seqs": 2}}))
    (new_worker,) = wait_for(lambda: [p for p in server.worker_pids() if p not in known], timeout=60,
                             what="the reload's worker process")
    os.kill(new_worker, signal.SIGSTOP)
    try:
        entry = wait_for(lambda: (e := server.index()[("chat", "1")])["reason"] and e, what="pending reason")
        assert entry["state"] == "READY" and "reloading" in entry["reason"]
        assert server.get("/v2/models/chat/ready").status_code == 200
        reply = OpenAI(base_url=server.url("/v3"), api_key="unused").chat.completions.create(model="chat", messages=HI)
        assert reply.choices[0].message.content
    finally:
        os.kill(new_worker, signal.SIGCONT)
    wait_for(lambda: len(_loaded(server, "chat")) > loads, timeout=120, what="chat reloaded")
    assert server.index()[("chat", "1")] == {"name": "chat", "version": "1", "state": "READY", "reason": ""}


def test_listing_never_fails_while_a_worker_is_dead(server: ServerProcess) -> None:
    # The reloads above released their old workers in the background: wait until only chat's serving one is left.
    (worker,) = wait_for(lambda: pids if len(pids := server.worker_pids()) == 1 else None, what="one worker")
    loads = len(_loaded(server, "chat"))
    os.kill(worker, signal.SIGKILL)
    statuses = []
    while len(_loaded(server, "chat")) == loads:
        statuses.append(server.get("/v3/models").status_code)
        statuses.append(server.get("/v1/config").status_code)
        assert len(statuses) < 20_000, "chat never reloaded"
    assert set(statuses) == {200}
    assert server.log_events("model_version_broken")
    server.wait_states("chat", {"1": "AVAILABLE"})


def test_unload_answers_while_a_stream_drains_and_the_stream_finishes(server: ServerProcess, models: Path) -> None:
    known = set(server.worker_pids())
    copy_model(models / "tiny-chat", server.repository / "draining")
    server.wait_states("draining", {"1": "AVAILABLE"})
    (draining_worker,) = [p for p in server.worker_pids() if p not in known]
    client = OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)
    # Stopped before the request (its first chunk, the role, comes from the server alone): the stream
    # cannot finish before the unload answers.
    os.kill(draining_worker, signal.SIGSTOP)
    try:
        stream = client.chat.completions.create(model="draining", messages=HI, stream=True, max_tokens=200,
                                                extra_body={"ignore_eos": True})
        chunks = iter(stream)
        next(chunks)
        started = time.monotonic()
        response = server.post("/v2/repository/models/draining/unload")
        assert response.status_code == 200
        assert time.monotonic() - started < 10
        assert server.index()[("draining", "1")]["state"] == "UNLOADING"
        assert server.get("/v2/models/draining/ready").status_code == 503
        assert "draining" not in [m["id"] for m in server.get("/v3/models").json()["data"]]
    finally:
        os.kill(draining_worker, signal.SIGCONT)
    rest = list(chunks)
    assert rest[-1].choices[0].finish_reason == "length"
    server.wait_states("draining", {"1": "END"})
