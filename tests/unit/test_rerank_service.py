"""services/rerank on a fake model: preparation runs off the event loop, and a text the model fails on
is a 400 naming the document (or the query), never a 500."""

import threading

import pytest

from server.errors import BadRequest
from server.pipelines.batching import ItemFailed
from server.pipelines.rerank import QUERY_INDEX
from server.pipelines.settings import RerankSettings
from server.services import rerank

SETTINGS = RerankSettings(max_documents=100, max_query_tokens=64, max_length=512)


class FakeModel:
    settings = SETTINGS

    def __init__(self, *, reject: str | None = None, fail_at: int | None = None) -> None:
        self.reject, self.fail_at = reject, fail_at
        self.threads: set[str] = set()
        self.scored: list[str] = []

    def token_counts(self, texts: list[str]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        if self.reject is not None and self.reject in texts:
            raise TypeError("incompatible function arguments")
        return [len(text.split()) for text in texts]

    def document_budget(self, query_tokens: int) -> int:
        return 4

    async def score(self, query: str, texts: list[str]) -> list[float]:
        self.scored = texts
        if self.fail_at is not None:
            raise ItemFailed(self.fail_at, TypeError("boom"))
        return [1.0 / (1 + i) for i in range(len(texts))]


async def test_counting_and_chunking_run_off_the_event_loop() -> None:
    model = FakeModel()
    body = {"query": "q", "documents": ["one two three four five six seven eight nine", "short"]}
    ranked = await rerank.rerank(model, body)
    assert model.scored == ["one two three four", "five six seven eight", "nine", "short"]
    assert sorted(index for index, _ in ranked) == [0, 1]
    assert model.threads and threading.current_thread().name not in model.threads


async def test_empty_documents_get_scores() -> None:
    ranked = await rerank.rerank(FakeModel(), {"query": "0", "documents": ["", ""], "max_tokens_per_doc": 1})
    assert len(ranked) == 2


@pytest.mark.parametrize(("fail_at", "document"), [(0, 0), (2, 0), (3, 1), (4, 2)])
async def test_a_failing_chunk_names_its_document(fail_at: int, document: int) -> None:
    body = {"query": "q", "documents": ["a b c d e f g h i", "short", {"text": "x"}]}  # chunks 0-2, 3, 4
    with pytest.raises(BadRequest) as caught:
        await rerank.rerank(FakeModel(fail_at=fail_at), body)
    assert caught.value.param == "documents" and caught.value.message.startswith(f"Document {document} ")


async def test_a_failing_query_names_the_query() -> None:
    with pytest.raises(BadRequest) as caught:
        await rerank.rerank(FakeModel(fail_at=QUERY_INDEX), {"query": "q", "documents": ["a"]})
    assert caught.value.param == "query"


@pytest.mark.parametrize(("reject", "param", "start"), [("bad", "documents", "Document 1 "), ("q", "query", "The query")])
async def test_a_text_the_tokenizer_rejects_is_named(reject: str, param: str, start: str) -> None:
    with pytest.raises(BadRequest) as caught:
        await rerank.rerank(FakeModel(reject=reject), {"query": "q", "documents": ["fine", "bad", "ok"]})
    assert caught.value.param == param and caught.value.message.startswith(start)


async def test_too_many_documents_is_still_a_400() -> None:
    with pytest.raises(BadRequest) as caught:
        await rerank.rerank(FakeModel(), {"query": "q", "documents": ["d"] * 101})
    assert caught.value.param == "documents"
