"""embeddings: a TextEmbeddingPipeline per loaded version."""

from __future__ import annotations

from pathlib import Path

import openvino_genai as ov_genai

from server.pipelines.base import ModelMetadata
from server.repository.config import ModelConfig

POOLING = {
    "cls": ov_genai.TextEmbeddingPipeline.PoolingType.CLS,
    "mean": ov_genai.TextEmbeddingPipeline.PoolingType.MEAN,
    "last_token": ov_genai.TextEmbeddingPipeline.PoolingType.LAST_TOKEN,
}


def embedding_pipeline(path: Path, config: ModelConfig, *, pooling: str, normalize: bool, max_length: int) -> ov_genai.TextEmbeddingPipeline:
    pipeline_config = ov_genai.TextEmbeddingPipeline.Config()
    pipeline_config.pooling_type = POOLING[pooling]
    pipeline_config.normalize = normalize
    pipeline_config.max_length = max_length
    return ov_genai.TextEmbeddingPipeline(str(path), config.device, pipeline_config, **config.plugin_config)


class EmbeddingModel:
    task = "embeddings"

    def __init__(self, path: Path, config: ModelConfig, metadata: ModelMetadata, model_id: str = "") -> None:
        self.metadata = metadata
        self.settings = config.task_settings
        self.pipeline = embedding_pipeline(
            path,
            config,
            pooling=self.settings["pooling"],
            normalize=self.settings["normalize"],
            max_length=self.settings["max_length"],
        )

    def close(self) -> None:
        self.pipeline = None
