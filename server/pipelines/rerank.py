"""rerank: a cross-encoder (sequence classification, one logit), or an embedding model scored by
cosine similarity. Both score (query, text) pairs through a micro-batcher, so concurrent requests
share inferences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino_genai as ov_genai

from server.pipelines import ir, shapes
from server.pipelines.base import ModelLoadError, ModelMetadata
from server.pipelines.batching import ItemFailed, MicroBatcher
from server.pipelines.embeddings import TextEmbedder
from server.pipelines.lanes import InferRequests
from server.pipelines.pair_template import PairTemplate, bert_layout, read_pair_template
from server.pipelines.settings import PipelineSpec, RerankSettings
from server.pipelines.tokenizers import SharedTokenizer, preparation_thread

Pair = tuple[str, str]
QUERY_INDEX = -1  # ItemFailed.index from score() when the query, not a text, failed


def _encode(tokenizer: ov_genai.Tokenizer, texts: list[str]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(index, ids, mask) for each text that has tokens, without special tokens.

    Empty texts are not sent to the tokenizer: for a batch whose texts all have no tokens it answers a
    single 0-wide row (encode(['', '']) -> shape (1, 0)), which lost rows and left requests hanging."""
    present = [i for i, text in enumerate(texts) if text]
    if not present:
        return []
    encoded = tokenizer.encode([texts[i] for i in present], add_special_tokens=False)
    ids, mask = encoded.input_ids.data, encoded.attention_mask.data  # views keep their tensors alive
    if ids.shape[1] == 0:  # only token-less texts (e.g. zero-width spaces): maybe collapsed to one row
        return []
    if ids.shape[0] != len(present):
        raise ValueError(f"the tokenizer returned {ids.shape[0]} rows for {len(present)} texts")
    return list(zip(present, ids, mask))


def _rows(tokenizer: ov_genai.Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens: one row per text, empty for an empty text."""
    rows: list[list[int]] = [[] for _ in texts]
    for i, row, keep in _encode(tokenizer, texts):
        rows[i] = row[keep.astype(bool)].tolist()
    return rows


def _token_counts(tokenizer: ov_genai.Tokenizer, texts: list[str]) -> list[int]:
    """len() of each of _rows(), without building the rows."""
    counts = [0] * len(texts)
    for i, _, keep in _encode(tokenizer, texts):
        counts[i] = int(keep.sum())
    return counts


class CrossEncoderScorer:
    """Scores (query, text) pairs with the sequence-classification IR, run directly with OpenVINO: pairs
    from different requests share one inference, which TextRerankPipeline (one query per call) cannot
    do. (TextRerankPipeline 2026.4 also corrupted the heap on batches of very short texts here.)

    Pairs are framed by the tokenizer's own pair template (pair_template.py: [CLS] q [SEP] t [SEP] for
    BERT, <s> q </s></s> t </s> for RoBERTa/XLM-R); score = sigmoid(the one logit)."""

    query_in_window = True

    def __init__(self, path: Path, spec: PipelineSpec, name: str) -> None:
        settings: RerankSettings = spec.settings
        self.max_length = settings.max_length
        model = ir.read_served_model(path / ir.MODEL_XML)
        self._input_names = {name for port in model.inputs for name in port.get_names()}
        if "input_ids" not in self._input_names:
            raise ValueError("a cross-encoder needs an input_ids input")
        self._compiled = ir.core().compile_model(model, spec.device, dict(spec.plugin_config))
        self._requests = InferRequests(self._compiled)  # one per lane of the batcher
        self.tokenizer = SharedTokenizer(path)  # request preparation (token counts), off the event loop
        self._batch_tokenizer = SharedTokenizer(path)  # the batcher's lanes, one at a time
        self._template = read_pair_template(path) or self._single_text_layout()
        self.special_tokens = self._template.special_tokens
        pad = self.tokenizer.get_pad_token_id()
        self._pad = pad if pad >= 0 else 0
        logits = self._compiled.output(0).get_partial_shape()
        width = logits[-1] if logits.rank.is_static and logits.rank.get_length() >= 2 else None
        if width is not None and width.is_static and width.get_length() != 1:
            raise ModelLoadError(f"version {path.name}: a rerank model outputs one logit per pair; this one outputs "
                                 f"{width.get_length()} (a classifier with several labels cannot rank)",
                                 code="FAILED_PRECONDITION")
        self._score_batch([("warm up", "warm up")])  # compiles shapes, and fails now for a broken IR
        self.batcher: MicroBatcher[Pair, float] = MicroBatcher(
            self._score_batch, max_batch_size=settings.max_batch_size, wait_s=settings.batch_wait_ms / 1000,
            name=name, max_queued_items=settings.max_queued_items, lanes=self._requests.lanes)

    def _score_batch(self, pairs: list[Pair]) -> list[float]:
        queries = _rows(self._batch_tokenizer, [q for q, _ in pairs])
        texts = _rows(self._batch_tokenizer, [t for _, t in pairs])
        rows, types = [], []
        for query, text in zip(queries, texts):
            row, kinds = self._template.frame(query, text, self.max_length)
            rows.append(row)
            types.append(kinds)
        width = max(len(row) for row in rows)
        input_ids = np.full((len(rows), width), self._pad, dtype=np.int64)
        attention = np.zeros((len(rows), width), dtype=np.int64)
        token_types = np.zeros((len(rows), width), dtype=np.int64)
        for i, (row, kinds) in enumerate(zip(rows, types)):
            input_ids[i, : len(row)] = row
            attention[i, : len(row)] = 1
            token_types[i, : len(kinds)] = kinds
        inputs = {"input_ids": input_ids, "attention_mask": attention, "token_type_ids": token_types}
        inputs = {k: v for k, v in inputs.items() if k in self._input_names}
        padded = shapes.pad_batch(inputs, pad_values={"input_ids": self._pad}, limit=self.max_length)
        with self._requests.borrow() as request:  # infer() copies its outputs: the request is free after
            result = request.infer(padded)
        logits = np.asarray(result[self._compiled.output(0)], dtype=np.float64)[: len(rows)].reshape(len(rows), -1)[:, 0]
        return [float(x) for x in 1.0 / (1.0 + np.exp(-logits))]

    async def score(self, query: str, texts: list[str]) -> list[float]:
        return await self.batcher.submit([(query, text) for text in texts])

    def _single_text_layout(self) -> PairTemplate:
        """BERT's layout from how the tokenizer frames one text (no tokenizer.json to read)."""
        framed = self.tokenizer.encode("a").input_ids.data[0].tolist()
        bare = self.tokenizer.encode("a", add_special_tokens=False).input_ids.data[0].tolist()
        at = framed.index(bare[0])
        return bert_layout(framed[:at], framed[at + len(bare):])

    def close(self) -> None:
        self.batcher.close()
        self._requests = None
        self._compiled = None


class CosineScorer:
    # [CLS] text [SEP]: query and documents are embedded separately
    special_tokens = 2
    query_in_window = False

    def __init__(self, path: Path, spec: PipelineSpec, name: str) -> None:
        settings: RerankSettings = spec.settings
        self.embedder = TextEmbedder(
            path, spec, pooling=settings.pooling, normalize=True, max_length=settings.max_length,
            max_batch_size=settings.max_batch_size, batch_wait_ms=settings.batch_wait_ms, name=name,
            max_queued_items=settings.max_queued_items)
        self.tokenizer = self.embedder.tokenizer

    async def score(self, query: str, texts: list[str]) -> list[float]:
        try:
            vectors, _ = await self.embedder.embed([query, *texts])
        except ItemFailed as failed:  # the query went first: shift indices back to `texts`
            raise ItemFailed(failed.index - 1 if failed.index else QUERY_INDEX, failed.cause) from None
        query_vector, documents = vectors[0], np.stack(vectors[1:])
        cosine = documents @ query_vector  # unit vectors
        return [float(s) for s in np.clip((cosine + 1.0) / 2.0, 0.0, 1.0)]

    def close(self) -> None:
        self.embedder.close()


class RerankModel:
    task = "rerank"

    def __init__(self, path: Path, spec: PipelineSpec, metadata: ModelMetadata, model_id: str = "") -> None:
        self.metadata = metadata
        self.settings: RerankSettings = spec.settings
        self.max_length = self.settings.max_length
        scorer_class = CosineScorer if self.settings.scoring == "embeddings_cosine" else CrossEncoderScorer
        self.scorer = scorer_class(path, spec, f"{model_id}:{path.name}")
        self.preparation = preparation_thread(f"{model_id}:{path.name}")  # token counts and chunking

    def document_budget(self, query_tokens: int) -> int:
        """Most tokens of a document chunk that fit the model's window next to this query."""
        budget = self.max_length - self.scorer.special_tokens
        return budget - query_tokens if self.scorer.query_in_window else budget

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens of each text without special tokens (BERT tokenizers ship no detokenizer, so chunking
        works on words counted here rather than on decoded token windows). Blocking: call it off the
        event loop."""
        return _token_counts(self.scorer.tokenizer, texts)

    async def score(self, query: str, texts: list[str]) -> list[float]:
        """Scores in text order. Raises batching.ItemFailed with the index of a failing text (QUERY_INDEX
        for the query), Overloaded when the model's queue is full."""
        return await self.scorer.score(query, texts)

    def close(self) -> None:
        self.preparation.shutdown(wait=True)
        self.scorer.close()
