"""Protocols the model manager depends on, so unit tests can run it on fakes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.pipelines.settings import PipelineSpec


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as KServe v2 metadata describes it (-1 = dynamic dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelMetadata:
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


class LoadedModel(Protocol):
    """A compiled pipeline for one model version."""

    task: str
    metadata: ModelMetadata
    # Optional: None while healthy; a reason once the pipeline can no longer serve (a generation
    # worker process died). The manager then retires this instance and loads the version again.
    broken: str | None

    def close(self) -> None:
        """Release the pipeline and its memory. Called off the event loop, once nothing uses it."""


class ModelLoadError(Exception):
    """A version could not be loaded. `message` is safe to show to users; `detail` goes to the log."""

    def __init__(self, message: str, *, code: str = "UNKNOWN", detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail


class ModelLoader(Protocol):
    def load(self, version_path: Path, spec: PipelineSpec, model_id: str) -> LoadedModel:
        """Blocking: build the pipeline `spec` describes for one version folder of model `model_id`.
        Raises ModelLoadError."""

    def infer_task(self, version_path: Path) -> str | None:
        """Blocking: the task a version folder's files imply, or None when ambiguous."""

    def abandon_loads(self) -> int:
        """At shutdown: stop the loads that can be stopped, refuse new ones; returns how many stopped."""
