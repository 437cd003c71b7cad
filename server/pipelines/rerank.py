"""rerank: a cross-encoder on TextRerankPipeline, or an embedding model scored by cosine similarity.

Both score (query, text) pairs through a micro-batcher, so concurrent requests share pipeline calls.
TextRerankPipeline takes one query per call: a batch is grouped by query, one call per distinct query.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import openvino_genai as ov_genai

from server.pipelines.base import ModelMetadata
from server.pipelines.batching import MicroBatcher
from server.pipelines.embeddings import TextEmbedder
from server.repository.config import ModelConfig

Pair = tuple[str, str]


class CrossEncoderScorer:
    # [CLS] query [SEP] text [SEP]: the query shares the model's window with each document
    special_tokens = 3
    query_in_window = True

    def __init__(self, path: Path, config: ModelConfig, settings: dict, name: str) -> None:
        rerank_config = ov_genai.TextRerankPipeline.Config()
        rerank_config.max_length = settings["max_length"]
        rerank_config.top_n = max(settings["max_batch_size"], 1) * 64  # the default (3) would drop pairs
        self.pipeline = ov_genai.TextRerankPipeline(str(path), config.device, rerank_config, **config.plugin_config)
        self.tokenizer = ov_genai.Tokenizer(str(path))
        self.pipeline.rerank("warm up", ["warm up"])  # compiles, and fails now for a broken IR
        self.batcher: MicroBatcher[Pair, float] = MicroBatcher(
            self._score_batch, max_batch_size=settings["max_batch_size"], wait_s=settings["batch_wait_ms"] / 1000,
            name=name)

    def _score_batch(self, pairs: list[Pair]) -> list[float]:
        by_query: dict[str, list[int]] = defaultdict(list)
        for position, (query, _) in enumerate(pairs):
            by_query[query].append(position)
        scores = [0.0] * len(pairs)
        for query, positions in by_query.items():
            texts = [pairs[p][1] for p in positions]
            for index, score in self.pipeline.rerank(query, texts):
                scores[positions[index]] = float(score)
        return scores

    async def score(self, query: str, texts: list[str]) -> list[float]:
        return await self.batcher.submit([(query, text) for text in texts])

    def close(self) -> None:
        self.batcher.close()
        self.pipeline = None


class CosineScorer:
    # [CLS] text [SEP]: query and documents are embedded separately
    special_tokens = 2
    query_in_window = False

    def __init__(self, path: Path, config: ModelConfig, settings: dict, name: str) -> None:
        self.embedder = TextEmbedder(
            path, config, pooling=settings["pooling"], normalize=True, max_length=settings["max_length"],
            max_batch_size=settings["max_batch_size"], batch_wait_ms=settings["batch_wait_ms"], name=name)
        self.tokenizer = self.embedder.tokenizer

    async def score(self, query: str, texts: list[str]) -> list[float]:
        vectors = await self.embedder.embed([query, *texts])
        query_vector, documents = vectors[0], np.stack(vectors[1:])
        cosine = documents @ query_vector  # unit vectors
        return [float(s) for s in np.clip((cosine + 1.0) / 2.0, 0.0, 1.0)]

    def close(self) -> None:
        self.embedder.close()


class RerankModel:
    task = "rerank"

    def __init__(self, path: Path, config: ModelConfig, metadata: ModelMetadata, model_id: str = "") -> None:
        self.metadata = metadata
        self.settings = config.task_settings
        self.max_length = self.settings["max_length"]
        scorer_class = CosineScorer if self.settings["scoring"] == "embeddings_cosine" else CrossEncoderScorer
        self.scorer = scorer_class(path, config, self.settings, f"{model_id}:{path.name}")

    def document_budget(self, query_tokens: int) -> int:
        """Most tokens of a document chunk that fit the model's window next to this query."""
        budget = self.max_length - self.scorer.special_tokens
        return budget - query_tokens if self.scorer.query_in_window else budget

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text without special tokens (BERT tokenizers ship no detokenizer, so chunking
        works on words counted here rather than on decoded token windows)."""
        encoded = self.scorer.tokenizer.encode(texts, add_special_tokens=False)
        return [int(n) for n in encoded.attention_mask.data.sum(axis=1)]

    async def score(self, query: str, texts: list[str]) -> list[float]:
        return await self.scorer.score(query, texts)

    def close(self) -> None:
        self.scorer.close()
