"""OpenAI embeddings and Cohere embed on top of the micro-batched TextEmbedder."""

from __future__ import annotations

import asyncio
import base64
import uuid

import numpy as np

from server.errors import BadRequest
from server.pipelines.batching import ItemFailed
from server.pipelines.embeddings import TextEmbedder


TOKEN_IDS_REFUSED = (
    "This model does not take token ids: they would be read as this model's own tokens, and ids made by "
    "another tokenizer give meaningless vectors. Send text. LangChain's OpenAIEmbeddings sends OpenAI "
    "tokenizer ids by default: pass check_embedding_ctx_length=False. If your ids are this model's own, "
    "set embeddings.token_ids to \"model\" in its config.json"
)


async def prepare_input(embedder: TextEmbedder, value: str | list, *, token_ids: str) -> list[str]:
    """input_texts() off the event loop when it has work to do: joining thousands of token ids (and
    reading the vocabulary the first time) froze the server for seconds on the event loop.
    `token_ids`: the model's embeddings.token_ids ("refuse": ids are a 400)."""
    if isinstance(value, str) or isinstance(value[0], str):
        return input_texts(embedder, value)  # nothing to compute
    if token_ids != "model":
        raise BadRequest(TOKEN_IDS_REFUSED, param="input", code="token_ids_not_accepted")
    return await asyncio.to_thread(input_texts, embedder, value)


def input_texts(embedder: TextEmbedder, value: str | list) -> list[str]:
    """OpenAI `input` in any of its forms -> texts. Token ids (of this model's vocabulary) are joined
    back into text by the rules of the vocabulary's family (pipelines/vocab_join.py)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value[0], str):
        return list(value)
    batches = [value] if isinstance(value[0], int) else value
    vocabulary = embedder.vocabulary()
    if vocabulary is None:
        raise BadRequest("This model cannot take token ids (it has no vocabulary file, or one whose pieces are "
                         "not joined back into text exactly: WordPiece, byte-level BPE, SentencePiece): send text",
                         param="input")
    texts = []
    for index, ids in enumerate(batches):
        if max(ids) >= len(vocabulary.pieces):
            raise BadRequest(f"Input {index} has token id {max(ids)}, beyond this model's vocabulary of "
                             f"{len(vocabulary.pieces)}", param="input")
        texts.append(vocabulary.join(ids))
    return texts


async def embed(embedder: TextEmbedder, texts: list[str], *, truncate: bool, param: str) -> tuple[list[np.ndarray], int]:
    """Vectors in input order, and the number of tokens embedded. Over-long inputs are a 400 unless
    truncation is on (they are counted in the same batch call that embeds them). An input the model
    fails on is a 400 naming it, under `param`; the other requests of its batch are not affected."""
    try:
        vectors, counts = await embedder.embed(texts)
    except ItemFailed as failed:
        raise BadRequest(f"Input {failed.index} could not be processed by the model", param=param) from None
    limit = embedder.max_length
    if not truncate:
        for index, count in enumerate(counts):
            if count > limit:
                raise BadRequest(
                    f"Input {index} has {count} tokens; this model accepts at most {limit} "
                    "(shorten it, or enable truncation: embeddings.truncate in the model's config.json)",
                    param=param, code="input_too_long")
    return vectors, sum(min(count, limit) for count in counts)


def resize(vectors: list[np.ndarray], dimensions: int | None, dimension: int, *, normalize: bool,
           param: str) -> list[np.ndarray]:
    """Matryoshka-style: keep the first `dimensions` values, then re-normalize."""
    if dimensions is None or dimensions == dimension:
        return vectors
    if dimensions > dimension:
        raise BadRequest(f"'{param}' is {dimensions}; this model's embeddings have {dimension} dimensions",
                         param=param)
    cut = [v[:dimensions] for v in vectors]
    if normalize:
        cut = [v / max(float(np.linalg.norm(v)), 1e-12) for v in cut]
    return cut


def _floats(vector: np.ndarray) -> np.ndarray:
    """A vector as the API's list of numbers: written by api.vectors_json, which serializes float32 arrays."""
    return np.ascontiguousarray(vector, dtype=np.float32)


def _encode(vector: np.ndarray, encoding_format: str) -> np.ndarray | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return _floats(vector)


def openai_response(model_id: str, vectors: list[np.ndarray], tokens: int, encoding_format: str) -> dict:
    """The response body, for api.vectors_json (float vectors are numpy arrays)."""
    return {
        "object": "list",
        "model": model_id,
        "data": [{"object": "embedding", "index": i, "embedding": _encode(v, encoding_format)}
                 for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _meta(version: str, tokens: int) -> dict:
    return {"api_version": {"version": version}, "billed_units": {"input_tokens": tokens}}


def cohere_v1_response(texts: list[str], vectors: list[np.ndarray], tokens: int, by_type: bool) -> dict:
    body = {"id": str(uuid.uuid4()), "texts": texts, "meta": _meta("1", tokens)}
    if by_type:
        return {"response_type": "embeddings_by_type", "embeddings": {"float": [_floats(v) for v in vectors]}, **body}
    return {"response_type": "embeddings_floats", "embeddings": [_floats(v) for v in vectors], **body}


def cohere_v2_response(texts: list[str], vectors: list[np.ndarray], tokens: int) -> dict:
    return {"id": str(uuid.uuid4()), "embeddings": {"float": [_floats(v) for v in vectors]}, "texts": texts,
            "meta": _meta("2", tokens)}
