"""Cohere rerank: chunk long documents, score (query, chunk) pairs, a document scores its best chunk."""

from __future__ import annotations

import asyncio
import uuid

from server.errors import BadRequest
from server.pipelines.batching import ItemFailed
from server.pipelines.rerank import QUERY_INDEX, RerankModel

DEFAULT_MAX_CHUNKS = 64


def document_texts(documents: list) -> list[str]:
    return [d if isinstance(d, str) else d["text"] for d in documents]


def chunk(model: RerankModel, text: str, budget: int, max_chunks: int) -> list[str]:
    """Split an over-long text into pieces of at most `budget` tokens, at word boundaries (a single
    over-long word is cut by characters)."""
    words = text.split()
    if not words:
        return [text]
    counts = model.token_counts(words)
    chunks: list[str] = []
    current: list[str] = []
    used = 0
    for word, count in zip(words, counts):
        if count > budget:  # pathological word: cut it into proportional character slices
            step = max(1, len(word) * budget // count)
            pieces = [word[i : i + step] for i in range(0, len(word), step)]
        else:
            pieces = [word]
        for piece in pieces:
            size = min(count, budget) if piece is word else budget
            if used + size > budget and current:
                chunks.append(" ".join(current))
                current, used = [], 0
            current.append(piece)
            used += size
    if current:
        chunks.append(" ".join(current))
    return chunks[:max_chunks]


def _token_counts(model: RerankModel, query: str, documents: list[str]) -> list[int]:
    """Tokens of the query and of each document, in one tokenizer call; a text the tokenizer rejects
    is a 400 naming it (found text by text, only on failure)."""
    try:
        return model.token_counts([query, *documents])
    except Exception:
        pass
    for index, text in enumerate([query, *documents]):
        try:
            model.token_counts([text])
        except Exception:
            if index == 0:
                raise BadRequest("The query could not be processed by the model", param="query") from None
            raise BadRequest(f"Document {index - 1} could not be processed by the model", param="documents") from None
    return model.token_counts([query, *documents])  # failed only together: let it surface as a 500


def prepare(model: RerankModel, body: dict) -> list[list[str]]:
    """The chunks of each document, checked against the model's limits. Blocking (tokenizer calls on
    every document and word): run it off the event loop."""
    settings = model.settings
    documents = document_texts(body["documents"])
    if len(documents) > settings.max_documents:
        raise BadRequest(f"{len(documents)} documents sent; this model accepts at most {settings.max_documents}",
                         param="documents")
    query_tokens, *document_tokens = _token_counts(model, body["query"], documents)
    if query_tokens > settings.max_query_tokens:
        raise BadRequest(f"The query has {query_tokens} tokens; this model accepts at most "
                         f"{settings.max_query_tokens}", param="query")
    budget = model.document_budget(query_tokens)
    if body.get("max_tokens_per_doc"):
        budget = min(budget, body["max_tokens_per_doc"])
    if budget < 1:
        raise BadRequest("The query leaves no room for documents within the model's max_length", param="query")
    max_chunks = body.get("max_chunks_per_doc") or DEFAULT_MAX_CHUNKS
    return [[text] if tokens <= budget else chunk(model, text, budget, max_chunks)
            for text, tokens in zip(documents, document_tokens, strict=True)]


def _failed_input(failed: ItemFailed, chunks: list[list[str]]) -> BadRequest:
    if failed.index == QUERY_INDEX:
        return BadRequest("The query could not be processed by the model", param="query")
    position = 0
    for document, pieces in enumerate(chunks):
        position += len(pieces)
        if failed.index < position:
            return BadRequest(f"Document {document} could not be processed by the model", param="documents")
    return BadRequest("A document could not be processed by the model", param="documents")


async def rerank(model: RerankModel, body: dict) -> list[tuple[int, float]]:
    chunks = await asyncio.get_running_loop().run_in_executor(getattr(model, "preparation", None), prepare, model, body)
    flat = [piece for pieces in chunks for piece in pieces]
    try:
        scores = await model.score(body["query"], flat)
    except ItemFailed as failed:
        raise _failed_input(failed, chunks) from None
    best, position = [], 0
    for pieces in chunks:
        best.append(max(scores[position : position + len(pieces)]))
        position += len(pieces)
    ranked = sorted(enumerate(best), key=lambda item: item[1], reverse=True)
    return ranked[: body.get("top_n") or len(ranked)]


def response(body: dict, ranked: list[tuple[int, float]], api_version: str) -> dict:
    documents = document_texts(body["documents"])
    results = []
    for index, score in ranked:
        result = {"index": index, "relevance_score": score}
        if body.get("return_documents"):
            result["document"] = {"text": documents[index]}
        results.append(result)
    return {"id": str(uuid.uuid4()), "results": results,
            "meta": {"api_version": {"version": api_version}, "billed_units": {"search_units": 1}}}
