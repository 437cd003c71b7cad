"""A fake ModelLoader: version folders hold small text files instead of OpenVINO IR.

- `weights.txt` must exist; its text "corrupt" makes the load fail;
- `delay.txt` holds seconds the load takes (to test overtaking and concurrency);
- `task.txt` is what infer_task reports when there is no config.json.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

from server.pipelines.base import ModelLoadError, ModelMetadata, TensorSpec
from server.pipelines.settings import PipelineSpec


class FakeModel:
    def __init__(self, path: Path, spec: PipelineSpec, weights: str) -> None:
        self.path = path
        self.task = spec.task
        self.spec = spec
        self.weights = weights
        self.metadata = ModelMetadata(inputs=(TensorSpec("input_ids", "INT64", (-1, -1)),),
                                      outputs=(TensorSpec("logits", "FP32", (-1, -1, 8)),))
        self.closed = False
        self.broken: str | None = None  # set by fail(), or directly to play a crash not yet reported
        self._on_broken = None

    def watch(self, on_broken) -> None:
        """As GenerationEngine: the manager's callback for a pipeline that breaks on its own."""
        self._on_broken = on_broken

    def fail(self, reason: str) -> None:
        """Play a crashed worker that reports itself, as the real engine does."""
        self.broken = reason
        if self._on_broken is not None:
            self._on_broken()

    def close(self) -> None:
        self.closed = True


GATE_WAIT_S = 20.0  # a failure bound only: tests open their gates


class Gate:
    """Holds every load of one model (after it read its weights) until opened; `started` is set when a
    load reaches the gate, so tests signal load start and end through events instead of sleeping."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()
        self.entered = 0

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, GATE_WAIT_S), "the load never started"

    def open(self) -> None:
        self.opened.set()


class FakeLoader:
    def __init__(self) -> None:
        self.loaded: list[FakeModel] = []
        self.load_calls = 0
        self.gates: dict[str, Gate] = {}
        self._lock = threading.Lock()

    def hold(self, model_id: str) -> Gate:
        """From now on, loads of `model_id` wait at a gate until the test opens it."""
        self.gates[model_id] = gate = Gate()
        return gate

    def load(self, version_path: Path, spec: PipelineSpec, model_id: str) -> FakeModel:
        with self._lock:
            self.load_calls += 1
        weights_file = version_path / "weights.txt"
        if not weights_file.exists():
            raise ModelLoadError(f"version folder {version_path.name}/ lacks weights.txt", code="FAILED_PRECONDITION")
        weights = weights_file.read_text()  # read before the delay: the files may change while "compiling"
        gate = self.gates.get(model_id)
        if gate is not None:
            gate.entered += 1
            gate.started.set()
            assert gate.opened.wait(GATE_WAIT_S), "the test never opened the gate"
        delay = version_path / "delay.txt"
        if delay.exists():
            time.sleep(float(delay.read_text()))
        if weights == "corrupt":
            raise ModelLoadError(f"version {version_path.name} failed to load", detail="corrupt weights")
        model = FakeModel(version_path, spec, weights)
        with self._lock:
            self.loaded.append(model)
        return model

    def abandon_loads(self) -> int:
        return 0  # a fake load cannot be stopped; the tests open their gates

    def infer_task(self, version_path: Path) -> str | None:
        task = version_path / "task.txt"
        return task.read_text() if task.exists() else None

    def live(self) -> list[FakeModel]:
        return [m for m in self.loaded if not m.closed]


def write_model(root: Path, model_id: str, versions: dict[int, str] | tuple[int, ...] = (1,),
                config: dict | None = None, delay: float = 0.0) -> Path:
    """Create a fake model folder; versions maps number -> weights text (default "w<number>")."""
    path = root / model_id
    path.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    items = versions.items() if isinstance(versions, dict) else ((v, f"w{v}") for v in versions)
    for number, weights in items:
        write_version(path, number, weights, delay=delay)
    return path


def write_version(model_path: Path, number: int, weights: str | None = None, delay: float = 0.0) -> Path:
    version = model_path / str(number)
    version.mkdir(parents=True, exist_ok=True)
    (version / "weights.txt").write_text(weights if weights is not None else f"w{number}")
    if delay:
        (version / "delay.txt").write_text(str(delay))
    return version
