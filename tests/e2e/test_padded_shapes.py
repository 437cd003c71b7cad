"""Embedding and rerank inferences run on a bounded set of padded shapes (server/pipelines/shapes.py),
and the padding changes no result: real test models, in-process, against TextEmbeddingPipeline."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import openvino_genai as ov_genai
import pytest

from server.pipelines import shapes
from server.pipelines.embeddings import EmbeddingRunner
from server.pipelines.rerank import CrossEncoderScorer
from server.pipelines.settings import EmbeddingSettings, PipelineSpec, RerankSettings

WORDS = "the quick brown fox jumps over a lazy dog while models serve tokens ünïcødé 東京 🙂".split()


class ShapeRecorder:
    """An infer request that notes the shape of every inference it runs."""

    def __init__(self, request) -> None:
        self._request = request
        self.shapes: list[tuple[int, ...]] = []

    def infer(self, inputs: dict[str, np.ndarray]):
        self.shapes.append(next(iter(inputs.values())).shape)
        return self._request.infer(inputs)


def record_shapes(pool) -> ShapeRecorder:
    """Wraps the only infer request of a runner's pool (one lane: OpenVINO's default LATENCY hint)."""
    assert pool.lanes == 1
    recorder = ShapeRecorder(pool._free.get())
    pool._free.put(recorder)
    return recorder


def random_batches(count: int, *, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [[" ".join(rng.choices(WORDS, k=rng.randint(1, 60))) for _ in range(rng.randint(1, 32))]
            for _ in range(count)]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("pooling", ["mean", "cls", "last_token"])
def test_embeddings_match_text_embedding_pipeline(models: Path, pooling: str) -> None:
    path = models / "minilm" / "1"
    config = ov_genai.TextEmbeddingPipeline.Config()
    config.pooling_type = getattr(ov_genai.TextEmbeddingPipeline.PoolingType, pooling.upper())
    config.normalize, config.max_length = True, 512
    reference = ov_genai.TextEmbeddingPipeline(str(path), "CPU", config)
    runner = EmbeddingRunner(path, PipelineSpec(task="embeddings", settings=EmbeddingSettings()),
                             pooling=pooling, normalize=True, max_length=512)
    for texts in random_batches(6, seed=1):
        ours = np.stack([vector for vector, _ in runner.run(texts)])
        theirs = np.asarray(reference.embed_documents(texts))
        # bf16 kernels differ slightly between shapes, as they already did between batch compositions
        assert cosines(ours, theirs).min() > 0.9995


def test_token_counts_are_untruncated(models: Path) -> None:
    path = models / "minilm" / "1"
    runner = EmbeddingRunner(path, PipelineSpec(task="embeddings", settings=EmbeddingSettings()),
                             pooling="mean", normalize=True, max_length=16)
    tokenizer = ov_genai.Tokenizer(str(path))
    texts = ["short", " ".join(["word"] * 40)]
    counts = [count for _, count in runner.run(texts)]
    assert counts == [len(tokenizer.encode(text).input_ids.data[0]) for text in texts]
    assert counts[1] > 16


def test_embedding_shapes_are_bounded(models: Path) -> None:
    path = models / "minilm" / "1"
    runner = EmbeddingRunner(path, PipelineSpec(task="embeddings", settings=EmbeddingSettings()),
                             pooling="mean", normalize=True, max_length=512)
    recorder = record_shapes(runner._requests)
    batches = random_batches(150, seed=2)
    raw = set()
    tokenizer = ov_genai.Tokenizer(str(path))
    for texts in batches:
        assert len(runner.run(texts)) == len(texts)
        raw.add(tokenizer.encode(texts).input_ids.data.shape)
    seen = set(recorder.shapes)
    widths = {shape[1] for shape in seen}
    assert all(shapes.padded_width(width, 512) == width for width in widths)
    assert {shape[0] for shape in seen} <= {shapes.padded_rows(n) for n in range(1, 33)}
    assert len(seen) <= 16 * len(widths) and len(seen) < len(raw) / 2, (len(seen), len(raw))


def test_rerank_padding_changes_no_score(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = models / "tiny-rerank" / "1"
    spec = PipelineSpec(task="rerank", settings=RerankSettings())
    scorer = CrossEncoderScorer(path, spec, "tiny-rerank:1")
    recorder = record_shapes(scorer._requests)
    pairs = [("which fox", text) for text in random_batches(1, seed=3)[0][:9]]
    padded = scorer._score_batch(pairs)
    assert recorder.shapes[-1][0] == shapes.padded_rows(len(pairs))
    width = recorder.shapes[-1][1]
    assert shapes.padded_width(width, scorer.max_length) == width and width % shapes.MIN_WIDTH_STEP == 0
    monkeypatch.setattr(shapes, "pad_batch", lambda arrays, **_: arrays)
    exact = scorer._score_batch(pairs)
    assert recorder.shapes[-1][0] == len(pairs)
    assert np.allclose(padded, exact, atol=5e-3)
    scorer.close()
