"""text_generation: a ContinuousBatchingPipeline per loaded version."""

from __future__ import annotations

from pathlib import Path

import openvino_genai as ov_genai

from server.pipelines.base import ModelMetadata
from server.repository.config import ModelConfig


def scheduler_config(settings: dict) -> ov_genai.SchedulerConfig:
    scheduler = ov_genai.SchedulerConfig()
    scheduler.max_num_seqs = settings["max_num_seqs"]
    scheduler.max_num_batched_tokens = settings["max_num_batched_tokens"]
    scheduler.cache_size = int(settings["cache_size"])
    scheduler.enable_prefix_caching = settings["enable_prefix_caching"]
    scheduler.dynamic_split_fuse = settings["dynamic_split_fuse"]
    return scheduler


class GenerationModel:
    task = "text_generation"

    def __init__(self, path: Path, config: ModelConfig, metadata: ModelMetadata) -> None:
        self.metadata = metadata
        self.settings = config.task_settings
        self.pipeline = ov_genai.ContinuousBatchingPipeline(
            str(path), scheduler_config(self.settings), config.device, dict(config.plugin_config)
        )
        self.tokenizer = self.pipeline.get_tokenizer()

    def close(self) -> None:
        self.pipeline = None
        self.tokenizer = None
