"""Embedding vectors in JSON: float32 arrays written by orjson, exact once read back as float32."""

from __future__ import annotations

import json

import numpy as np

from server.api.vectors_json import vectors_json
from server.services import embeddings


def test_float_vectors_round_trip_exactly_as_float32_in_their_shortest_form() -> None:
    vectors = [np.random.default_rng(seed).standard_normal(384).astype(np.float32) for seed in (1, 2)]
    response = vectors_json(embeddings.openai_response("m", vectors, 7, "float"))
    body = json.loads(response.body)
    assert response.content_type == "application/json"
    assert [item["index"] for item in body["data"]] == [0, 1] and body["usage"]["total_tokens"] == 7
    for item, vector in zip(body["data"], vectors):
        assert np.array_equal(np.asarray(item["embedding"], dtype=np.float32), vector)
    widened = json.dumps([float(x) for x in vectors[0]])  # what a float() per value wrote before
    assert len(response.body) < 0.7 * 2 * len(widened)


def test_cohere_bodies_and_sliced_vectors_serialize() -> None:
    vector = np.linspace(-1, 1, 8, dtype=np.float64)[2:6]  # not float32, a view: converted on the way
    v1 = json.loads(vectors_json(embeddings.cohere_v1_response(["a"], [vector], 1, by_type=True)).body)
    v2 = json.loads(vectors_json(embeddings.cohere_v2_response(["a"], [vector], 1)).body)
    assert v1["embeddings"]["float"] == v2["embeddings"]["float"]
    assert np.array_equal(np.asarray(v1["embeddings"]["float"][0], dtype=np.float32), vector.astype(np.float32))
