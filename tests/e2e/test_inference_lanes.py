"""A model compiled with several inference streams (PERFORMANCE_HINT THROUGHPUT, NUM_STREAMS) runs
several batches at once, one per lane (server/pipelines/lanes.py); with the default LATENCY hint it
keeps one. Before lanes, such a model ran one batch at a time on one stream: half the CPU on 2 cores."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import cohere
import numpy as np
import openvino as ov
import pytest
from openai import AsyncOpenAI

from server.pipelines import ir
from server.pipelines.embeddings import EmbeddingRunner, TextEmbedder
from server.pipelines.lanes import lane_count
from server.pipelines.rerank import CrossEncoderScorer
from server.pipelines.settings import EmbeddingSettings, PipelineSpec, RerankSettings
from tests.e2e.harness import ServerProcess, copy_model, copy_model_with_config

TIMEOUT = 30
# The CPU plugin gives a model at most one stream per core: on one core NUM_STREAMS 2 is one stream.
pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two inference streams need two cores")
STREAMS = {"NUM_STREAMS": 2}
SENTENCES = [f"sentence number {i} about {topic}" for i, topic in
             enumerate(["cats", "rain", "trains", "bread", "stars", "rivers", "music", "chess"] * 4)]


class MeetingRequest:
    """An infer request whose inference waits until `barrier.parties` inferences are inside at once."""

    def __init__(self, request: ov.InferRequest, barrier: threading.Barrier) -> None:
        self._request, self._barrier = request, barrier

    def infer(self, inputs):
        self._barrier.wait()  # raises BrokenBarrierError after its timeout if the others never come
        return self._request.infer(inputs)


def meet_in_pool(pool, parties: int) -> threading.Barrier:
    barrier = threading.Barrier(parties, timeout=TIMEOUT)
    requests = [pool._free.get() for _ in range(pool.lanes)]
    for request in requests:
        pool._free.put(MeetingRequest(request, barrier))
    return barrier


def test_lane_counts_follow_the_streams(models: Path) -> None:
    model = ir.core().read_model(models / "minilm" / "1" / ir.MODEL_XML)
    assert lane_count(ir.core().compile_model(model, "CPU", {})) == 1
    assert lane_count(ir.core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})) == 1
    assert lane_count(ir.core().compile_model(model, "CPU", STREAMS)) == 4


def test_embedding_runner_infers_on_two_streams_at_once(models: Path) -> None:
    path = models / "minilm" / "1"
    settings = EmbeddingSettings(pooling="mean")
    streamed = EmbeddingRunner(path, PipelineSpec.from_mapping("embeddings", {"pooling": "mean"}, plugin_config=STREAMS),
                               pooling="mean", normalize=True, max_length=512)
    single = EmbeddingRunner(path, PipelineSpec(task="embeddings", settings=settings),
                             pooling="mean", normalize=True, max_length=512)
    assert (streamed.lanes, single.lanes) == (4, 1)
    meet_in_pool(streamed._requests, 2)
    halves = [SENTENCES[:16], SENTENCES[16:]]
    results: list = [None, None]

    def run(i: int) -> None:
        results[i] = streamed.run(halves[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    ours = np.stack([vector for half in results for vector, _ in half])
    reference = np.stack([vector for vector, _ in single.run(SENTENCES)])
    assert ours.shape == reference.shape
    assert ((ours * reference).sum(axis=1)).min() > 0.9995  # unit vectors: cosine
    streamed.close()
    single.close()


def test_cross_encoder_scores_on_two_streams_at_once(models: Path) -> None:
    path = models / "tiny-rerank" / "1"
    streamed = CrossEncoderScorer(path, PipelineSpec(task="rerank", settings=RerankSettings(), plugin_config=STREAMS),
                                  "tiny-rerank:1")
    single = CrossEncoderScorer(path, PipelineSpec(task="rerank", settings=RerankSettings()), "tiny-rerank:1")
    assert streamed.batcher._lanes == 4 and single.batcher._lanes == 1
    meet_in_pool(streamed._requests, 2)
    pairs = [("which animal", text) for text in SENTENCES]
    results: list = [None, None]

    def run(i: int) -> None:
        results[i] = streamed._score_batch(pairs[i * 16:(i + 1) * 16])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert np.allclose(results[0] + results[1], single._score_batch(pairs), atol=5e-3)
    streamed.close()
    single.close()


async def test_the_embedder_batcher_runs_two_batches_on_two_streams_at_once(models: Path) -> None:
    """Through the micro-batcher, as requests reach it: two requests of 16 texts become four batches on
    four lanes, and two of them are inside infer() at the same time (one lane would never get there)."""
    path = models / "minilm" / "1"
    spec = PipelineSpec.from_mapping("embeddings", {"pooling": "mean"}, plugin_config=STREAMS)
    embedder = TextEmbedder(path, spec, pooling="mean", normalize=True, max_length=512, max_batch_size=32,
                            batch_wait_ms=0, name="minilm-streams:1")
    assert embedder.batcher._lanes == 4
    meet_in_pool(embedder._runner._requests, 2)
    single = EmbeddingRunner(path, PipelineSpec.from_mapping("embeddings", {"pooling": "mean"}),
                             pooling="mean", normalize=True, max_length=512)
    (first, _), (second, _) = await asyncio.wait_for(
        asyncio.gather(embedder.embed(SENTENCES[:16]), embedder.embed(SENTENCES[16:])), TIMEOUT)
    reference = np.stack([vector for vector, _ in single.run(SENTENCES)])
    assert ((np.stack(first + second) * reference).sum(axis=1)).min() > 0.9995
    embedder.close()
    single.close()


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lanes-repository")
    copy_model(models / "minilm", root / "minilm")
    copy_model(models / "tiny-rerank", root / "tiny-rerank")
    for name, source, config in (
        ("minilm-streams", "minilm", {"task": "embeddings", "embeddings": {"pooling": "mean"}, "plugin_config": STREAMS}),
        ("tiny-rerank-streams", "tiny-rerank", {"task": "rerank", "plugin_config": {"PERFORMANCE_HINT": "THROUGHPUT"}}),
    ):
        copy_model_with_config(models / source, root / name, config)
    process = ServerProcess(root, root.parent / "server.log").start()
    yield process
    process.stop()
    assert "Traceback" not in (root.parent / "server.log").read_text()


async def test_concurrent_clients_of_a_streamed_model_get_their_own_vectors(server: ServerProcess) -> None:
    """32 concurrent OpenAI clients on the 2-stream model, and 8 on the default one beside them: every
    vector matches what the default model answers for the same text alone."""
    client = AsyncOpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)
    reference = await client.embeddings.create(model="minilm", input=SENTENCES)
    expected = np.array([item.embedding for item in reference.data])

    async def one(model: str, i: int) -> tuple[int, list[float]]:
        response = await client.embeddings.create(model=model, input=SENTENCES[i])
        return i, response.data[0].embedding

    answers = await asyncio.wait_for(asyncio.gather(
        *(one("minilm-streams", i) for i in range(32)), *(one("minilm", i) for i in range(8))), TIMEOUT)
    for i, vector in answers:
        assert float(np.dot(vector, expected[i])) > 0.9995, i
    bulk = await client.embeddings.create(model="minilm-streams", input=SENTENCES * 3)  # shared by the lanes
    assert [item.index for item in bulk.data] == list(range(96))
    got = np.array([item.embedding for item in bulk.data])
    assert ((got * np.tile(expected, (3, 1))).sum(axis=1)).min() > 0.9995
    await client.close()


def test_concurrent_rerank_on_a_throughput_model_matches_the_default(server: ServerProcess) -> None:
    co = cohere.ClientV2(base_url=server.url("/v3"), api_key="unused")
    documents = SENTENCES[:12]
    expected = {r.index: r.relevance_score for r in
                co.rerank(model="tiny-rerank", query="which animal", documents=documents).results}

    def scores(_: int) -> dict[int, float]:
        response = co.rerank(model="tiny-rerank-streams", query="which animal", documents=documents)
        return {r.index: r.relevance_score for r in response.results}

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        for got in pool.map(scores, range(16)):
            assert got.keys() == expected.keys()
            assert max(abs(got[i] - expected[i]) for i in expected) < 5e-3
