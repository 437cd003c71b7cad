import asyncio
import threading

import pytest

from server.pipelines.batching import MicroBatcher


async def test_concurrent_requests_share_batches_and_keep_order() -> None:
    batches: list[list[int]] = []
    threads: set[str] = set()

    def run(items: list[int]) -> list[int]:
        batches.append(items)
        threads.add(threading.current_thread().name)
        return [i * 10 for i in items]

    batcher = MicroBatcher(run, max_batch_size=8, wait_s=0.01, name="t")
    results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(6)))
    assert results == [[i * 10, (i + 100) * 10] for i in range(6)]
    assert sum(len(b) for b in batches) == 12
    assert max(len(b) for b in batches) == 8  # requests were merged up to the limit
    assert len(threads) == 1  # one worker thread: the pipeline is never called concurrently
    batcher.close()


async def test_a_failing_batch_fails_its_requests_only() -> None:
    def run(items: list[str]) -> list[str]:
        if "bad" in items:
            raise ValueError("boom")
        return items

    batcher = MicroBatcher(run, max_batch_size=1, wait_s=0, name="t")
    bad, good = await asyncio.gather(batcher.submit(["bad"]), batcher.submit(["ok"]), return_exceptions=True)
    assert isinstance(bad, ValueError)
    assert good == ["ok"]
    assert await batcher.submit(["again"]) == ["again"]
    batcher.close()
