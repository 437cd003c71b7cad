"""embeddings: an embedding IR per loaded version, pooled here, fed by a micro-batcher."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.pipelines import ir, shapes
from server.pipelines.base import ModelMetadata
from server.pipelines.batching import MicroBatcher
from server.pipelines.lanes import InferRequests
from server.pipelines.settings import EmbeddingSettings, PipelineSpec
from server.pipelines.tokenizers import SharedTokenizer
from server.pipelines.vocab_join import Vocabulary, read_vocabulary

_UNREAD = object()  # TextEmbedder's vocabulary before its first read

POOLINGS = ("cls", "mean", "last_token")


class EmbeddingRunner:
    """Tokenizer, IR and pooling of an embedding model, run directly with OpenVINO (not through
    TextEmbeddingPipeline) for two reasons: inputs are padded to a bounded set of shapes (see
    shapes.py; the pipeline's raw shapes grew the process without limit), and one tokenizer call gives
    both the model's inputs and the token counts that usage reports. Thread-safe: the batcher's lanes
    share it, one infer request each; its tokenizer serves one lane at a time (see tokenizers.py)."""

    def __init__(self, path: Path, spec: PipelineSpec, *, pooling: str, normalize: bool, max_length: int) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}")
        self.pooling, self.normalize, self.max_length = pooling, normalize, max_length
        model = ir.read_served_model(path / ir.MODEL_XML)
        self._inputs = {port.get_any_name() for port in model.inputs}
        if not {"input_ids", "attention_mask"} <= self._inputs:
            raise ValueError("an embedding model needs input_ids and attention_mask inputs")
        unknown = self._inputs - {"input_ids", "attention_mask", "token_type_ids", "position_ids"}
        if unknown:
            raise ValueError(f"unsupported embedding model inputs: {', '.join(sorted(unknown))}")
        outputs = {name for port in model.outputs for name in port.get_names()}
        self._compiled = ir.core().compile_model(model, spec.device, dict(spec.plugin_config))
        self._output = self._compiled.output("last_hidden_state" if "last_hidden_state" in outputs else 0)
        self._requests = InferRequests(self._compiled)
        self.lanes = self._requests.lanes
        self._tokenizer = SharedTokenizer(path)  # the lanes', one call at a time
        pad = self._tokenizer.get_pad_token_id()
        self._pad = pad if pad >= 0 else 0

    def run(self, texts: list[str]) -> list[tuple[np.ndarray, int]]:
        """(vector, untruncated token count) per text."""
        encoded = self._tokenizer.encode(texts, max_length=self.max_length, truncation=True)
        ids, mask = encoded.input_ids.data, encoded.attention_mask.data
        counts = mask.sum(axis=1)
        if ids.shape[1] >= self.max_length:  # some text may have been cut: count it whole
            counts = self._tokenizer.encode(texts).attention_mask.data.sum(axis=1)
        inputs = {"input_ids": ids.astype(np.int64, copy=False), "attention_mask": mask.astype(np.int64, copy=False)}
        if "token_type_ids" in self._inputs:
            inputs["token_type_ids"] = np.zeros_like(inputs["input_ids"])
        if "position_ids" in self._inputs:
            inputs["position_ids"] = np.maximum(np.cumsum(inputs["attention_mask"], axis=1) - 1, 0)
        padded = shapes.pad_batch(inputs, pad_values={"input_ids": self._pad}, limit=self.max_length)
        with self._requests.borrow() as request:  # infer() copies its outputs: the request is free after
            hidden = request.infer(padded)[self._output][: len(texts)]
        vectors = self._pool(hidden, mask.astype(np.float32, copy=False))
        return [(vector, int(count)) for vector, count in zip(vectors, counts)]

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if hidden.ndim == 2:  # the IR pools itself (a sentence_embedding output)
            vectors = hidden
        else:
            hidden = hidden[:, : mask.shape[1]]  # drop the padded columns
            rows = np.arange(len(mask))
            if self.pooling == "mean":
                vectors = np.einsum("rt,rth->rh", mask, hidden) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
            elif self.pooling == "cls":  # the first real token (the tokenizer may pad on the left)
                vectors = hidden[rows, mask.argmax(axis=1)]
            else:  # last_token: the last real token
                vectors = hidden[rows, mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)]
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def close(self) -> None:
        # Everything that holds the compiled model: the output port does too.
        self._requests = self._output = self._compiled = self._tokenizer = None


def _vocab_vector(tokenizer) -> list[str] | None:
    try:
        return list(tokenizer.get_vocab_vector())
    except RuntimeError:  # no detokenizer in the IR
        return None


class TextEmbedder:
    """Embeds texts in micro-batches. `tokenizer` serves request preparation (token ids, vocabulary) on
    worker threads off the event loop; the batcher's lanes share a tokenizer of their own (the runner's)."""

    def __init__(self, path: Path, spec: PipelineSpec, *, pooling: str, normalize: bool, max_length: int,
                 max_batch_size: int, batch_wait_ms: float, name: str, max_queued_items: int | None = None) -> None:
        self.max_length = max_length
        self._path = path
        self._vocabulary: Vocabulary | None | object = _UNREAD
        self._runner = EmbeddingRunner(path, spec, pooling=pooling, normalize=normalize, max_length=max_length)
        self.tokenizer = SharedTokenizer(path)  # request threads share it
        # A first call compiles and tells the dimension; a broken IR fails here, at load time.
        self.dimension = len(self._runner.run(["warm up"])[0][0])
        self.batcher: MicroBatcher[str, tuple[np.ndarray, int]] = MicroBatcher(
            self._embed_batch, max_batch_size=max_batch_size, wait_s=batch_wait_ms / 1000, name=name,
            max_queued_items=max_queued_items, lanes=self._runner.lanes)

    def _embed_batch(self, texts: list[str]) -> list[tuple[np.ndarray, int]]:
        # Token counts come from the batch's tokenizer call, on the lane's thread: counting per request
        # on the event loop cost more than a millisecond of CPU each under load.
        return self._runner.run(texts)

    async def embed(self, texts: list[str]) -> tuple[list[np.ndarray], list[int]]:
        """Vectors and untruncated token counts, in input order. Raises batching.ItemFailed (index into
        `texts`) when a text fails in the pipeline, Overloaded when the model's queue is full."""
        results = await self.batcher.submit(texts)
        return [vector for vector, _ in results], [count for _, count in results]

    def vocabulary(self) -> Vocabulary | None:
        """Token id -> piece and how pieces join into text, for token-id inputs (see vocab_join.py).
        None when the model has no vocabulary file, or one of a family that is not joined."""
        if self._vocabulary is _UNREAD:
            self._vocabulary = read_vocabulary(self._path, lambda: _vocab_vector(self.tokenizer))
        return self._vocabulary

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).input_ids.data[0].tolist()

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def close(self) -> None:
        self.batcher.close()
        self._runner.close()
        self.tokenizer = None


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
