"""rerank: a TextRerankPipeline (cross-encoder) or an embedding model scored by cosine."""

from __future__ import annotations

from pathlib import Path

import openvino_genai as ov_genai

from server.pipelines.base import ModelMetadata
from server.pipelines.embeddings import embedding_pipeline
from server.repository.config import ModelConfig


class RerankModel:
    task = "rerank"

    def __init__(self, path: Path, config: ModelConfig, metadata: ModelMetadata, model_id: str = "") -> None:
        self.metadata = metadata
        self.settings = config.task_settings
        self.scoring = self.settings["scoring"]
        if self.scoring == "embeddings_cosine":
            self.pipeline = embedding_pipeline(
                path, config, pooling=self.settings["pooling"], normalize=True, max_length=self.settings["max_length"]
            )
        else:
            rerank_config = ov_genai.TextRerankPipeline.Config()
            rerank_config.max_length = self.settings["max_length"]
            rerank_config.top_n = self.settings["max_documents"]  # the default of 3 would drop documents
            self.pipeline = ov_genai.TextRerankPipeline(str(path), config.device, rerank_config, **config.plugin_config)

    def close(self) -> None:
        self.pipeline = None
