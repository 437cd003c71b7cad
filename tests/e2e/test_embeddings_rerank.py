"""Embeddings (OpenAI), embed and rerank (Cohere) against the real server with the official clients."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import cohere
import numpy as np
import openai
import openvino_genai as ov_genai
import pytest
import requests
from openai import AsyncOpenAI, OpenAI

from tests.e2e.harness import ServerProcess, copy_model, copy_model_with_config

COSINE_RERANK = {"task": "rerank", "rerank": {"scoring": "embeddings_cosine", "pooling": "mean"}}


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("embed-repository")
    copy_model(models / "minilm", root / "minilm")
    copy_model(models / "tiny-embed", root / "tiny-embed")
    copy_model(models / "tiny-rerank", root / "tiny-rerank")
    copy_model(models / "tiny-chat", root / "tiny-chat")
    for name, config in (
        ("minilm-rerank", COSINE_RERANK),
        ("minilm-short", {"task": "embeddings", "embeddings": {"pooling": "mean", "max_length": 16, "truncate": True}}),
        ("minilm-ids", {"task": "embeddings", "embeddings": {"pooling": "mean", "token_ids": "model"}}),
        ("tiny-rerank-small", {"task": "rerank", "rerank": {"max_documents": 3, "max_query_tokens": 8}}),
    ):
        copy_model_with_config(models / ("tiny-rerank" if name.startswith("tiny") else "minilm"), root / name, config)
    process = ServerProcess(root, root.parent / "server.log").start()
    yield process
    process.stop()
    assert "Traceback" not in (root.parent / "server.log").read_text()


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def co(server: ServerProcess) -> cohere.Client:
    return cohere.Client(base_url=server.url("/v3"), api_key="unused")


@pytest.fixture(scope="module")
def co2(server: ServerProcess) -> cohere.ClientV2:
    return cohere.ClientV2(base_url=server.url("/v3"), api_key="unused")


def cosine(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# ------------------------------------------------------------------ OpenAI embeddings


def test_default_base64_and_float_agree(oai: OpenAI, models: Path) -> None:
    default = oai.embeddings.create(model="minilm", input=["hello world", "foo"])  # the client asks for base64
    floats = oai.embeddings.create(model="minilm", input=["hello world", "foo"], encoding_format="float")
    assert default.object == "list" and default.model == "minilm"
    assert [d.index for d in default.data] == [0, 1]
    assert len(default.data[0].embedding) == 384
    assert np.allclose(default.data[0].embedding, floats.data[0].embedding, atol=1e-6)
    assert abs(np.linalg.norm(floats.data[0].embedding) - 1) < 1e-4  # normalize: true
    tokenizer = ov_genai.Tokenizer(str(models / "minilm" / "1"))
    expected = int(tokenizer.encode(["hello world", "foo"]).attention_mask.data.sum())
    assert default.usage.prompt_tokens == default.usage.total_tokens == expected


def test_explicit_base64_is_little_endian_float32(server: ServerProcess, oai: OpenAI) -> None:
    body = {"model": "minilm", "input": "hello world", "encoding_format": "base64"}
    encoded = requests.post(server.url("/v3/embeddings"), json=body, timeout=30).json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    floats = oai.embeddings.create(model="minilm", input="hello world", encoding_format="float").data[0].embedding
    assert np.allclose(decoded, floats, atol=1e-6)


def test_all_input_forms(oai: OpenAI) -> None:
    """Token ids only where config.json opts in (embeddings.token_ids "model")."""
    text = oai.embeddings.create(model="minilm-ids", input="hello world", encoding_format="float").data[0].embedding
    ids = oai.embeddings.create(model="minilm-ids", input=[7592, 2088], encoding_format="float").data[0].embedding
    many = oai.embeddings.create(model="minilm-ids", input=[[7592, 2088], [7592]], encoding_format="float").data
    assert np.allclose(text, ids, atol=1e-5)  # 7592 2088 = "hello world" in MiniLM's vocabulary
    assert np.allclose(many[0].embedding, text, atol=1e-5) and len(many) == 2


def test_token_ids_are_refused_by_default(oai: OpenAI) -> None:
    """LangChain's OpenAIEmbeddings sends ids of OpenAI's tokenizer: read as MiniLM's, they embedded to
    vectors with cosine 0.17 to the right ones. Refused, with the fix in the message."""
    for value in ([7592, 2088], [[7592, 2088], [7592]]):
        with pytest.raises(openai.BadRequestError) as refused:
            oai.embeddings.create(model="minilm", input=value)
        error = refused.value.body
        assert error["param"] == "input" and error["code"] == "token_ids_not_accepted"
        assert "check_embedding_ctx_length=False" in error["message"] and "embeddings.token_ids" in error["message"]


def test_data_stays_in_input_order(oai: OpenAI) -> None:
    sentences = [f"sentence number {i} about {'cats' if i % 2 else 'the stock market'}" for i in range(40)]
    batch = oai.embeddings.create(model="minilm", input=sentences, encoding_format="float").data
    for i in (0, 17, 39):
        single = oai.embeddings.create(model="minilm", input=sentences[i], encoding_format="float").data[0]
        assert cosine(batch[i].embedding, single.embedding) > 0.9999


def test_dimensions_truncate_and_renormalize(oai: OpenAI) -> None:
    full = oai.embeddings.create(model="minilm", input="hello", encoding_format="float").data[0].embedding
    short = oai.embeddings.create(model="minilm", input="hello", dimensions=64, encoding_format="float").data[0].embedding
    assert len(short) == 64
    assert abs(np.linalg.norm(short) - 1) < 1e-4
    assert cosine(short, full[:64]) > 0.9999


def test_real_minilm_ranks_similar_above_dissimilar(oai: OpenAI) -> None:
    data = oai.embeddings.create(model="minilm", input=[
        "A man is eating food.", "A man is eating a piece of bread.", "The sky is blue today."]).data
    assert cosine(data[0].embedding, data[1].embedding) > cosine(data[0].embedding, data[2].embedding) + 0.3


def test_over_long_input(server: ServerProcess, oai: OpenAI) -> None:
    long_text = "word " * 600
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model="minilm", input=["short", long_text])
    assert info.value.body["param"] == "input" and "Input 1 has 602 tokens" in info.value.body["message"]
    truncated = oai.embeddings.create(model="minilm-short", input=long_text)  # config: truncate, max_length 16
    assert truncated.usage.prompt_tokens == 16


async def test_concurrent_requests_are_micro_batched(server: ServerProcess) -> None:
    client = AsyncOpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)
    results = await asyncio.gather(*(client.embeddings.create(model="minilm", input=f"request {i}") for i in range(32)))
    assert all(len(r.data[0].embedding) == 384 for r in results)
    await client.close()
    buckets = {}
    for line in server.get("/metrics").text.splitlines():
        if line.startswith('ovms_batch_size_bucket{le="1.0",model="minilm:1"}'):
            buckets["1"] = float(line.rsplit(" ", 1)[1])
        if line.startswith('ovms_batch_size_count{model="minilm:1"}'):
            buckets["count"] = float(line.rsplit(" ", 1)[1])
    assert buckets["count"] > buckets["1"], "no pipeline call ever served more than one input"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "minilm"}, None),
        ({"model": "minilm", "input": ""}, "input"),
        ({"model": "minilm", "input": []}, "input"),
        ({"model": "minilm", "input": [1, "a"]}, "input[1]"),
        ({"model": "minilm", "input": [[999999]]}, "input"),
        ({"model": "minilm", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "minilm", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "minilm", "input": "x", "dimensions": 1000}, "dimensions"),
        ({"model": "tiny-rerank", "input": "x"}, "model"),
        ({"model": "tiny-chat", "input": "x"}, "model"),
    ],
)
def test_bad_embedding_requests(server: ServerProcess, body: dict, param: str | None) -> None:
    response = requests.post(server.url("/v3/embeddings"), json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_unknown_embedding_model(oai: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="nope", input="x")


# ------------------------------------------------------------------ Cohere embed


def test_cohere_v1_embed(co: cohere.Client, oai: OpenAI) -> None:
    response = co.embed(texts=["hello world", "foo"], model="minilm", input_type="search_query")
    assert len(response.embeddings) == 2 and len(response.embeddings[0]) == 384
    reference = oai.embeddings.create(model="minilm", input="hello world", encoding_format="float").data[0].embedding
    assert np.allclose(response.embeddings[0], reference, atol=1e-5)
    by_type = co.embed(texts=["hello"], model="minilm", input_type="search_document", embedding_types=["float"])
    assert len(by_type.embeddings.float_[0]) == 384
    many = co.embed(texts=[f"text {i}" for i in range(150)], model="minilm", input_type="classification")
    assert len(many.embeddings) == 150  # the SDK splits into batches of 96 sent concurrently


def test_cohere_v2_embed(co2: cohere.ClientV2) -> None:
    response = co2.embed(texts=["hello"], model="minilm", input_type="search_query", embedding_types=["float"])
    assert len(response.embeddings.float_[0]) == 384
    assert response.texts == ["hello"]


def test_cohere_embed_errors(server: ServerProcess, co: cohere.Client) -> None:
    with pytest.raises(cohere.errors.BadRequestError) as info:
        co.embed(texts=["x"], model="minilm", input_type="search_query", embedding_types=["int8"])
    assert "float" in info.value.body["message"]
    with pytest.raises(cohere.errors.NotFoundError):
        co.embed(texts=["x"], model="nope", input_type="search_query")
    response = requests.post(server.url("/v3/v1/embed"), json={"model": "tiny-rerank", "texts": ["x"]}, timeout=30)
    assert response.status_code == 400 and "serves task rerank" in response.json()["message"]
    response = requests.post(server.url("/v3/v2/embed"), json={"model": "minilm", "texts": []}, timeout=30)
    assert response.status_code == 400 and set(response.json()) == {"message"}
    response = requests.post(server.url("/v3/v1/embed"), json={"texts": ["x"]}, timeout=30)
    assert response.status_code == 400 and "'model' is required" in response.json()["message"]


# ------------------------------------------------------------------ Cohere rerank


def test_rerank_v1_client_order_top_n_documents(co: cohere.Client) -> None:
    documents = ["alpha beta", "gamma", {"text": "delta epsilon"}, "zeta"]
    full = co.rerank(query="alpha", documents=documents, model="tiny-rerank")
    scores = [r.relevance_score for r in full.results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r.index for r in full.results) == [0, 1, 2, 3]
    assert all(0 <= s <= 1 for s in scores)
    top = co.rerank(query="alpha", documents=documents, model="tiny-rerank", top_n=2, return_documents=True)
    assert [r.index for r in top.results] == [r.index for r in full.results[:2]]
    texts = ["alpha beta", "gamma", "delta epsilon", "zeta"]
    assert [r.document.text for r in top.results] == [texts[r.index] for r in top.results]
    assert full.meta.billed_units.search_units == 1


def test_rerank_v2_client_and_raw_route(server: ServerProcess, co2: cohere.ClientV2) -> None:
    response = co2.rerank(query="alpha", documents=["alpha beta", "gamma"], model="tiny-rerank", top_n=1)
    assert len(response.results) == 1
    raw = requests.post(server.url("/v3/rerank"), json={
        "model": "tiny-rerank", "query": "Hello", "documents": ["Welcome", "Farewell"]}, timeout=30).json()
    assert [r["index"] for r in raw["results"]] != [] and set(raw) == {"id", "results", "meta"}
    assert raw["results"][0]["relevance_score"] >= raw["results"][1]["relevance_score"]


def test_long_documents_score_their_best_chunk(co: cohere.Client, models: Path) -> None:
    pieces = ["alpha beta", "gamma delta", "epsilon zeta"]
    tokenizer = ov_genai.Tokenizer(str(models / "tiny-rerank" / "1"))
    sizes = [int(tokenizer.encode(p.split(), add_special_tokens=False).attention_mask.data.sum()) for p in pieces]
    budget = max(sizes)  # each piece fits one chunk, two adjacent pieces never do
    assert all(a + b > budget for a, b in zip(sizes, sizes[1:]))
    chunk_scores = {r.index: r.relevance_score
                    for r in co.rerank(query="beta", documents=pieces, model="tiny-rerank").results}
    options = {"additional_body_parameters": {"max_tokens_per_doc": budget}}
    whole = co.rerank(query="beta", documents=[" ".join(pieces)], model="tiny-rerank", max_chunks_per_doc=10,
                      request_options=options).results[0]
    assert whole.relevance_score == pytest.approx(max(chunk_scores.values()), abs=1e-5)
    first_only = co.rerank(query="beta", documents=[" ".join(pieces)], model="tiny-rerank", max_chunks_per_doc=1,
                           request_options=options).results[0]
    assert first_only.relevance_score == pytest.approx(chunk_scores[0], abs=1e-5)


def test_embedding_backed_rerank_puts_the_relevant_document_first(co: cohere.Client) -> None:
    response = co.rerank(model="minilm-rerank", query="What is the capital of France?", documents=[
        "Bananas are rich in potassium.", "Paris is the capital and largest city of France.",
        "The stock market fell sharply today."], return_documents=True)
    assert response.results[0].index == 1
    assert response.results[0].relevance_score > 0.75 > response.results[-1].relevance_score


@pytest.mark.parametrize(
    ("route", "body", "status", "needle"),
    [
        ("/v3/v1/rerank", {"model": "tiny-rerank", "query": "q", "documents": []}, 400, "documents"),
        ("/v3/v1/rerank", {"model": "tiny-rerank", "documents": ["a"]}, 400, "query"),
        ("/v3/v2/rerank", {"model": "tiny-rerank", "query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n"),
        ("/v3/v2/rerank", {"model": "tiny-rerank-small", "query": "q", "documents": ["a"] * 4}, 400, "at most 3"),
        ("/v3/rerank", {"model": "tiny-rerank-small", "query": "word " * 20, "documents": ["a"]}, 400, "query has"),
        ("/v3/rerank", {"model": "minilm", "query": "q", "documents": ["a"]}, 400, "serves task embeddings"),
        ("/v3/rerank", {"model": "nope", "query": "q", "documents": ["a"]}, 404, "does not exist"),
        ("/v3/rerank", {"query": "q", "documents": ["a"]}, 400, "'model' is required"),
    ],
)
def test_bad_rerank_requests(server: ServerProcess, route: str, body: dict, status: int, needle: str) -> None:
    response = requests.post(server.url(route), json=body, timeout=30)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"message"}
    assert needle in response.json()["message"]


def test_cohere_sdk_maps_errors(co: cohere.Client) -> None:
    with pytest.raises(cohere.errors.BadRequestError):
        co.rerank(query="q", documents=[], model="tiny-rerank")
    with pytest.raises(cohere.errors.NotFoundError):
        co.rerank(query="q", documents=["a"], model="nope")
