"""embeddings: a TextEmbeddingPipeline per loaded version, fed by a micro-batcher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino_genai as ov_genai

from server.pipelines.base import ModelMetadata
from server.pipelines.batching import MicroBatcher
from server.pipelines.settings import EmbeddingSettings, PipelineSpec
from server.pipelines.tokenizers import SharedTokenizer

POOLING = {
    "cls": ov_genai.TextEmbeddingPipeline.PoolingType.CLS,
    "mean": ov_genai.TextEmbeddingPipeline.PoolingType.MEAN,
    "last_token": ov_genai.TextEmbeddingPipeline.PoolingType.LAST_TOKEN,
}


def embedding_pipeline(path: Path, spec: PipelineSpec, *, pooling: str, normalize: bool,
                       max_length: int) -> ov_genai.TextEmbeddingPipeline:
    pipeline_config = ov_genai.TextEmbeddingPipeline.Config()
    pipeline_config.pooling_type = POOLING[pooling]
    pipeline_config.normalize = normalize
    pipeline_config.max_length = max_length
    return ov_genai.TextEmbeddingPipeline(str(path), spec.device, pipeline_config, **spec.plugin_config)


def _read_vocabulary(tokenizer: ov_genai.Tokenizer, path: Path) -> list[str]:
    try:
        return list(tokenizer.get_vocab_vector())
    except RuntimeError:  # no detokenizer in the IR
        pass
    try:
        vocab = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
        if isinstance(vocab, dict):
            pieces = [""] * (max(vocab.values()) + 1)
            for piece, index in vocab.items():
                pieces[index] = piece
            return pieces
        return [entry[0] for entry in vocab]  # unigram: [[piece, score], ...]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass
    try:
        return (path / "vocab.txt").read_text().splitlines()
    except OSError:
        return []


class TextEmbedder:
    """Embeds texts in micro-batches. `tokenizer` serves request preparation (token ids, vocabulary) on
    worker threads off the event loop; the batch thread has a tokenizer of its own."""

    def __init__(self, path: Path, spec: PipelineSpec, *, pooling: str, normalize: bool, max_length: int,
                 max_batch_size: int, batch_wait_ms: float, name: str, max_queued_items: int | None = None) -> None:
        self.max_length = max_length
        self._path = path
        self._vocabulary: list[str] | None = None
        self.pipeline = embedding_pipeline(path, spec, pooling=pooling, normalize=normalize, max_length=max_length)
        self.tokenizer = SharedTokenizer(path)  # request threads share it
        # A first call compiles the shapes and tells the dimension; a broken IR fails here, at load time.
        self.dimension = len(self.pipeline.embed_documents(["warm up"])[0])
        self._batch_tokenizer = ov_genai.Tokenizer(str(path))  # used by the batch thread only
        self.batcher: MicroBatcher[str, tuple[np.ndarray, int]] = MicroBatcher(
            self._embed_batch, max_batch_size=max_batch_size, wait_s=batch_wait_ms / 1000, name=name,
            max_queued_items=max_queued_items)

    def _embed_batch(self, texts: list[str]) -> list[tuple[np.ndarray, int]]:
        # Token counts come from one tokenizer call per batch, on the batch thread: counting per
        # request on the event loop cost more than a millisecond of CPU each under load.
        counts = self._batch_tokenizer.encode(texts).attention_mask.data.sum(axis=1)
        vectors = self.pipeline.embed_documents(texts)
        return [(np.asarray(v, dtype=np.float32), int(n)) for v, n in zip(vectors, counts)]

    async def embed(self, texts: list[str]) -> tuple[list[np.ndarray], list[int]]:
        """Vectors and untruncated token counts, in input order. Raises batching.ItemFailed (index into
        `texts`) when a text fails in the pipeline, Overloaded when the model's queue is full."""
        results = await self.batcher.submit(texts)
        return [vector for vector, _ in results], [count for _, count in results]

    def vocabulary(self) -> list[str] | None:
        """Token id -> piece, for token-id inputs: from the detokenizer if the model has one, else from
        the tokenizer.json / vocab.txt that optimum exports beside the IR. None when neither exists."""
        if self._vocabulary is None:
            self._vocabulary = _read_vocabulary(self.tokenizer, self._path)
        return self._vocabulary or None

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).input_ids.data[0].tolist()

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def close(self) -> None:
        self.batcher.close()
        self.pipeline = None
        self.tokenizer = None
        self._batch_tokenizer = None


class EmbeddingModel:
    task = "embeddings"

    def __init__(self, path: Path, spec: PipelineSpec, metadata: ModelMetadata, model_id: str = "") -> None:
        self.metadata = metadata
        self.settings: EmbeddingSettings = spec.settings
        self.embedder = TextEmbedder(
            path, spec, pooling=self.settings.pooling, normalize=self.settings.normalize,
            max_length=self.settings.max_length, max_batch_size=self.settings.max_batch_size,
            batch_wait_ms=self.settings.batch_wait_ms, name=f"{model_id}:{path.name}",
            max_queued_items=self.settings.max_queued_items,
        )

    def close(self) -> None:
        self.embedder.close()
