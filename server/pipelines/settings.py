"""What an engine is told about its model: the typed settings of one pipeline.

The config layer (the model repository's config.py) builds a PipelineSpec from a validated config.json
with the schema's defaults applied; the engines read it and nothing else, so this package never imports
the repository. Each settings class has one field per key of its task's section of
schemas/model_config.schema.json, with the same names and defaults (tests/unit/test_pipeline_settings.py
checks that they agree). A field that is None has no schema default and was left unset: the loader
fills it from the server's flags (loader.with_server_defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Union


class _Section:
    """The from/to-mapping half shared by the task settings classes (all frozen dataclasses)."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]):
        """An instance from a config.json task section; keys it omits keep the class defaults."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}")
        return cls(**values)

    def to_mapping(self) -> dict[str, Any]:
        """The section as config.json spells it: every field that is set (None ones are left out)."""
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}


@dataclass(frozen=True)
class GenerationSettings(_Section):
    """config.json `text_generation`: the continuous-batching scheduler and request limits."""

    max_num_seqs: int = 16
    max_num_batched_tokens: int = 256
    cache_size: float = 0
    enable_prefix_caching: bool = True
    dynamic_split_fuse: bool = True
    max_tokens_default: int = 512
    max_tokens_limit: int = 4096
    max_context_length: int | None = None  # None: the HF config's max_position_embeddings, else 2048
    max_queued_requests: int | None = None  # None: the server's --max-queued-requests
    stall_timeout_s: float | None = None  # None: the server's --stall-timeout
    prompt_lookup: bool = False  # prompt-lookup decoding (worker pipeline built with prompt_lookup=True)
    num_assistant_tokens: int = 5
    max_ngram_size: int = 3
    schema_probe: bool = True
    schema_compile_timeout_s: float = 10
    tool_parser: str | None = None  # None: detected from the chat template (server/services/tools.py)
    reasoning_parser: str | None = None  # "think": <think>...</think> becomes reasoning_content


@dataclass(frozen=True)
class EmbeddingSettings(_Section):
    """config.json `embeddings`."""

    pooling: str = "cls"  # cls | mean | last_token
    normalize: bool = True
    max_length: int = 512
    truncate: bool = False
    token_ids: str = "refuse"  # refuse | model: whether token-id input is read as this model's vocabulary
    max_batch_size: int = 32
    batch_wait_ms: float = 0
    max_queued_items: int | None = None  # None: the server's --max-queued-items


@dataclass(frozen=True)
class RerankSettings(_Section):
    """config.json `rerank`."""

    scoring: str = "cross_encoder"  # cross_encoder | embeddings_cosine
    pooling: str = "mean"  # cls | mean | last_token, when scoring is embeddings_cosine
    max_length: int = 512
    max_documents: int = 1000
    max_query_tokens: int = 256
    max_batch_size: int = 32
    batch_wait_ms: float = 0
    max_queued_items: int | None = None  # None: the server's --max-queued-items


TaskSettings = Union[GenerationSettings, EmbeddingSettings, RerankSettings]

SETTINGS_TYPES: dict[str, type[TaskSettings]] = {
    "text_generation": GenerationSettings,
    "embeddings": EmbeddingSettings,
    "rerank": RerankSettings,
}


@dataclass(frozen=True, kw_only=True)
class PipelineSpec:
    """Everything a loader needs to build one version's pipeline, besides its folder."""

    task: str
    device: str = "CPU"
    plugin_config: Mapping[str, str | int | float | bool] = field(default_factory=dict)  # OpenVINO properties
    settings: TaskSettings

    def __post_init__(self) -> None:
        expected = SETTINGS_TYPES.get(self.task)
        if expected is None:
            raise ValueError(f"unknown task {self.task!r}")
        if not isinstance(self.settings, expected):
            raise TypeError(f"task {self.task} takes {expected.__name__}, not {type(self.settings).__name__}")

    @classmethod
    def from_mapping(cls, task: str, section: Mapping[str, Any], *, device: str = "CPU",
                     plugin_config: Mapping[str, Any] | None = None) -> "PipelineSpec":
        """A spec from config.json values: `section` is the task's section (keys it omits keep the class defaults)."""
        return cls(task=task, settings=SETTINGS_TYPES[task].from_mapping(section), device=device,
                   plugin_config=dict(plugin_config or {}))
