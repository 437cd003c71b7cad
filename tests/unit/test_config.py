import json

import pytest

from server.repository import config
from server.repository.policy import select_versions


def problems(document) -> list[str]:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    with pytest.raises(config.ConfigError) as info:
        config.parse(raw)
    return [str(p) for p in info.value.problems]


def test_minimal_config_gets_schema_defaults() -> None:
    parsed = config.parse(b'{"task": "embeddings"}')
    assert parsed.task == "embeddings"
    assert parsed.version_policy == {"latest": {"num_versions": 1}}
    assert parsed.pipeline.device == "CPU"
    assert parsed.pipeline.settings.pooling == "cls"
    assert parsed.pipeline.settings.normalize is True
    assert parsed.pipeline.settings.max_queued_items is None  # no schema default: the server's flag fills it


def test_errors_name_the_json_pointer() -> None:
    assert problems({"task": "chat"}) == ["/task: 'chat' is not one of ['text_generation', 'embeddings', 'rerank']"]
    assert problems({"task": "rerank", "model_version_policy": {"latest": {}}}) == [
        "/model_version_policy/latest: 'num_versions' is a required property"
    ]
    assert problems({"task": "rerank", "model_version_policy": {"specific": {"versions": [0]}}}) == [
        "/model_version_policy/specific/versions/0: 0 is less than the minimum of 1"
    ]
    assert problems({"task": "embeddings", "embeddings": {"pooling": "max"}}) == [
        "/embeddings/pooling: 'max' is not one of ['cls', 'mean', 'last_token']"
    ]


def test_unknown_fields_and_foreign_sections_are_rejected() -> None:
    assert problems({"task": "rerank", "tsak": 1}) == ["/: Additional properties are not allowed ('tsak' was unexpected)"]
    assert problems({"task": "embeddings", "text_generation": {}}) == [
        "/task: a 'text_generation' section needs task 'text_generation'"
    ]


def test_broken_json_is_reported_with_position() -> None:
    (message,) = problems(b'{"task": "embe')
    assert message.startswith("/: config.json is not valid JSON")
    assert "line 1" in message
    assert problems(b"\xff\xfe") == ["/: config.json is not UTF-8 text"]
    assert problems(b"[]") == ["/: [] is not of type 'object'"]


def test_policy_only_changes_keep_the_pipeline_hash() -> None:
    a = config.parse(b'{"task": "embeddings"}')
    b = config.parse(b'{"task": "embeddings", "model_version_policy": {"all": {}}}')
    c = config.parse(b'{"task": "embeddings", "embeddings": {"pooling": "mean"}}')
    assert a.pipeline_hash == b.pipeline_hash
    assert a.pipeline_hash != c.pipeline_hash


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"latest": {"num_versions": 1}}, [3]),
        ({"latest": {"num_versions": 2}}, [3, 2]),
        ({"latest": {"num_versions": 9}}, [3, 2, 1]),
        ({"all": {}}, [3, 2, 1]),
        ({"specific": {"versions": [1, 5]}}, [1]),
    ],
)
def test_version_policy(policy: dict, expected: list[int]) -> None:
    assert select_versions(policy, [1, 3, 2]) == expected


def test_prompt_lookup_options_are_validated() -> None:
    parsed = config.parse(b'{"task": "text_generation", "text_generation": {"prompt_lookup": true}}')
    assert parsed.pipeline.settings.prompt_lookup is True
    assert (parsed.pipeline.settings.num_assistant_tokens, parsed.pipeline.settings.max_ngram_size) == (5, 3)
    assert problems({"task": "text_generation", "text_generation": {"prompt_lookup": "yes"}}) == [
        "/text_generation/prompt_lookup: 'yes' is not of type 'boolean'"
    ]
    assert problems({"task": "text_generation", "text_generation": {"num_assistant_tokens": 0}}) == [
        "/text_generation/num_assistant_tokens: 0 is less than the minimum of 1"
    ]
    assert problems({"task": "text_generation", "text_generation": {"max_ngram_size": 100}}) == [
        "/text_generation/max_ngram_size: 100 is greater than the maximum of 32"
    ]


def test_nesting_near_the_recursion_limit_is_a_config_error_at_every_depth() -> None:
    """Deep enough and json.loads fails; a little less deep and it reads, but checking the document
    recursed past the limit: every depth in between must be a ConfigError, never a RecursionError."""
    for depth in range(900, 1010):
        raw = ('{"task": "embeddings", "plugin_config": {"a": ' + "[" * depth + "]" * depth + "}}").encode()
        with pytest.raises(config.ConfigError):
            config.parse(raw)
