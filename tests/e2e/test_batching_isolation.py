"""Micro-batching on the real server: one request's bad input or size never costs its batch-mates,
empty rerank documents answer, and a request beyond the queue bound is refused at once."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.e2e.harness import ServerProcess, running_server


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("batching-repository")
    staging = root / ".tiny-rerank-queue"
    shutil.copytree(models / "tiny-rerank", staging)
    (staging / "config.json").write_text(json.dumps({"task": "rerank", "rerank": {"max_queued_items": 4}}))
    staging.rename(root / "tiny-rerank-queue")
    with running_server(root, {"tiny-rerank": models / "tiny-rerank", "tiny-embed": models / "tiny-embed"}) as process:
        yield process


def test_empty_documents_are_ranked(server: ServerProcess) -> None:
    body = {"model": "tiny-rerank", "query": "0", "documents": ["", ""], "max_tokens_per_doc": 1}
    response = requests.post(server.url("/v3/rerank"), json=body, timeout=30)  # hung forever before
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1]
    assert results[0]["relevance_score"] == results[1]["relevance_score"]


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v3/embeddings", '{"model": "tiny-embed", "input": ["fine", "\\ud800"]}', "input"),
    ("/v3/rerank", '{"model": "tiny-rerank", "query": "q", "documents": ["fine", "\\ud800"]}', "documents"),
])
def test_a_bad_input_fails_alone_beside_concurrent_requests(server: ServerProcess, path: str, body: str,
                                                           param: str) -> None:
    good = 90
    barrier = threading.Barrier(good + 1, timeout=30)  # all requests leave together, to share batches

    def send(data: str) -> requests.Response:
        barrier.wait()
        return requests.post(server.url(path), data=data, headers={"Content-Type": "application/json"}, timeout=60)

    good_body = body.replace('"\\ud800"', '"also fine"')
    with ThreadPoolExecutor(good + 1) as pool:
        futures = [pool.submit(send, good_body) for _ in range(good)] + [pool.submit(send, body)]
        responses = [f.result(timeout=90) for f in futures]
    bad = responses.pop()
    assert bad.status_code == 400, bad.text
    assert [r.status_code for r in responses] == [200] * good
    if path == "/v3/embeddings":  # the edge names the item (input[1]); the batcher, the field
        assert bad.json()["error"]["param"].startswith(param)


def test_a_request_larger_than_the_whole_queue_is_413_at_once(server: ServerProcess) -> None:
    """(429 for a queue that others filled is tested on the batcher itself: tests/unit/test_batching.py.)"""
    body = {"model": "tiny-rerank-queue", "query": "q", "documents": ["a", "b", "c", "d", "e"]}
    response = requests.post(server.url("/v3/rerank"), json=body, timeout=30)
    assert response.status_code == 413, response.text
    assert set(response.json()) == {"message"}
    fits = requests.post(server.url("/v3/rerank"), json={**body, "documents": ["a", "b"]}, timeout=30)
    assert fits.status_code == 200 and len(fits.json()["results"]) == 2
