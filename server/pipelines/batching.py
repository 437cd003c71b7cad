"""Micro-batching: items from concurrent requests are gathered into one blocking pipeline call.

Embedding and rerank pipelines are not thread-safe and run several times faster on a batch than
item by item, so each loaded model owns one worker thread and one MicroBatcher. While a batch runs,
new items queue up and form the next batch; a short wait lets a lone request pick up company.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Generic, Sequence, TypeVar

from server import metrics

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], Sequence[R]], *, max_batch_size: int, wait_s: float,
                 name: str) -> None:
        self._run_batch = run_batch
        self._batch_size = metrics.BATCH_SIZE.labels(name)
        self._max = max_batch_size
        self._wait = wait_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batch-{name}")
        self._pending: list[tuple[T, asyncio.Future]] = []
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def call(self, fn: Callable[..., R], *args) -> "asyncio.Future[R]":
        """Run other blocking work (e.g. a warm-up) on the same worker thread, never beside a batch."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def submit(self, items: Sequence[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._loop, self._wake = loop, asyncio.Event()
            self._worker = loop.create_task(self._work())
        futures = [loop.create_future() for _ in items]
        self._pending.extend(zip(items, futures))
        self._wake.set()
        return list(await asyncio.gather(*futures))

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if len(self._pending) < self._max and self._wait > 0:
                    await asyncio.sleep(self._wait)
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                batch = [(item, future) for item, future in batch if not future.done()]  # caller gone
                if not batch:
                    continue
                self._batch_size.observe(len(batch))
                try:
                    results = await loop.run_in_executor(self._executor, self._run_batch, [i for i, _ in batch])
                except Exception as exc:  # fail this batch's requests, keep serving
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)

    def close(self) -> None:
        """Called off the event loop when the model is released (no requests left)."""
        if self._worker is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._worker.cancel)
        self._executor.shutdown(wait=True)
