"""The real ModelLoader: version folder + PipelineSpec -> a compiled OpenVINO GenAI pipeline."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

from server.pipelines import ir
from server.pipelines.base import LoadedModel, ModelLoadError
from server.pipelines.embeddings import EmbeddingModel
from server.pipelines.generation import GenerationModel, stop_starting_workers
from server.pipelines.rerank import RerankModel
from server.pipelines.settings import PipelineSpec

# One in-process build at a time: two cross-encoder builds running side by side (compile_model, then
# the tokenizers' first encode) were seen to deadlock the whole process. Generation pipelines build in
# their worker process, so the lock covers only their in-process tokenizer, never the wait for the worker:
# a slow LLM build must not hold up every other load.
_BUILD_LOCK = threading.Lock()

_MODEL_CLASSES = {
    "text_generation": GenerationModel,
    "embeddings": EmbeddingModel,
    "rerank": RerankModel,
}


def _files(path: Path) -> frozenset[str]:
    return frozenset(p.name for p in path.iterdir()) if path.is_dir() else frozenset()


def with_server_defaults(spec: PipelineSpec, defaults: dict[str, dict]) -> PipelineSpec:
    """Fill the task settings config.json left unset (None: those without a schema default) from the server's flags."""
    unset = {name: value for name, value in defaults.get(spec.task, {}).items() if getattr(spec.settings, name) is None}
    return dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, **unset))


def links_outside(folder: Path, root: Path) -> list[str]:
    """Files or folders under `folder` (the folder itself included, as ".") that resolve outside `root`
    through a symlink: OpenVINO opens files by name, so the scanner leaving such a file out of the
    fingerprint is not enough to keep it unread. Hidden names are skipped: nothing reads them."""
    root = Path(os.path.realpath(root))
    if not Path(os.path.realpath(folder)).is_relative_to(root):
        return ["."]
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):  # followlinks=False: linked folders are checked, not entered
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in dirnames + [f for f in filenames if not f.startswith(".")]:
            path = Path(dirpath) / name
            if path.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(root):
                found.append(path.relative_to(folder).as_posix())
    return sorted(found)


class OpenVINOLoader:
    def __init__(self, model_defaults: dict[str, dict] | None = None, *, root: Path | None = None) -> None:
        self._defaults = model_defaults or {}
        self._root = root  # the repository: no file of a model may resolve outside it
        self._abandoned = False  # set at shutdown (abandon_loads)

    def load(self, version_path: Path, spec: PipelineSpec, model_id: str) -> LoadedModel:
        if self._abandoned:  # queued behind other loads when the shutdown began
            raise ModelLoadError(f"version {version_path.name} was not loaded: the server is shutting down")
        spec = with_server_defaults(spec, self._defaults)
        outside = links_outside(version_path, self._root) if self._root is not None else []
        if outside:
            raise ModelLoadError(
                f"version folder {version_path.name}/ holds symlinks that point outside the model repository "
                f"({', '.join(outside[:5])}); copy the files in instead", code="FAILED_PRECONDITION")
        missing = ir.missing_files(spec.task, _files(version_path))
        if missing:
            raise ModelLoadError(
                f"version folder {version_path.name}/ lacks {', '.join(missing)} needed for task {spec.task}",
                code="FAILED_PRECONDITION",
            )
        try:
            with _BUILD_LOCK:
                metadata = ir.read_metadata(ir.core().read_model(version_path / ir.MODEL_XML))
            if spec.task == "text_generation":
                return GenerationModel(version_path, spec, metadata, model_id, build_lock=_BUILD_LOCK)
            with _BUILD_LOCK:
                return _MODEL_CLASSES[spec.task](version_path, spec, metadata, model_id)
        except ModelLoadError:  # a pipeline's own, clear refusal
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError with C++ traces: log it, show a summary
            raise ModelLoadError(
                f"version {version_path.name} failed to load: OpenVINO could not build a {spec.task} pipeline "
                "from its files (corrupt, incomplete or incompatible IR); see the server log for details",
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc

    def abandon_loads(self) -> int:
        """At shutdown: stop the generation workers still loading (a compile can take minutes, and the
        manager discards what such a load returns), and refuse loads not started yet. In-process
        compiles under way (embeddings, rerank: seconds) run on."""
        self._abandoned = True
        return stop_starting_workers()

    def infer_task(self, version_path: Path) -> str | None:
        if self._root is not None and links_outside(version_path, self._root):
            return None  # never read through links out of the repository, not even to infer a task
        try:
            return ir.infer_task(version_path)
        except Exception:  # unreadable IR: cannot infer; the load attempt will report the error
            return None
