"""Issue 8 at the edge, on the real server: bad or huge requests get a clear 4xx in their route's
envelope, fast, while the other clients running beside them are unharmed."""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests
from openai import OpenAI

from tests.e2e.harness import ServerProcess, active_generations, copy_model, wait_for

CHAT = "tiny-chat"
EMBED = "minilm"
HI = [{"role": "user", "content": "hi"}]
POST_ROUTES = ["/v3/chat/completions", "/v3/completions", "/v3/embeddings", "/v3/v1/embeddings", "/v3/rerank",
               "/v3/v1/rerank", "/v3/v2/rerank", "/v3/v1/embed", "/v3/v2/embed", "/v2/repository/index"]
COHERE_ROUTES = {"/v3/rerank", "/v3/v1/rerank", "/v3/v2/rerank", "/v3/v1/embed", "/v3/v2/embed"}


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("repository")
    copy_model(models / "tiny-chat", root / CHAT)
    copy_model(models / "minilm", root / EMBED)
    copy_model(models / "tiny-rerank", root / "tiny-rerank")
    staging = root.parent / "deadline-staging"
    shutil.copytree(models / "tiny-chat", staging)
    (staging / "config.json").write_text(json.dumps({"task": "text_generation", "request_timeout_s": 1}))
    copy_model(staging, root / "tiny-chat-deadline")
    process = ServerProcess(root, root.parent / "server.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)


def assert_envelope(route: str, response: requests.Response, status: int) -> dict:
    assert response.status_code == status, (route, response.status_code, response.text[:500])
    body = response.json()
    if route in COHERE_ROUTES:
        assert set(body) == {"message"}, body
    elif route.startswith("/v3"):
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
    else:
        assert set(body) == {"error"}, body
    assert "Traceback" not in response.text and "Error:" not in response.text
    return body


def stream_chat(server: ServerProcess, max_tokens: int) -> dict:
    """A raw SSE chat; returns the finish reason and the number of content deltas."""
    body = {"model": CHAT, "messages": HI, "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    finish, usage = None, None
    with requests.post(server.url("/v3/chat/completions"), json=body, stream=True, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            for choice in chunk["choices"]:
                finish = choice["finish_reason"] or finish
            usage = chunk.get("usage") or usage
    return {"finish_reason": finish, "completion_tokens": usage["completion_tokens"]}


# ------------------------------------------------------------------ 1. structured output


@pytest.mark.parametrize("schema", [{"type": "nonsense"}, "nested-300", {"const": 10**400},
                                    {"type": "integer", "minimum": 10**400, "maximum": 10**401},
                                    {"type": "integer", "maximum": 2**63}])
def test_bad_schema_is_a_400_while_three_streams_finish(server: ServerProcess, schema) -> None:
    if schema == "nested-300":
        schema = {"type": "integer"}
        for _ in range(300):
            schema = {"type": "object", "properties": {"a": schema}}
    with ThreadPoolExecutor(3) as pool:
        streams = [pool.submit(stream_chat, server, 200) for _ in range(3)]
        wait_for(lambda: any(s.running() for s in streams), what="streams running")
        started = time.monotonic()
        response = server.post("/v3/chat/completions", json={
            "model": CHAT, "messages": HI,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
        elapsed = time.monotonic() - started
        body = assert_envelope("/v3/chat/completions", response, 400)
        assert body["error"]["param"] == "response_format.json_schema"
        results = [s.result() for s in streams]
    assert results == [{"finish_reason": "length", "completion_tokens": 200}] * 3
    assert elapsed < 5, f"the schema check took {elapsed:.1f} s"


def test_tool_call_arguments_nested_too_deeply_are_400(server: ServerProcess) -> None:
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[" * 100_000}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "1"}]
    response = server.post("/v3/chat/completions", json={"model": CHAT, "messages": messages, "max_tokens": 2})
    body = assert_envelope("/v3/chat/completions", response, 400)
    assert body["error"]["param"] == "messages[1].tool_calls[0].function.arguments", body


# ------------------------------------------------------------------ 2. stop strings


def test_huge_and_long_stop_strings_are_400_and_the_worker_keeps_serving(server: ServerProcess,
                                                                         client: OpenAI) -> None:
    for stop in ["x" * 1_048_576, "y" * 300]:
        response = server.post("/v3/chat/completions", json={"model": CHAT, "messages": HI, "stop": stop})
        body = assert_envelope("/v3/chat/completions", response, 400)
        assert body["error"]["param"] == "stop"
        assert len(response.content) < 1000  # the stop string is not echoed
    answer = client.chat.completions.create(model=CHAT, messages=HI, timeout=30)
    assert answer.choices[0].finish_reason == "stop"
    # a stop string at the limit is still accepted
    client.chat.completions.create(model=CHAT, messages=HI, stop=["z" * 256], timeout=30)


# ------------------------------------------------------------------ 3. the event loop stays free


def test_health_answers_fast_while_huge_requests_are_rejected(server: ServerProcess) -> None:
    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with requests.Session() as session:
            while not done.is_set():
                started = time.perf_counter()
                assert session.get(server.url("/v2/health/live"), timeout=10).status_code == 200
                latencies.append(time.perf_counter() - started)

    huge = [
        ("/v3/embeddings", {"model": EMBED, "input": ["word"] * 100_000}, "input"),
        ("/v3/chat/completions", {"model": CHAT, "messages": HI * 100_000}, "messages"),
        ("/v3/completions", {"model": CHAT, "prompt": "word " * 2_000_000}, "prompt"),
        ("/v3/rerank", {"model": "tiny-rerank", "query": "q", "documents": ["d"] * 100_000}, None),
    ]
    thread = threading.Thread(target=probe)
    thread.start()
    try:
        # The same probes without huge requests first: the bound below is relative to this machine's
        # noise in this run (a shared 2-core machine), with 100 ms as the floor.
        wait_for(lambda: len(latencies) >= 100, what="health probes")
        idle = list(latencies)
        latencies.clear()
        for route, body, param in huge:
            response = server.post(route, json=body)
            error = assert_envelope(route, response, 400)
            if param:
                assert error["error"]["param"] == param
        wait_for(lambda: len(latencies) >= 50, what="more health probes")
    finally:
        done.set()
        thread.join()
    p99, idle_p99 = (statistics.quantiles(sample, n=100)[98] for sample in (latencies, idle))
    # Floor 150 ms: receiving a 10-16 MB body on the event loop stalls one or two probes by ~115 ms
    # (seen twice in CI on this 2-core machine); parsing such bodies on the loop, the bug guarded here,
    # stalled them by 160 ms and more per request.
    bound = max(0.15, 3 * idle_p99)
    assert p99 < bound, f"health p99 {p99 * 1000:.0f} ms over {len(latencies)} probes (idle p99 {idle_p99 * 1000:.0f} ms)"
    assert max(latencies) < max(0.5, 5 * max(idle)), f"one health check took {max(latencies) * 1000:.0f} ms"


# ------------------------------------------------------------------ 4. Unicode


@pytest.mark.parametrize("route,body", [
    ("/v3/embeddings", {"model": EMBED, "input": "\ud800"}),
    ("/v3/embeddings", {"model": EMBED, "input": ["fine", "bad \udfff"]}),
    ("/v3/v1/embed", {"model": EMBED, "texts": ["\ud800"]}),
    ("/v3/v2/embed", {"model": EMBED, "texts": ["\ud800"], "input_type": "search_document",
                      "embedding_types": ["float"]}),
    ("/v3/chat/completions", {"model": CHAT, "messages": [{"role": "user", "content": "\ud800"}]}),
    ("/v3/rerank", {"model": "tiny-rerank", "query": "\ud800", "documents": ["a"]}),
])
def test_lone_surrogates_are_400(server: ServerProcess, route: str, body: dict) -> None:
    raw = json.dumps(body).encode()  # json.dumps escapes the surrogate: valid JSON, invalid text
    response = server.post(route, data=raw, headers={"content-type": "application/json"})
    assert_envelope(route, response, 400)


def test_poisoned_embedding_request_leaves_thirty_good_ones_unharmed(server: ServerProcess) -> None:
    poisoned = json.dumps({"model": EMBED, "input": ["fine", "\ud800"]}).encode()

    def good(i: int) -> int:
        return requests.post(server.url("/v3/embeddings"), json={"model": EMBED, "input": [f"request {i}", "x"]},
                             timeout=60).status_code

    def bad() -> int:
        return requests.post(server.url("/v3/embeddings"), data=poisoned, timeout=60,
                             headers={"content-type": "application/json"}).status_code

    with ThreadPoolExecutor(8) as pool:
        goods = [pool.submit(good, i) for i in range(30)]
        bads = [pool.submit(bad) for _ in range(5)]
        assert [f.result() for f in goods] == [200] * 30
        assert [f.result() for f in bads] == [400] * 5


# ------------------------------------------------------------------ 6. JSON shape


@pytest.mark.parametrize("route", POST_ROUTES)
def test_json_nested_ten_thousand_deep_is_400_on_every_post_route(server: ServerProcess, route: str) -> None:
    raw = b'{"model": "x", "deep": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    response = server.post(route, data=raw, headers={"content-type": "application/json"})
    assert_envelope(route, response, 400)


@pytest.mark.parametrize("route,body", [
    ("/v3/chat/completions", {"model": CHAT, "messages": HI, "n": 2.0, "max_tokens": 3.0}),
    ("/v3/completions", {"model": CHAT, "prompt": "hi", "max_tokens": 2.0, "seed": 1.0}),
    ("/v3/embeddings", {"model": EMBED, "input": "hello", "dimensions": 64.0}),
    ("/v3/completions", {"model": CHAT, "prompt": [5.0, 17.0], "max_tokens": 2}),  # token ids
    ("/v3/rerank", {"model": "tiny-rerank", "query": "q", "documents": ["a", "b"], "top_n": 1.0}),
    ("/v3/v2/embed", {"model": EMBED, "texts": ["a"], "input_type": "search_query", "embedding_types": ["float"],
                      "output_dimension": 64.0}),
])
def test_whole_floats_work_as_integers(server: ServerProcess, route: str, body: dict) -> None:
    response = server.post(route, json=body)
    assert response.status_code == 200, response.text[:300]


def test_fractional_integer_is_400(server: ServerProcess) -> None:
    response = server.post("/v3/chat/completions", json={"model": CHAT, "messages": HI, "n": 2.5})
    assert assert_envelope("/v3/chat/completions", response, 400)["error"]["param"] == "n"


# ------------------------------------------------------------------ 7. deadlines


def test_model_deadline_answers_504_and_cancels_the_engine_request(server: ServerProcess) -> None:
    """The workers are paused (SIGSTOP) so that no request can finish before its 1 s deadline, however
    fast tiny-chat runs (16 x 900 tokens once streamed in under a second)."""
    import os
    import signal

    model = "tiny-chat-deadline"  # config.json: request_timeout_s 1
    long = {"model": model, "messages": HI, "max_tokens": 900, "ignore_eos": True, "n": 16}
    workers = server.worker_pids()
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        response = server.post("/v3/chat/completions", json=long)
        body = assert_envelope("/v3/chat/completions", response, 504)
        assert body["error"]["code"] == "request_timeout"
        wait_for(lambda: active_generations(server, model) == 0, timeout=30, what="engine requests cancelled")
        # streaming: the deadline ends the stream with an error frame
        with requests.post(server.url("/v3/chat/completions"), json={**long, "stream": True}, stream=True,
                           timeout=60) as stream:
            frames = [json.loads(line[6:]) for line in stream.iter_lines()
                      if line.startswith(b"data: {")]
        assert frames[-1]["error"]["code"] == "request_timeout"
        wait_for(lambda: active_generations(server, model) == 0, timeout=30, what="stream's requests cancelled")
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    answer = server.post("/v3/chat/completions", json={"model": model, "messages": HI, "max_tokens": 5})
    assert answer.status_code == 200  # the deadline model still serves short requests


# ------------------------------------------------------------------ 9. model ids


@pytest.mark.parametrize("route", ["/v3/chat/completions", "/v3/embeddings", "/v3/v2/rerank"])
def test_megabyte_model_id_is_not_echoed(server: ServerProcess, route: str) -> None:
    body = {"model": "m" * 1_048_576, "messages": HI, "input": "x", "query": "q", "documents": ["d"]}
    response = server.post(route, json=body)
    assert_envelope(route, response, 400)
    assert len(response.content) < 1000
    long_id = "m" * 300
    response = server.get(f"/v3/models/{long_id}")
    assert response.status_code == 400 and len(response.content) < 1000


# ------------------------------------------------------------------ 11. nothing silently ignored


def test_cohere_v2_max_tokens_is_honoured_or_refused(server: ServerProcess) -> None:
    base = {"model": EMBED, "texts": ["hello"], "input_type": "search_query", "embedding_types": ["float"]}
    assert server.post("/v3/v2/embed", json={**base, "max_tokens": 512}).status_code == 200
    response = server.post("/v3/v2/embed", json={**base, "max_tokens": 8})
    assert assert_envelope("/v3/v2/embed", response, 400)["message"].startswith("max_tokens")


# ------------------------------------------------------------------ memory stays bounded


def test_body_over_the_limit_is_413_from_content_length(server: ServerProcess) -> None:
    """Only the headers are sent: the answer must come from the Content-Length alone."""
    import socket

    for route, key in (("/v3/embeddings", b'"error"'), ("/v3/v1/embed", b'"message"')):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {16 * 1024 * 1024 + 1}\r\n\r\n".encode())
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert key in answer


def test_rss_returns_after_a_burst_of_rejected_huge_requests(server: ServerProcess) -> None:
    def rejected(i: int) -> int:
        if i % 2:
            raw = json.dumps({"model": EMBED, "input": "x" * (12 * 1024 * 1024)}).encode()  # parsed, then 400
        else:
            raw = json.dumps({"model": EMBED, "input": ["x"] * 400_000}).encode()  # too many items: 400
        return requests.post(server.url("/v3/embeddings"), data=raw, timeout=120,
                             headers={"content-type": "application/json"}).status_code

    server.post("/v3/embeddings", json={"model": EMBED, "input": "warm"})
    before = server.rss_mb()
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(rejected, range(16)))
    assert statuses == [400] * 16
    after = server.rss_mb()
    assert after <= before * 1.2, f"RSS {before:.0f} MB -> {after:.0f} MB"


def test_openai_client_sees_bad_request_not_server_error(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=CHAT, messages=HI, stop=["s" * 300])


def test_a_request_larger_than_the_whole_queue_is_400_not_429(server: ServerProcess, client: OpenAI) -> None:
    """6 prompts x n = 16 is 96 sequences, more than the engine ever admits (16 running + 64 queued by
    default): retrying cannot help, so it is a 400 naming n, not a 429 the SDKs retry for nothing.
    (Which param is named when the prompts alone are too many: tests/unit/test_admission.py.)"""
    response = requests.post(server.url("/v3/completions"), timeout=30,
                             json={"model": CHAT, "prompt": ["hi"] * 6, "n": 16, "max_tokens": 2})
    body = assert_envelope("/v3/completions", response, 400)
    assert body["error"]["param"] == "n" and "96" in body["error"]["message"], body
    assert "Retry-After" not in response.headers
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=CHAT, prompt=["hi"] * 6, n=16, max_tokens=2)
    small = client.completions.create(model=CHAT, prompt=["hi"] * 2, n=2, max_tokens=2)
    assert len(small.choices) == 4


def test_unary_generation_running_past_sixty_seconds_completes(server: ServerProcess) -> None:
    """Sanic cut every response at 60 s with a 500. The request is made to outlast that for real: its
    worker is paused (SIGSTOP) from before the request until 62 s after it, well under the 120 s stall
    timeout (16 x 900 tiny-chat tokens take well under a second: a worker stopped after the request
    started could finish them first)."""
    import os
    import signal

    body = {"model": CHAT, "messages": HI, "max_tokens": 900, "ignore_eos": True, "n": 16}
    workers = server.worker_pids()
    with ThreadPoolExecutor(1) as pool:
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            future = pool.submit(requests.post, server.url("/v3/chat/completions"), json=body, timeout=300)
            # counted by the server when it hands the sequences to the worker: no worker step needed
            wait_for(lambda: active_generations(server, CHAT) > 0, timeout=30, what="generation admitted")
            time.sleep(62)  # the subject of the test: wall-clock time passing while the request is open
            assert not future.done() and active_generations(server, CHAT) > 0  # still generating at 60 s+
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        response = future.result()
        elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text[:300]
    assert elapsed > 60
    choices = response.json()["choices"]
    assert len(choices) == 16 and {c["finish_reason"] for c in choices} == {"length"}


def test_concurrent_prompt_preparation_never_deadlocks(models: Path, tmp_path: Path) -> None:
    """Prompts are templated and tokenized on worker threads; two threads inside one openvino_genai
    Tokenizer deadlocked the whole server (a fresh server's first burst of 8 chats hung about 1 time in 3).
    Eight fresh servers' first bursts must all finish."""
    copy_model(models / "tiny-chat", tmp_path / "repository" / CHAT)
    for attempt in range(8):
        fresh = ServerProcess(tmp_path / "repository", tmp_path / f"server{attempt}.log").start()
        start = threading.Barrier(8)

        def chat(i: int) -> int:
            start.wait(timeout=30)
            body = {"model": CHAT, "messages": [{"role": "user", "content": f"hi {i}"}], "max_tokens": 20,
                    "stream": True}
            with requests.post(fresh.url("/v3/chat/completions"), json=body, stream=True, timeout=20) as response:
                assert b"[DONE]" in response.content
                return response.status_code

        try:
            with ThreadPoolExecutor(8) as pool:
                assert list(pool.map(chat, range(8))) == [200] * 8, f"attempt {attempt}"
        finally:
            fresh.stop()


def test_repository_index_wants_a_boolean_ready(server: ServerProcess) -> None:
    response = server.post("/v2/repository/index", json={"ready": "yes"})
    assert assert_envelope("/v2/repository/index", response, 400)["error"].startswith("Invalid type for 'ready'")
    assert server.post("/v2/repository/index", json={"ready": True}).status_code == 200
