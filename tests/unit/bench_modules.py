"""Load a tool of tools/bench/ as a module for a unit test, without leaving its imports behind."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench"
# The tools import these siblings by bare name; popped after, they cannot shadow another test's imports.
SIBLINGS = ("common", "models", "modelbuild", "generation")


def bench_module(file_name: str) -> Iterator[ModuleType]:
    """Yield tools/bench/<file_name> as a module (the path it puts on sys.path is put back), then forget it."""
    saved = list(sys.path)
    name = f"{Path(file_name).stem}_under_test"
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / file_name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    yield module
    for loaded in (name, *SIBLINGS):
        sys.modules.pop(loaded, None)
