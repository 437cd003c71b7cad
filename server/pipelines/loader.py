"""The real ModelLoader: version folder + config -> a compiled OpenVINO GenAI pipeline."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from server.pipelines import ir
from server.pipelines.base import LoadedModel, ModelLoadError
from server.pipelines.embeddings import EmbeddingModel
from server.pipelines.generation import GenerationModel
from server.pipelines.rerank import RerankModel
from server.repository.config import ModelConfig

# One pipeline is built at a time: two cross-encoder builds running side by side (compile_model, then
# the tokenizers' first encode) were seen to deadlock the whole process, and on a 2-core machine
# parallel compiles buy little anyway.
_BUILD_LOCK = threading.Lock()

_MODEL_CLASSES = {
    "text_generation": GenerationModel,
    "embeddings": EmbeddingModel,
    "rerank": RerankModel,
}


def _files(path: Path) -> frozenset[str]:
    return frozenset(p.name for p in path.iterdir()) if path.is_dir() else frozenset()


def with_server_defaults(config: ModelConfig, defaults: dict[str, dict]) -> ModelConfig:
    """Fill the task settings config.json left unset (those without a schema default) from the server's flags."""
    settings = {**defaults.get(config.task, {}), **config.task_settings}
    return dataclasses.replace(config, task_settings=settings)


class OpenVINOLoader:
    def __init__(self, model_defaults: dict[str, dict] | None = None) -> None:
        self._defaults = model_defaults or {}

    def load(self, version_path: Path, config: ModelConfig, model_id: str) -> LoadedModel:
        config = with_server_defaults(config, self._defaults)
        missing = ir.missing_files(config.task, _files(version_path))
        if missing:
            raise ModelLoadError(
                f"version folder {version_path.name}/ lacks {', '.join(missing)} needed for task {config.task}",
                code="FAILED_PRECONDITION",
            )
        try:
            with _BUILD_LOCK:
                metadata = ir.read_metadata(ir.core().read_model(version_path / ir.MODEL_XML))
                return _MODEL_CLASSES[config.task](version_path, config, metadata, model_id)
        except Exception as exc:  # OpenVINO raises RuntimeError with C++ traces: log it, show a summary
            raise ModelLoadError(
                f"version {version_path.name} failed to load: OpenVINO could not build a {config.task} pipeline "
                "from its files (corrupt, incomplete or incompatible IR); see the server log for details",
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc

    def infer_task(self, version_path: Path) -> str | None:
        try:
            return ir.infer_task(version_path)
        except Exception:  # unreadable IR: cannot infer; the load attempt will report the error
            return None
