"""Infer requests of a compiled model, lent to the micro-batcher's lanes (one batch per lane at a time).

With OpenVINO's default LATENCY hint a CPU model has one stream using every core: one lane, one batch
at a time. PERFORMANCE_HINT THROUGHPUT (or NUM_STREAMS) gives several streams of fewer threads each; a
stream runs one request at a time and queues the others. There the batcher gets two lanes per stream,
so that a stream's next batch waits inside it while the previous batch's answers go out. Measured on
MiniLM, 2 cores, 2 streams, 32 closed-loop clients of one sentence (2026-12-04): one lane (what the
server did before lanes) 536-560 requests/s, one lane per stream 849-885, two per stream 938-1,002.
With one stream, a second lane was slower (887-894 against 925-939 requests/s): the CPU is already
full and the smaller batches cost more per item. README, Embeddings, has the whole table.
"""

from __future__ import annotations

import queue
from contextlib import contextmanager
from typing import Iterator

import openvino as ov

REQUESTS_PER_STREAM = 2  # with several streams: one running, one queued behind it
MAX_LANES = 16  # a many-core THROUGHPUT hint may ask for more; each request holds its own buffers


def lane_count(compiled: ov.CompiledModel) -> int:
    """1 for one stream (the LATENCY hint), else REQUESTS_PER_STREAM per stream, at most MAX_LANES (so
    beyond 8 streams some streams get one lane)."""
    streams = 1
    for name in ("NUM_STREAMS", "OPTIMAL_NUMBER_OF_INFER_REQUESTS"):  # the CPU reports both, equal
        try:
            streams = int(compiled.get_property(name))
            break
        except (RuntimeError, TypeError, ValueError):  # a device that does not report this one
            continue
    return 1 if streams <= 1 else min(REQUESTS_PER_STREAM * streams, MAX_LANES)


class InferRequests:
    """A pool of `lanes` infer requests; `borrow()` blocks while all are in use. Thread-safe."""

    def __init__(self, compiled: ov.CompiledModel) -> None:
        self.lanes = lane_count(compiled)
        self._free: queue.SimpleQueue[ov.InferRequest] = queue.SimpleQueue()
        for _ in range(self.lanes):
            self._free.put(compiled.create_infer_request())

    @contextmanager
    def borrow(self) -> Iterator[ov.InferRequest]:
        request = self._free.get()
        try:
            yield request
        finally:
            self._free.put(request)
