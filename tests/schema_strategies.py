"""Hypothesis strategies for request bodies, drawn from the request schemas in schemas/: a small
schema-to-strategy translation (hypothesis-jsonschema took minutes per example on the chat schema),
half of the bodies then broken in one field with arbitrary JSON. Shared by the e2e fuzz and the
validator agreement test."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from hypothesis import strategies as st

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
MODELS = ["tiny-chat", "minilm", "tiny-rerank"]  # the ids bodies name: the models the e2e fuzz serves

texts = st.text(st.characters(blacklist_categories=()), max_size=20)  # lone surrogates included
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def fuzz_schema(name: str) -> dict:
    """The request schema, with model ids drawn from the served ones and generation kept short."""
    schema = copy.deepcopy(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))
    schema.pop("x-unsupported", None)
    properties = schema["properties"]
    properties["model"] = {"enum": MODELS}
    for field in ("max_tokens", "max_completion_tokens"):
        if field in properties:
            properties[field] = {"type": ["integer", "null"], "minimum": 1, "maximum": 16}
    if "n" in properties:
        properties["n"] = {"type": ["integer", "null"], "minimum": 1, "maximum": 2}
    return schema


def _bounded(spec: dict, low: str, high: str, default_low: float, default_high: float) -> tuple:
    lo = spec.get(low, spec.get("exclusiveMinimum", default_low))
    hi = spec.get(high, spec.get("exclusiveMaximum", default_high))
    return max(lo, default_low), min(hi, default_high)


def from_schema(spec: dict | bool) -> st.SearchStrategy:
    """Mostly-valid values for the keywords our request schemas use."""
    if not isinstance(spec, dict):
        return json_values
    if "enum" in spec:
        return st.sampled_from(spec["enum"])
    if "const" in spec:
        return st.just(spec["const"])
    if "oneOf" in spec or "anyOf" in spec:
        return st.one_of([from_schema(branch) for branch in spec.get("oneOf", spec.get("anyOf"))])
    kind = spec.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**spec, "type": k}) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        lo, hi = _bounded(spec, "minimum", "maximum", -5, 600)
        return st.integers(int(lo), int(hi)) | st.integers(int(lo), int(hi)).map(float)  # whole floats too
    if kind == "number":
        lo, hi = _bounded(spec, "minimum", "maximum", -5.0, 5.0)
        return st.floats(lo, hi)
    if kind == "string":
        return st.text(st.characters(blacklist_categories=()), min_size=spec.get("minLength", 0), max_size=30)
    if kind == "array":
        low = spec.get("minItems", 0)
        return st.lists(from_schema(spec.get("items", {})), min_size=low, max_size=max(low, min(spec.get("maxItems", 4), 4)))
    if kind == "object" and "properties" in spec:
        required = set(spec.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in spec["properties"].items() if k in required},
            optional={k: from_schema(v) for k, v in spec["properties"].items() if k not in required})
    return json_values


def bodies(name: str) -> st.SearchStrategy[dict]:
    valid = from_schema(fuzz_schema(name))

    @st.composite
    def broken(draw) -> dict:
        body = draw(valid)
        field = draw(st.sampled_from(sorted(fuzz_schema(name)["properties"])))
        body[field] = draw(json_values)
        return body

    return st.one_of(valid, broken())
