"""Native memory of the server process: what OpenVINO and glibc keep after a model is gone.

Measured with tools/bench/soak.py and MiniLM served in-process: after releasing a model that had
served, the process kept about 20 MB more than one that had only loaded it. That was oneDNN's
process-wide primitive cache (kernels per shape, default 1024 entries), which outlives every model:
with its capacity 0 the process went back to the unserved figure, at no measured cost in throughput,
because each compiled model keeps its own runtime cache of the same primitives. Generation workers
are processes of their own that exit with their model, so they keep oneDNN's default.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any

PRIMITIVE_CACHE_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
_ONEDNN_DEFAULT_CAPACITY = "1024"
_chosen_by_operator: bool | None = None  # None: limit_primitive_cache() has not run


def limit_primitive_cache() -> None:
    """Turn oneDNN's primitive cache off in this process unless the operator set its capacity. oneDNN
    reads the variable when it first builds a primitive, so call this before any model compiles."""
    global _chosen_by_operator
    if _chosen_by_operator is None:
        _chosen_by_operator = PRIMITIVE_CACHE_VARIABLE in os.environ
    if not _chosen_by_operator:
        os.environ[PRIMITIVE_CACHE_VARIABLE] = "0"


def worker_environment(environment: dict[str, str]) -> dict[str, str]:
    """`environment` for a generation worker: oneDNN's own cache default again, unless the operator
    chose a capacity."""
    if _chosen_by_operator is False:
        return {**environment, PRIMITIVE_CACHE_VARIABLE: _ONEDNN_DEFAULT_CAPACITY}
    return environment


def return_freed_memory() -> None:
    """glibc keeps freed heap pages in its arenas; after a model is released, hand them back to the OS
    so the process shrinks."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None
